//! What a flow does and how long it lives: its verdict, its TCP state, its idle timeouts.

/// What a flow does with its packets. Room is left in the entry for NAT and mirror actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowVerdict {
    Forward,
    Drop,
}

/// TCP connection state, for aging. Ordered: the pair's state is the later of its two entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum TcpState {
    /// Not TCP, or no flags seen yet.
    #[default]
    None,
    /// A SYN without ACK seen.
    Syn,
    Established,
    /// A FIN seen.
    Fin,
    /// A RST seen.
    Rst,
}

impl TcpState {
    pub(super) fn from_u8(v: u8) -> TcpState {
        match v {
            1 => TcpState::Syn,
            2 => TcpState::Established,
            3 => TcpState::Fin,
            4 => TcpState::Rst,
            _ => TcpState::None,
        }
    }

    /// The state after a segment with TCP `flags` (the byte at offset 13 of the header).
    pub fn next(self, flags: u8) -> TcpState {
        const FIN: u8 = 0x01;
        const SYN: u8 = 0x02;
        const RST: u8 = 0x04;
        const ACK: u8 = 0x10;
        if flags & RST != 0 {
            TcpState::Rst
        } else if flags & FIN != 0 {
            self.max(TcpState::Fin)
        } else if flags & SYN != 0 && flags & ACK == 0 {
            self.max(TcpState::Syn)
        } else if flags & ACK != 0 && self <= TcpState::Syn {
            TcpState::Established
        } else {
            self
        }
    }
}

/// Idle timeouts, in the caller's time unit (the `now` values it passes; milliseconds in
/// `vrouterd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowTimeouts {
    pub tcp_established: u64,
    /// TCP after FIN or RST, and half-open (SYN only).
    pub tcp_closing: u64,
    pub udp: u64,
    pub icmp: u64,
    /// Any other protocol.
    pub other: u64,
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        FlowTimeouts {
            tcp_established: 7_200_000,
            tcp_closing: 10_000,
            udp: 180_000,
            icmp: 30_000,
            other: 180_000,
        }
    }
}

impl FlowTimeouts {
    pub(super) fn for_flow(&self, proto: u8, tcp: TcpState) -> u64 {
        match proto {
            6 if tcp == TcpState::Established => self.tcp_established,
            6 => self.tcp_closing,
            17 => self.udp,
            1 | 58 => self.icmp,
            _ => self.other,
        }
    }
}
