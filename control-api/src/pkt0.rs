//! pkt0, the agent channel: the wire format of the messages vrouterd and an agent exchange on
//! `vrouterd --agent-socket PATH` (a unix stream socket, mode 0600), and a blocking
//! connection type for agents written in Rust.
//!
//! Every message is a 16-byte header followed by `len` bytes of payload. All integers are
//! big-endian. Bytes 0..4 (version, kind, length) keep their meaning in every version, so a
//! reader always knows where the next message starts, even after one it cannot decode.
//!
//! ```text
//!  0       1       2               4       5       6               8
//!  +-------+-------+---------------+-------+-------+---------------+
//!  |version| kind  |  payload len  |reason | flags |      vif      |
//!  +-------+-------+---------------+-------+-------+---------------+
//!  |      vrf      |   reserved 0  |            flow id            |
//!  +---------------+---------------+-------------------------------+
//!  8               10              12                              16
//! ```
//!
//! - version: 1.
//! - kind: 1 trap (vrouterd → agent: a packet the data plane handed to the agent; payload the
//!   Ethernet frame), 2 send (agent → vrouterd: send the payload frame out of vif `vif`),
//!   3 inject (agent → vrouterd: run the payload frame through the pipeline as if vif `vif`
//!   had received it), 4 verdict (agent → vrouterd: install a flow, payload below).
//! - reason (traps): 1 new flow (the first packet of a flow a vif policy gives the agent),
//!   2 DHCP (from a vif without an address); 0 in other kinds.
//! - flags: verdict bit 0 = allow (else deny); other bits and kinds 0.
//! - vif: the vif the trapped packet came in by, or the vif a send / inject / verdict names.
//! - vrf: the packet's VRF (traps) or the flow's (verdicts).
//! - flow id: 0xffff_ffff when the flow has no entry (a trapped first packet); in the agent's
//!   messages always 0xffff_ffff, and vrf 0 in sends and injects.
//!
//! A verdict's payload (40 bytes) is the flow's key as its first packet had it: family
//! (4 or 6), IP protocol, source port, destination port, 2 bytes 0, source address and
//! destination address (16 bytes each; IPv4 in the first 4, the rest 0); for ICMP the echo
//! identifier and the message type stand in for the ports ([`FlowTuple::of_frame`] reads a
//! trapped frame's). vrouterd installs the flow (allowed: with its reverse) and later packets
//! of it pass without the agent. The trapped packet itself is not forwarded: an agent that
//! wants it delivered injects it back after its verdict.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// The header version this module speaks.
pub const VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 16;
/// A verdict's payload length.
pub const VERDICT_LEN: usize = 40;
/// Flow id of a packet whose flow has no entry.
pub const NO_FLOW: u32 = u32::MAX;
/// The largest payload a header can announce.
pub const MAX_PAYLOAD: usize = u16::MAX as usize;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Trap = 1,
    Send = 2,
    Inject = 3,
    Verdict = 4,
}

/// Why a packet was trapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    None = 0,
    NewFlow = 1,
    Dhcp = 2,
    /// A gratuitous ARP from a pod vif (a guest announcing itself after a live migration).
    Garp = 3,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::None => "none",
            Reason::NewFlow => "new_flow",
            Reason::Dhcp => "dhcp",
            Reason::Garp => "garp",
        }
    }
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// Payload length.
    pub len: u16,
    pub reason: Reason,
    pub flags: u8,
    pub vif: u16,
    pub vrf: u16,
    pub flow_id: u32,
}

/// Why bytes are not a message. Every variant but [`Pkt0Error::Short`] comes with the
/// number of bytes the bad message takes ([`Pkt0Error::skip`]), so a reader can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Pkt0Error {
    #[error("need {0} more bytes")]
    Short(usize),
    #[error("unsupported pkt0 version {version}")]
    Version { version: u8, skip: usize },
    #[error("unknown message kind {kind}")]
    Kind { kind: u8, skip: usize },
    #[error("unknown trap reason {reason}")]
    Reason { reason: u8, skip: usize },
    #[error("reserved field or flag set")]
    Reserved { skip: usize },
    #[error("payload of {len} bytes does not fit a {kind:?} message")]
    Length { kind: Kind, len: usize, skip: usize },
    #[error("verdict for address family {0}")]
    Family(u8, usize),
}

impl Pkt0Error {
    /// Bytes to skip to reach the next message (0 for [`Pkt0Error::Short`]).
    pub fn skip(&self) -> usize {
        match *self {
            Pkt0Error::Short(_) => 0,
            Pkt0Error::Version { skip, .. }
            | Pkt0Error::Kind { skip, .. }
            | Pkt0Error::Reason { skip, .. }
            | Pkt0Error::Reserved { skip }
            | Pkt0Error::Length { skip, .. }
            | Pkt0Error::Family(_, skip) => skip,
        }
    }
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = VERSION;
        h[1] = self.kind as u8;
        h[2..4].copy_from_slice(&self.len.to_be_bytes());
        h[4] = self.reason as u8;
        h[5] = self.flags;
        h[6..8].copy_from_slice(&self.vif.to_be_bytes());
        h[8..10].copy_from_slice(&self.vrf.to_be_bytes());
        h[12..16].copy_from_slice(&self.flow_id.to_be_bytes());
        h
    }

    /// Decodes the header at the start of `b` (its payload need not be there yet).
    pub fn decode(b: &[u8]) -> Result<Header, Pkt0Error> {
        let Some(h) = b.get(..HEADER_LEN) else {
            return Err(Pkt0Error::Short(HEADER_LEN - b.len()));
        };
        let len = u16::from_be_bytes([h[2], h[3]]);
        let skip = HEADER_LEN + usize::from(len);
        if h[0] != VERSION {
            return Err(Pkt0Error::Version {
                version: h[0],
                skip,
            });
        }
        let kind = match h[1] {
            1 => Kind::Trap,
            2 => Kind::Send,
            3 => Kind::Inject,
            4 => Kind::Verdict,
            k => return Err(Pkt0Error::Kind { kind: k, skip }),
        };
        let reason = match h[4] {
            0 => Reason::None,
            1 => Reason::NewFlow,
            2 => Reason::Dhcp,
            3 => Reason::Garp,
            r => return Err(Pkt0Error::Reason { reason: r, skip }),
        };
        let flags = h[5];
        let vrf = u16::from_be_bytes([h[8], h[9]]);
        let flow_id = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        // What only traps carry is 0 / none in the agent's messages.
        let unused_set = match kind {
            Kind::Trap => false,
            Kind::Verdict => flow_id != NO_FLOW,
            Kind::Send | Kind::Inject => flow_id != NO_FLOW || vrf != 0,
        };
        let reserved_flags = if kind == Kind::Verdict { !1 } else { !0 };
        if flags & reserved_flags != 0
            || unused_set
            || h[10..12] != [0, 0]
            || (kind == Kind::Trap) == (reason == Reason::None)
        {
            return Err(Pkt0Error::Reserved { skip });
        }
        let short_frame = kind != Kind::Verdict && usize::from(len) < 14;
        if short_frame || (kind == Kind::Verdict && usize::from(len) != VERDICT_LEN) {
            return Err(Pkt0Error::Length {
                kind,
                len: usize::from(len),
                skip,
            });
        }
        Ok(Header {
            kind,
            len,
            reason,
            flags,
            vif: u16::from_be_bytes([h[6], h[7]]),
            vrf,
            flow_id,
        })
    }
}

/// A flow's key, as its first packet had it (before any NAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

impl FlowTuple {
    /// The flow key vrouterd gives an Ethernet frame (IPv4, or IPv6 without extension
    /// headers; no VLAN tag): TCP, UDP and SCTP ports; for ICMP / ICMPv6 the echo identifier
    /// (echo request and reply only, else 0) as `sport` and the message type as `dport`.
    pub fn of_frame(f: &[u8]) -> Option<FlowTuple> {
        let et = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
        let (proto, src, dst, l4) = match et {
            0x0800 => {
                let ip = f.get(14..34)?;
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                let v4 =
                    |o: usize| IpAddr::V4(Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]));
                (ip[9], v4(12), v4(16), 14 + ihl)
            }
            0x86dd => {
                let ip = f.get(14..54)?;
                let v6 = |o: usize| {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&ip[o..o + 16]);
                    IpAddr::V6(Ipv6Addr::from(a))
                };
                (ip[6], v6(8), v6(24), 54)
            }
            _ => return None,
        };
        let be =
            |o: usize| -> Option<u16> { Some(u16::from_be_bytes([*f.get(o)?, *f.get(o + 1)?])) };
        let (sport, dport) = match proto {
            6 | 17 | 132 => (be(l4)?, be(l4 + 2)?),
            1 | 58 => {
                let ty = *f.get(l4)?;
                let echo = matches!((proto, ty), (1, 0 | 8) | (58, 128 | 129));
                (if echo { be(l4 + 4)? } else { 0 }, u16::from(ty))
            }
            _ => (0, 0),
        };
        Some(FlowTuple {
            proto,
            src,
            dst,
            sport,
            dport,
        })
    }
}

/// An agent's decision about a flow entering by `vif` in `vrf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub vif: u16,
    pub vrf: u16,
    pub allow: bool,
    pub tuple: FlowTuple,
}

/// One pkt0 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Trap {
        reason: Reason,
        vif: u16,
        vrf: u16,
        flow_id: u32,
        frame: Vec<u8>,
    },
    Send {
        vif: u16,
        frame: Vec<u8>,
    },
    Inject {
        vif: u16,
        frame: Vec<u8>,
    },
    Verdict(Verdict),
}

fn addr16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

impl Message {
    /// Appends the encoded message to `out`. Frames longer than [`MAX_PAYLOAD`] are cut to it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (kind, reason, flags, vif, vrf, flow_id, payload): (_, _, _, _, _, _, &[u8]) =
            match self {
                Message::Trap {
                    reason,
                    vif,
                    vrf,
                    flow_id,
                    frame,
                } => (Kind::Trap, *reason, 0, *vif, *vrf, *flow_id, frame),
                Message::Send { vif, frame } => {
                    (Kind::Send, Reason::None, 0, *vif, 0, NO_FLOW, frame)
                }
                Message::Inject { vif, frame } => {
                    (Kind::Inject, Reason::None, 0, *vif, 0, NO_FLOW, frame)
                }
                Message::Verdict(v) => {
                    let t = &v.tuple;
                    let mut p = [0u8; VERDICT_LEN];
                    p[0] = if t.src.is_ipv6() { 6 } else { 4 };
                    p[1] = t.proto;
                    p[2..4].copy_from_slice(&t.sport.to_be_bytes());
                    p[4..6].copy_from_slice(&t.dport.to_be_bytes());
                    p[8..24].copy_from_slice(&addr16(t.src));
                    p[24..40].copy_from_slice(&addr16(t.dst));
                    let h = Header {
                        kind: Kind::Verdict,
                        len: VERDICT_LEN as u16,
                        reason: Reason::None,
                        flags: u8::from(v.allow),
                        vif: v.vif,
                        vrf: v.vrf,
                        flow_id: NO_FLOW,
                    };
                    out.extend_from_slice(&h.encode());
                    out.extend_from_slice(&p);
                    return;
                }
            };
        let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
        let h = Header {
            kind,
            len: payload.len() as u16,
            reason,
            flags,
            vif,
            vrf,
            flow_id,
        };
        out.extend_from_slice(&h.encode());
        out.extend_from_slice(payload);
    }

    /// Decodes the message at the start of `b`: the message and the bytes it took.
    pub fn decode(b: &[u8]) -> Result<(Message, usize), Pkt0Error> {
        let h = Header::decode(b)?;
        let end = HEADER_LEN + usize::from(h.len);
        let Some(p) = b.get(HEADER_LEN..end) else {
            return Err(Pkt0Error::Short(end - b.len()));
        };
        let m = match h.kind {
            Kind::Trap => Message::Trap {
                reason: h.reason,
                vif: h.vif,
                vrf: h.vrf,
                flow_id: h.flow_id,
                frame: p.to_vec(),
            },
            Kind::Send => Message::Send {
                vif: h.vif,
                frame: p.to_vec(),
            },
            Kind::Inject => Message::Inject {
                vif: h.vif,
                frame: p.to_vec(),
            },
            Kind::Verdict => {
                let a = |o: usize| -> [u8; 16] {
                    let mut x = [0u8; 16];
                    x.copy_from_slice(&p[o..o + 16]);
                    x
                };
                let (src, dst) = match p[0] {
                    4 if a(8)[4..] == [0; 12] && a(24)[4..] == [0; 12] => {
                        let v4 = |x: [u8; 16]| IpAddr::V4(Ipv4Addr::new(x[0], x[1], x[2], x[3]));
                        (v4(a(8)), v4(a(24)))
                    }
                    6 => (
                        IpAddr::V6(Ipv6Addr::from(a(8))),
                        IpAddr::V6(Ipv6Addr::from(a(24))),
                    ),
                    f => return Err(Pkt0Error::Family(f, end)),
                };
                if p[6..8] != [0, 0] {
                    return Err(Pkt0Error::Reserved { skip: end });
                }
                Message::Verdict(Verdict {
                    vif: h.vif,
                    vrf: h.vrf,
                    allow: h.flags & 1 == 1,
                    tuple: FlowTuple {
                        proto: p[1],
                        src,
                        dst,
                        sport: u16::from_be_bytes([p[2], p[3]]),
                        dport: u16::from_be_bytes([p[4], p[5]]),
                    },
                })
            }
        };
        Ok((m, end))
    }
}

/// An agent's connection to vrouterd's pkt0 socket (blocking).
pub struct Connection {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Connection {
    pub fn connect(path: impl AsRef<Path>) -> io::Result<Connection> {
        Ok(Connection {
            stream: UnixStream::connect(path)?,
            buf: Vec::with_capacity(HEADER_LEN + MAX_PAYLOAD),
        })
    }

    /// The underlying stream (timeouts, shutdown).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The next message from vrouterd. A message this version cannot decode is an
    /// `InvalidData` error; the connection stays usable (it was read whole).
    pub fn recv(&mut self) -> io::Result<Message> {
        let mut h = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut h)?;
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        self.buf.clear();
        self.buf.extend_from_slice(&h);
        self.buf.resize(HEADER_LEN + len, 0);
        self.stream.read_exact(&mut self.buf[HEADER_LEN..])?;
        Message::decode(&self.buf)
            .map(|(m, _)| m)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    pub fn send(&mut self, m: &Message) -> io::Result<()> {
        let mut out = Vec::with_capacity(HEADER_LEN + 64);
        m.encode(&mut out);
        self.stream.write_all(&out)
    }

    /// Writes raw bytes (tests of how vrouterd takes malformed messages).
    pub fn send_raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.stream.write_all(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Vec<u8> {
        (0u8..60).collect()
    }

    #[test]
    fn messages_round_trip() {
        let msgs = [
            Message::Trap {
                reason: Reason::NewFlow,
                vif: 3,
                vrf: 7,
                flow_id: NO_FLOW,
                frame: frame(),
            },
            Message::Send {
                vif: 1,
                frame: frame(),
            },
            Message::Inject {
                vif: 2,
                frame: frame(),
            },
            Message::Verdict(Verdict {
                vif: 3,
                vrf: 7,
                allow: true,
                tuple: FlowTuple {
                    proto: 17,
                    src: "198.18.0.1".parse().unwrap(),
                    dst: "198.18.0.2".parse().unwrap(),
                    sport: 4000,
                    dport: 53,
                },
            }),
            Message::Verdict(Verdict {
                vif: 3,
                vrf: 7,
                allow: false,
                tuple: FlowTuple {
                    proto: 6,
                    src: "2001:db8::1".parse().unwrap(),
                    dst: "2001:db8::2".parse().unwrap(),
                    sport: 1,
                    dport: 2,
                },
            }),
        ];
        let mut all = Vec::new();
        for m in &msgs {
            m.encode(&mut all);
        }
        let mut at = 0;
        for m in &msgs {
            let (got, n) = Message::decode(&all[at..]).unwrap();
            assert_eq!(&got, m);
            at += n;
        }
        assert_eq!(at, all.len());
    }

    #[test]
    fn header_layout_is_the_documented_one() {
        let mut b = Vec::new();
        Message::Trap {
            reason: Reason::Dhcp,
            vif: 0x0102,
            vrf: 0x0304,
            flow_id: 0x0506_0708,
            frame: frame(),
        }
        .encode(&mut b);
        assert_eq!(
            &b[..HEADER_LEN],
            &[1, 1, 0, 60, 2, 0, 1, 2, 3, 4, 0, 0, 5, 6, 7, 8]
        );
    }

    #[test]
    fn bad_messages_say_how_much_to_skip() {
        let mut good = Vec::new();
        Message::Send {
            vif: 1,
            frame: frame(),
        }
        .encode(&mut good);
        let cases: [(usize, u8); 7] = [(0, 2), (1, 9), (4, 7), (5, 1), (10, 1), (9, 1), (12, 0)];
        for (at, v) in cases {
            let mut b = good.clone();
            b[at] = v;
            let e = Message::decode(&b).unwrap_err();
            assert_eq!(e.skip(), good.len(), "byte {at} = {v}: {e}");
        }
        // A trap without a reason, a frame shorter than Ethernet, a verdict of another length.
        let mut b = good.clone();
        b[1] = Kind::Trap as u8;
        assert!(matches!(
            Message::decode(&b),
            Err(Pkt0Error::Reserved { .. })
        ));
        assert!(matches!(
            Message::decode(&[1, 2, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 255, 255, 255, 255, 1, 2, 3, 4]),
            Err(Pkt0Error::Length { skip: 20, .. })
        ));
        let mut v = good.clone();
        v[1] = Kind::Verdict as u8;
        assert!(matches!(Message::decode(&v), Err(Pkt0Error::Length { .. })));
        assert_eq!(
            Message::decode(&good[..20]),
            Err(Pkt0Error::Short(good.len() - 20))
        );
        assert_eq!(Message::decode(&good[..3]), Err(Pkt0Error::Short(13)));
    }

    #[test]
    fn a_frames_tuple_is_read_as_vrouterd_keys_it() {
        let mut udp = vec![0u8; 14 + 20 + 8];
        udp[12..14].copy_from_slice(&[0x08, 0x00]);
        udp[14] = 0x45;
        udp[14 + 9] = 17;
        udp[14 + 12..14 + 20].copy_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2]);
        udp[34..38].copy_from_slice(&[0x0f, 0xa0, 0, 53]);
        let t = FlowTuple::of_frame(&udp).unwrap();
        assert_eq!(
            (t.proto, t.src, t.dst, t.sport, t.dport),
            (
                17,
                "198.18.0.1".parse().unwrap(),
                "198.18.0.2".parse().unwrap(),
                4000,
                53
            )
        );
        let mut echo = udp.clone();
        echo[14 + 9] = 1;
        echo[34..40].copy_from_slice(&[8, 0, 0, 0, 0x12, 0x34]);
        let t = FlowTuple::of_frame(&echo).unwrap();
        assert_eq!((t.sport, t.dport), (0x1234, 8));
        echo[34] = 3;
        assert_eq!(FlowTuple::of_frame(&echo).unwrap().sport, 0);
        assert!(FlowTuple::of_frame(&udp[..30]).is_none());
        udp[12] = 0x88;
        assert!(FlowTuple::of_frame(&udp).is_none());
    }

    #[test]
    fn verdict_family_must_match_its_addresses() {
        let mut b = Vec::new();
        Message::Verdict(Verdict {
            vif: 1,
            vrf: 1,
            allow: true,
            tuple: FlowTuple {
                proto: 6,
                src: "198.18.0.1".parse().unwrap(),
                dst: "198.18.0.2".parse().unwrap(),
                sport: 1,
                dport: 2,
            },
        })
        .encode(&mut b);
        let mut bad = b.clone();
        bad[HEADER_LEN] = 5;
        assert_eq!(Message::decode(&bad), Err(Pkt0Error::Family(5, b.len())));
        let mut bad = b.clone();
        bad[HEADER_LEN + 8 + 5] = 1;
        assert!(Message::decode(&bad).is_err());
    }
}
