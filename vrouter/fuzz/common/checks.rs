//! What every pipeline target checks after a `process` call.

use vrouter::pipeline::TxBatches;
use vrouter::{DropReason, PacketBuf, StatsRegistry};

/// The counters one `process` call moves, read before and after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// The ingress vif's received packets and drops.
    rx: u64,
    in_drops: u64,
    /// Drops under every reason, and those of them that went back as ICMP errors.
    drops: u64,
    icmp_sent: u64,
}

impl Tally {
    pub fn read(stats: &StatsRegistry, in_vif: u16) -> Tally {
        let s = stats.snapshot();
        let v = stats.vif(in_vif);
        Tally {
            rx: v.rx_packets,
            in_drops: v.drops,
            drops: s.total_drops(),
            icmp_sent: s.drop_count(DropReason::MtuIcmpSent)
                + s.drop_count(DropReason::TtlExceededIcmpSent),
        }
    }
}

/// Each of the `n` packets just processed landed in exactly one place (a vif's queue, the
/// host queue, the agent queue (with a trap record each) or the dropped list), and whatever leaves through a vif still has an Ethernet
/// header. The counters balance: all `n` counted received, every dropped one counted once
/// under a reason and against its ingress vif (an ICMP error sent back counts as the drop it
/// replaces and leaves as a packet).
pub fn packets_accounted<B: PacketBuf>(out: &TxBatches<B>, n: usize, before: Tally, after: Tally) {
    let sent: usize = out.touched().iter().map(|&v| out.tx(v).len()).sum();
    assert_eq!(
        sent + out.host.len() + out.agent.len() + out.dropped.len(),
        n,
        "every packet lands in exactly one place"
    );
    assert_eq!(out.agent.len(), out.agent_traps.len(), "a trap record each");
    for &v in out.touched() {
        for b in out.tx(v) {
            assert!(b.len() >= 14);
        }
    }
    let dropped = out.dropped.len() as u64;
    let icmp = after.icmp_sent - before.icmp_sent;
    assert_eq!(
        after.rx - before.rx,
        n as u64,
        "every packet counted received"
    );
    assert_eq!(
        after.drops - before.drops,
        dropped + icmp,
        "every drop counted once under a reason"
    );
    assert_eq!(
        after.in_drops - before.in_drops,
        dropped,
        "every drop counted against the ingress vif"
    );
}
