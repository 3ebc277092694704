//! vhost-user wire format: the 12-byte header, typed request payloads, SCM_RIGHTS fds, replies.
//!
//! Decoding never trusts the peer: payload sizes and fd counts are checked against each request,
//! and unknown request codes decode to [`Request::Unknown`] so the session can refuse them.

use std::os::fd::OwnedFd;

use crate::error::DecodeError;
use crate::memory::{RegionSpec, MAX_REGIONS};

/// Length of the message header (request, flags, size: three little-endian u32).
pub const HEADER_LEN: usize = 12;
/// Largest payload accepted; anything larger loses framing and closes the connection.
pub const MAX_PAYLOAD: usize = 4096;
/// Most fds one message may carry.
pub const MAX_FDS: usize = MAX_REGIONS;

/// Header flag: protocol version 1.
pub const FLAG_VERSION_1: u32 = 0x1;
/// Header flag bits holding the version.
pub const FLAG_VERSION_MASK: u32 = 0x3;
/// Header flag: this is a reply.
pub const FLAG_REPLY: u32 = 0x4;
/// Header flag: the frontend wants a REPLY_ACK.
pub const FLAG_NEED_REPLY: u32 = 0x8;

/// `SET_VRING_KICK/CALL/ERR` payload bit: no fd, the ring is polled.
pub const VRING_NOFD_MASK: u64 = 0x100;
/// `SET_VRING_*` index bits.
pub const VRING_IDX_MASK: u64 = 0xff;

/// Request codes of the vhost-user protocol.
pub mod code {
    #![allow(missing_docs)]
    pub const GET_FEATURES: u32 = 1;
    pub const SET_FEATURES: u32 = 2;
    pub const SET_OWNER: u32 = 3;
    pub const RESET_OWNER: u32 = 4;
    pub const SET_MEM_TABLE: u32 = 5;
    pub const SET_LOG_BASE: u32 = 6;
    pub const SET_LOG_FD: u32 = 7;
    pub const SET_VRING_NUM: u32 = 8;
    pub const SET_VRING_ADDR: u32 = 9;
    pub const SET_VRING_BASE: u32 = 10;
    pub const GET_VRING_BASE: u32 = 11;
    pub const SET_VRING_KICK: u32 = 12;
    pub const SET_VRING_CALL: u32 = 13;
    pub const SET_VRING_ERR: u32 = 14;
    pub const GET_PROTOCOL_FEATURES: u32 = 15;
    pub const SET_PROTOCOL_FEATURES: u32 = 16;
    pub const GET_QUEUE_NUM: u32 = 17;
    pub const SET_VRING_ENABLE: u32 = 18;
    pub const SEND_RARP: u32 = 19;
    pub const NET_SET_MTU: u32 = 20;
    pub const GET_CONFIG: u32 = 24;
    pub const SET_CONFIG: u32 = 25;
    pub const RESET_DEVICE: u32 = 34;
    pub const SET_STATUS: u32 = 39;
    pub const GET_STATUS: u32 = 40;
}

/// A decoded message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Request code.
    pub request: u32,
    /// Flags (version, reply, need-reply).
    pub flags: u32,
    /// Payload length in bytes.
    pub size: u32,
}

impl Header {
    /// Parses and validates a request header: version 1, no reply flag, bounded size.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Self, DecodeError> {
        let h = Self {
            request: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            flags: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            size: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        };
        if h.flags & FLAG_VERSION_MASK != FLAG_VERSION_1 {
            return Err(DecodeError::Version(h.flags & FLAG_VERSION_MASK));
        }
        if h.flags & FLAG_REPLY != 0 {
            return Err(DecodeError::ReplyFlag(h.request));
        }
        if h.size as usize > MAX_PAYLOAD {
            return Err(DecodeError::PayloadTooLarge {
                size: h.size,
                max: MAX_PAYLOAD,
            });
        }
        Ok(h)
    }

    /// Encodes the header.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.request.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    /// Whether the frontend asked for a REPLY_ACK.
    pub fn need_reply(&self) -> bool {
        self.flags & FLAG_NEED_REPLY != 0
    }
}

/// `struct vhost_vring_state`: a ring index and a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VringState {
    /// Ring index.
    pub index: u32,
    /// Size, base or enable flag depending on the request.
    pub num: u32,
}

/// `struct vhost_vring_addr`: ring addresses in the frontend's virtual address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VringAddr {
    /// Ring index.
    pub index: u32,
    /// Flags (bit 0: log used ring writes).
    pub flags: u32,
    /// Descriptor table address.
    pub desc: u64,
    /// Used ring address.
    pub used: u64,
    /// Available ring address.
    pub avail: u64,
    /// Log address (unused: no live migration logging).
    pub log: u64,
}

/// `SET_VRING_KICK/CALL/ERR`: a ring index and an eventfd, or none for a polled ring.
#[derive(Debug)]
pub struct VringFd {
    /// Ring index.
    pub index: u32,
    /// The eventfd, absent when the NOFD bit is set.
    pub fd: Option<OwnedFd>,
}

/// `GET_CONFIG`/`SET_CONFIG` payload header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSpace {
    /// Offset into the device config space.
    pub offset: u32,
    /// Bytes requested.
    pub size: u32,
    /// Flags.
    pub flags: u32,
}

/// A decoded request.
#[derive(Debug)]
pub enum Request {
    GetFeatures,
    SetFeatures(u64),
    SetOwner,
    ResetOwner,
    SetMemTable(Vec<RegionSpec>, Vec<OwnedFd>),
    SetVringNum(VringState),
    SetVringAddr(VringAddr),
    SetVringBase(VringState),
    GetVringBase(VringState),
    SetVringKick(VringFd),
    SetVringCall(VringFd),
    SetVringErr(VringFd),
    GetProtocolFeatures,
    SetProtocolFeatures(u64),
    GetQueueNum,
    SetVringEnable(VringState),
    SendRarp([u8; 6]),
    NetSetMtu(u64),
    GetConfig(ConfigSpace),
    ResetDevice,
    SetStatus(u8),
    GetStatus,
    /// A request code this backend does not implement (fds already dropped, i.e. closed).
    Unknown(u32),
}

impl Request {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::GetFeatures => "GET_FEATURES",
            Request::SetFeatures(_) => "SET_FEATURES",
            Request::SetOwner => "SET_OWNER",
            Request::ResetOwner => "RESET_OWNER",
            Request::SetMemTable(..) => "SET_MEM_TABLE",
            Request::SetVringNum(_) => "SET_VRING_NUM",
            Request::SetVringAddr(_) => "SET_VRING_ADDR",
            Request::SetVringBase(_) => "SET_VRING_BASE",
            Request::GetVringBase(_) => "GET_VRING_BASE",
            Request::SetVringKick(_) => "SET_VRING_KICK",
            Request::SetVringCall(_) => "SET_VRING_CALL",
            Request::SetVringErr(_) => "SET_VRING_ERR",
            Request::GetProtocolFeatures => "GET_PROTOCOL_FEATURES",
            Request::SetProtocolFeatures(_) => "SET_PROTOCOL_FEATURES",
            Request::GetQueueNum => "GET_QUEUE_NUM",
            Request::SetVringEnable(_) => "SET_VRING_ENABLE",
            Request::SendRarp(_) => "SEND_RARP",
            Request::NetSetMtu(_) => "NET_SET_MTU",
            Request::GetConfig(_) => "GET_CONFIG",
            Request::ResetDevice => "RESET_DEVICE",
            Request::SetStatus(_) => "SET_STATUS",
            Request::GetStatus => "GET_STATUS",
            Request::Unknown(_) => "UNKNOWN",
        }
    }
}

/// A request with its header, as the session consumes it.
#[derive(Debug)]
pub struct Message {
    /// The header as received.
    pub header: Header,
    /// The decoded body.
    pub request: Request,
}

fn u32_at(p: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&p[off..off + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(p: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[off..off + 8]);
    u64::from_le_bytes(b)
}

fn want_size(h: &Header, payload: &[u8], expected: usize) -> Result<(), DecodeError> {
    if payload.len() != expected {
        return Err(DecodeError::PayloadSize {
            request: h.request,
            got: payload.len(),
            expected,
        });
    }
    Ok(())
}

fn want_fds(h: &Header, fds: &[OwnedFd], expected: usize) -> Result<(), DecodeError> {
    if fds.len() != expected {
        return Err(DecodeError::FdCount {
            request: h.request,
            got: fds.len(),
            expected,
        });
    }
    Ok(())
}

/// Decodes one request body. `payload.len()` must equal `header.size` (the reader guarantees it).
/// On error every fd is dropped, i.e. closed: a refused message leaks nothing.
pub fn decode(
    header: Header,
    payload: &[u8],
    mut fds: Vec<OwnedFd>,
) -> Result<Message, DecodeError> {
    let h = &header;
    if payload.len() != h.size as usize {
        return Err(DecodeError::PayloadSize {
            request: h.request,
            got: payload.len(),
            expected: h.size as usize,
        });
    }
    let no_fds = |fds: &[OwnedFd]| want_fds(h, fds, 0);
    let state = |p: &[u8]| -> Result<VringState, DecodeError> {
        want_size(h, p, 8)?;
        Ok(VringState {
            index: u32_at(p, 0),
            num: u32_at(p, 4),
        })
    };
    let u64_body = |p: &[u8]| -> Result<u64, DecodeError> {
        want_size(h, p, 8)?;
        Ok(u64_at(p, 0))
    };
    let request = match h.request {
        code::GET_FEATURES => {
            no_fds(&fds)?;
            Request::GetFeatures
        }
        code::SET_FEATURES => {
            no_fds(&fds)?;
            Request::SetFeatures(u64_body(payload)?)
        }
        code::SET_OWNER => {
            no_fds(&fds)?;
            Request::SetOwner
        }
        code::RESET_OWNER => {
            no_fds(&fds)?;
            Request::ResetOwner
        }
        code::SET_MEM_TABLE => {
            if payload.len() < 8 {
                return Err(DecodeError::PayloadSize {
                    request: h.request,
                    got: payload.len(),
                    expected: 8,
                });
            }
            let n = u32_at(payload, 0);
            if n == 0 || n as usize > MAX_REGIONS {
                return Err(DecodeError::Invalid {
                    request: h.request,
                    field: "region count",
                    value: n.into(),
                });
            }
            let n = n as usize;
            want_size(h, payload, 8 + 32 * n)?;
            want_fds(h, &fds, n)?;
            let regions = (0..n)
                .map(|i| {
                    let o = 8 + 32 * i;
                    RegionSpec {
                        guest_phys_addr: u64_at(payload, o),
                        memory_size: u64_at(payload, o + 8),
                        userspace_addr: u64_at(payload, o + 16),
                        mmap_offset: u64_at(payload, o + 24),
                    }
                })
                .collect();
            Request::SetMemTable(regions, std::mem::take(&mut fds))
        }
        code::SET_VRING_NUM => {
            no_fds(&fds)?;
            Request::SetVringNum(state(payload)?)
        }
        code::SET_VRING_ADDR => {
            no_fds(&fds)?;
            want_size(h, payload, 40)?;
            Request::SetVringAddr(VringAddr {
                index: u32_at(payload, 0),
                flags: u32_at(payload, 4),
                desc: u64_at(payload, 8),
                used: u64_at(payload, 16),
                avail: u64_at(payload, 24),
                log: u64_at(payload, 32),
            })
        }
        code::SET_VRING_BASE => {
            no_fds(&fds)?;
            Request::SetVringBase(state(payload)?)
        }
        code::GET_VRING_BASE => {
            no_fds(&fds)?;
            Request::GetVringBase(state(payload)?)
        }
        code::SET_VRING_KICK | code::SET_VRING_CALL | code::SET_VRING_ERR => {
            let v = u64_body(payload)?;
            if v & !(VRING_IDX_MASK | VRING_NOFD_MASK) != 0 {
                return Err(DecodeError::Invalid {
                    request: h.request,
                    field: "vring fd payload",
                    value: v,
                });
            }
            let fd = if v & VRING_NOFD_MASK != 0 {
                no_fds(&fds)?;
                None
            } else {
                want_fds(h, &fds, 1)?;
                fds.pop()
            };
            let vfd = VringFd {
                index: (v & VRING_IDX_MASK) as u32,
                fd,
            };
            match h.request {
                code::SET_VRING_KICK => Request::SetVringKick(vfd),
                code::SET_VRING_CALL => Request::SetVringCall(vfd),
                _ => Request::SetVringErr(vfd),
            }
        }
        code::GET_PROTOCOL_FEATURES => {
            no_fds(&fds)?;
            Request::GetProtocolFeatures
        }
        code::SET_PROTOCOL_FEATURES => {
            no_fds(&fds)?;
            Request::SetProtocolFeatures(u64_body(payload)?)
        }
        code::GET_QUEUE_NUM => {
            no_fds(&fds)?;
            Request::GetQueueNum
        }
        code::SET_VRING_ENABLE => {
            no_fds(&fds)?;
            Request::SetVringEnable(state(payload)?)
        }
        code::SEND_RARP => {
            no_fds(&fds)?;
            let v = u64_body(payload)?.to_le_bytes();
            Request::SendRarp([v[0], v[1], v[2], v[3], v[4], v[5]])
        }
        code::NET_SET_MTU => {
            no_fds(&fds)?;
            Request::NetSetMtu(u64_body(payload)?)
        }
        code::GET_CONFIG => {
            no_fds(&fds)?;
            if payload.len() < 12 {
                return Err(DecodeError::PayloadSize {
                    request: h.request,
                    got: payload.len(),
                    expected: 12,
                });
            }
            let cfg = ConfigSpace {
                offset: u32_at(payload, 0),
                size: u32_at(payload, 4),
                flags: u32_at(payload, 8),
            };
            want_size(h, payload, 12 + cfg.size as usize)?;
            Request::GetConfig(cfg)
        }
        code::RESET_DEVICE => {
            no_fds(&fds)?;
            Request::ResetDevice
        }
        code::SET_STATUS => {
            no_fds(&fds)?;
            let v = u64_body(payload)?;
            if v > 0xff {
                return Err(DecodeError::Invalid {
                    request: h.request,
                    field: "status",
                    value: v,
                });
            }
            Request::SetStatus(v as u8)
        }
        code::GET_STATUS => {
            no_fds(&fds)?;
            Request::GetStatus
        }
        other => Request::Unknown(other),
    };
    Ok(Message { header, request })
}

/// Encodes a reply to `request` carrying `payload`.
pub fn encode_reply(request: u32, payload: &[u8], out: &mut Vec<u8>) {
    let h = Header {
        request,
        flags: FLAG_VERSION_1 | FLAG_REPLY,
        size: payload.len() as u32,
    };
    out.extend_from_slice(&h.to_bytes());
    out.extend_from_slice(payload);
}

/// Encodes a request (frontend side: the test frontend and fuzz seeds use it).
pub fn encode_request(request: u32, need_reply: bool, payload: &[u8]) -> Vec<u8> {
    let flags = FLAG_VERSION_1 | if need_reply { FLAG_NEED_REPLY } else { 0 };
    let h = Header {
        request,
        flags,
        size: payload.len() as u32,
    };
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Payload of `SET_MEM_TABLE` for `regions` (frontend side).
pub fn mem_table_payload(regions: &[RegionSpec]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + 32 * regions.len());
    p.extend_from_slice(&(regions.len() as u32).to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    for r in regions {
        for v in [
            r.guest_phys_addr,
            r.memory_size,
            r.userspace_addr,
            r.mmap_offset,
        ] {
            p.extend_from_slice(&v.to_le_bytes());
        }
    }
    p
}

/// Payload of `SET_VRING_ADDR` (frontend side).
pub fn vring_addr_payload(a: &VringAddr) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&a.index.to_le_bytes());
    p.extend_from_slice(&a.flags.to_le_bytes());
    for v in [a.desc, a.used, a.avail, a.log] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    p
}

/// Payload of a `vhost_vring_state` request (frontend side).
pub fn vring_state_payload(index: u32, num: u32) -> Vec<u8> {
    let mut p = index.to_le_bytes().to_vec();
    p.extend_from_slice(&num.to_le_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(request: u32, flags: u32, size: u32) -> Header {
        Header {
            request,
            flags,
            size,
        }
    }

    fn memfd() -> OwnedFd {
        rustix::fs::memfd_create("codec", rustix::fs::MemfdFlags::CLOEXEC).unwrap()
    }

    #[test]
    fn header_round_trips_and_rejects_bad_version_reply_and_size() {
        let h = hdr(code::SET_FEATURES, FLAG_VERSION_1 | FLAG_NEED_REPLY, 8);
        let p = Header::parse(&h.to_bytes()).unwrap();
        assert_eq!(p, h);
        assert!(p.need_reply());
        assert_eq!(
            Header::parse(&hdr(1, 2, 0).to_bytes()),
            Err(DecodeError::Version(2))
        );
        assert_eq!(
            Header::parse(&hdr(1, 0, 0).to_bytes()),
            Err(DecodeError::Version(0))
        );
        assert_eq!(
            Header::parse(&hdr(1, 5, 0).to_bytes()),
            Err(DecodeError::ReplyFlag(1))
        );
        assert!(matches!(
            Header::parse(&hdr(1, 1, 1 << 20).to_bytes()),
            Err(DecodeError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn decodes_every_fixed_size_request() {
        let st = vring_state_payload(3, 256);
        let cases: Vec<(u32, Vec<u8>)> = vec![
            (code::GET_FEATURES, vec![]),
            (code::SET_FEATURES, 5u64.to_le_bytes().to_vec()),
            (code::SET_OWNER, vec![]),
            (code::RESET_OWNER, vec![]),
            (code::SET_VRING_NUM, st.clone()),
            (code::SET_VRING_BASE, st.clone()),
            (code::GET_VRING_BASE, st.clone()),
            (code::SET_VRING_ENABLE, st.clone()),
            (code::GET_PROTOCOL_FEATURES, vec![]),
            (code::SET_PROTOCOL_FEATURES, 3u64.to_le_bytes().to_vec()),
            (code::GET_QUEUE_NUM, vec![]),
            (code::SET_STATUS, 15u64.to_le_bytes().to_vec()),
            (code::GET_STATUS, vec![]),
            (code::RESET_DEVICE, vec![]),
            (code::SEND_RARP, 0u64.to_le_bytes().to_vec()),
            (code::NET_SET_MTU, 1500u64.to_le_bytes().to_vec()),
            (
                code::SET_VRING_KICK,
                (2u64 | VRING_NOFD_MASK).to_le_bytes().to_vec(),
            ),
            (
                code::SET_VRING_ADDR,
                vring_addr_payload(&VringAddr {
                    index: 1,
                    desc: 0x1000,
                    ..Default::default()
                }),
            ),
            (
                code::GET_CONFIG,
                [
                    12u32.to_le_bytes(),
                    4u32.to_le_bytes(),
                    0u32.to_le_bytes(),
                    [0; 4],
                ]
                .concat(),
            ),
        ];
        for (c, p) in cases {
            let m = decode(hdr(c, 1, p.len() as u32), &p, vec![])
                .unwrap_or_else(|e| panic!("{c}: {e}"));
            assert_ne!(m.request.name(), "UNKNOWN", "{c}");
        }
        match decode(hdr(code::SET_VRING_NUM, 1, 8), &st, vec![])
            .unwrap()
            .request
        {
            Request::SetVringNum(VringState { index: 3, num: 256 }) => {}
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn wrong_payload_sizes_and_fd_counts_are_refused() {
        assert!(matches!(
            decode(hdr(code::SET_FEATURES, 1, 4), &[0; 4], vec![]),
            Err(DecodeError::PayloadSize { .. })
        ));
        assert!(matches!(
            decode(hdr(code::SET_VRING_ADDR, 1, 39), &[0; 39], vec![]),
            Err(DecodeError::PayloadSize { .. })
        ));
        assert!(matches!(
            decode(hdr(code::GET_FEATURES, 1, 0), &[], vec![memfd()]),
            Err(DecodeError::FdCount { .. })
        ));
        // KICK without the NOFD bit needs exactly one fd.
        assert!(matches!(
            decode(hdr(code::SET_VRING_KICK, 1, 8), &[0; 8], vec![]),
            Err(DecodeError::FdCount { .. })
        ));
        assert!(matches!(
            decode(
                hdr(code::SET_VRING_CALL, 1, 8),
                &[0; 8],
                vec![memfd(), memfd()]
            ),
            Err(DecodeError::FdCount { .. })
        ));
        assert!(matches!(
            decode(
                hdr(code::SET_VRING_CALL, 1, 8),
                &0x1_0000u64.to_le_bytes(),
                vec![memfd()]
            ),
            Err(DecodeError::Invalid { .. })
        ));
        // Header size and actual payload disagree.
        assert!(matches!(
            decode(hdr(code::SET_FEATURES, 1, 8), &[0; 4], vec![]),
            Err(DecodeError::PayloadSize { .. })
        ));
    }

    #[test]
    fn mem_table_checks_region_count_size_and_fds() {
        let r = RegionSpec {
            guest_phys_addr: 0,
            memory_size: 4096,
            userspace_addr: 0,
            mmap_offset: 0,
        };
        let p = mem_table_payload(&[r, r]);
        let m = decode(
            hdr(code::SET_MEM_TABLE, 1, p.len() as u32),
            &p,
            vec![memfd(), memfd()],
        )
        .unwrap();
        assert!(
            matches!(m.request, Request::SetMemTable(ref v, ref f) if v.len() == 2 && f.len() == 2)
        );
        assert!(matches!(
            decode(
                hdr(code::SET_MEM_TABLE, 1, p.len() as u32),
                &p,
                vec![memfd()]
            ),
            Err(DecodeError::FdCount { .. })
        ));
        let mut bad = p.clone();
        bad[0] = 9;
        assert!(matches!(
            decode(hdr(code::SET_MEM_TABLE, 1, bad.len() as u32), &bad, vec![]),
            Err(DecodeError::Invalid { .. })
        ));
        bad[0] = 3;
        assert!(matches!(
            decode(
                hdr(code::SET_MEM_TABLE, 1, bad.len() as u32),
                &bad,
                vec![memfd(), memfd(), memfd()]
            ),
            Err(DecodeError::PayloadSize { .. })
        ));
    }

    #[test]
    fn unknown_requests_decode_as_unknown() {
        let m = decode(hdr(999, 1, 3), &[1, 2, 3], vec![memfd()]).unwrap();
        assert!(matches!(m.request, Request::Unknown(999)));
    }

    #[test]
    fn reply_encoding_sets_reply_flag() {
        let mut out = Vec::new();
        encode_reply(code::GET_FEATURES, &7u64.to_le_bytes(), &mut out);
        assert_eq!(out.len(), 20);
        assert_eq!(
            u32::from_le_bytes(out[4..8].try_into().unwrap()),
            FLAG_VERSION_1 | FLAG_REPLY
        );
        assert_eq!(u64::from_le_bytes(out[12..20].try_into().unwrap()), 7);
    }
}
