//! vhost-user wire format: the 12-byte header, typed request payloads, SCM_RIGHTS fds, replies.
//!
//! Decoding never trusts the peer: the header's code is looked up once as a [`RequestCode`],
//! payload sizes and fd counts are checked against that request, and unknown codes decode to
//! [`Request::Unknown`] so the session can refuse them.

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

/// Declares [`RequestCode`] from one table: the variant, its wire value and its name in the
/// specification, so the three cannot disagree.
macro_rules! request_codes {
    ($($name:ident = $value:literal => $spec:literal,)*) => {
        /// The request code of a front-end message (the spec's "front-end message types"), for
        /// the requests this backend serves; any other code decodes to [`Request::Unknown`] and
        /// is refused. The backend sends no requests of its own (it offers no backend channel),
        /// so there are no backend request codes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum RequestCode {
            $(#[doc = concat!("`VHOST_USER_", $spec, "`.")] $name = $value,)*
        }

        impl RequestCode {
            /// Every code, in wire order.
            pub const ALL: &'static [RequestCode] = &[$(RequestCode::$name,)*];

            /// The code a header carries, or `None` for one this backend does not know.
            pub const fn from_u32(value: u32) -> Option<Self> {
                match value {
                    $($value => Some(RequestCode::$name),)*
                    _ => None,
                }
            }

            /// The request's name in the specification, for logs.
            pub const fn name(self) -> &'static str {
                match self {
                    $(RequestCode::$name => $spec,)*
                }
            }
        }
    };
}

request_codes! {
    GetFeatures = 1 => "GET_FEATURES",
    SetFeatures = 2 => "SET_FEATURES",
    SetOwner = 3 => "SET_OWNER",
    ResetOwner = 4 => "RESET_OWNER",
    SetMemTable = 5 => "SET_MEM_TABLE",
    SetLogBase = 6 => "SET_LOG_BASE",
    SetLogFd = 7 => "SET_LOG_FD",
    SetVringNum = 8 => "SET_VRING_NUM",
    SetVringAddr = 9 => "SET_VRING_ADDR",
    SetVringBase = 10 => "SET_VRING_BASE",
    GetVringBase = 11 => "GET_VRING_BASE",
    SetVringKick = 12 => "SET_VRING_KICK",
    SetVringCall = 13 => "SET_VRING_CALL",
    SetVringErr = 14 => "SET_VRING_ERR",
    GetProtocolFeatures = 15 => "GET_PROTOCOL_FEATURES",
    SetProtocolFeatures = 16 => "SET_PROTOCOL_FEATURES",
    GetQueueNum = 17 => "GET_QUEUE_NUM",
    SetVringEnable = 18 => "SET_VRING_ENABLE",
    SendRarp = 19 => "SEND_RARP",
    NetSetMtu = 20 => "NET_SET_MTU",
    GetConfig = 24 => "GET_CONFIG",
    ResetDevice = 34 => "RESET_DEVICE",
    SetStatus = 39 => "SET_STATUS",
    GetStatus = 40 => "GET_STATUS",
}

impl From<RequestCode> for u32 {
    fn from(code: RequestCode) -> u32 {
        code as u32
    }
}

/// A decoded message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Request code as the peer sent it: [`RequestCode::from_u32`] names it. Kept raw because
    /// a reply, even the refusal of an unknown request, echoes it.
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

    /// Encodes a reply to this request carrying `payload` onto `out`.
    pub fn reply(&self, payload: &[u8], out: &mut Vec<u8>) {
        let h = Header {
            request: self.request,
            flags: FLAG_VERSION_1 | FLAG_REPLY,
            size: payload.len() as u32,
        };
        out.extend_from_slice(&h.to_bytes());
        out.extend_from_slice(payload);
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
    /// Guest-physical address used ring writes are logged at while migrating, when `flags`
    /// has [`VRING_F_LOG`].
    pub log: u64,
}

/// `SET_VRING_ADDR` flag: log used ring writes at `log` (`VHOST_VRING_F_LOG`).
pub const VRING_F_LOG: u32 = 0x1;

/// `SET_LOG_BASE` payload (`VhostUserLog`): where the log lies in the shared fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogArea {
    /// Bytes of log.
    pub size: u64,
    /// Offset of the log in the fd.
    pub offset: u64,
}

/// `SET_VRING_KICK/CALL/ERR`: a ring index and an eventfd, or none for a polled ring.
#[derive(Debug)]
pub struct VringFd {
    /// Ring index.
    pub index: u32,
    /// The eventfd, absent when the NOFD bit is set.
    pub fd: Option<OwnedFd>,
}

/// `GET_CONFIG` payload header.
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
    /// The dirty log: its place in the fd, and the fd (`LOG_SHMFD`).
    SetLogBase(LogArea, OwnedFd),
    /// An eventfd to tell the frontend the log changed (kept, not used: the frontend syncs the
    /// log itself).
    SetLogFd(OwnedFd),
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
    /// The request's code; `None` for [`Request::Unknown`].
    pub fn code(&self) -> Option<RequestCode> {
        Some(match self {
            Request::GetFeatures => RequestCode::GetFeatures,
            Request::SetFeatures(_) => RequestCode::SetFeatures,
            Request::SetOwner => RequestCode::SetOwner,
            Request::ResetOwner => RequestCode::ResetOwner,
            Request::SetMemTable(..) => RequestCode::SetMemTable,
            Request::SetLogBase(..) => RequestCode::SetLogBase,
            Request::SetLogFd(_) => RequestCode::SetLogFd,
            Request::SetVringNum(_) => RequestCode::SetVringNum,
            Request::SetVringAddr(_) => RequestCode::SetVringAddr,
            Request::SetVringBase(_) => RequestCode::SetVringBase,
            Request::GetVringBase(_) => RequestCode::GetVringBase,
            Request::SetVringKick(_) => RequestCode::SetVringKick,
            Request::SetVringCall(_) => RequestCode::SetVringCall,
            Request::SetVringErr(_) => RequestCode::SetVringErr,
            Request::GetProtocolFeatures => RequestCode::GetProtocolFeatures,
            Request::SetProtocolFeatures(_) => RequestCode::SetProtocolFeatures,
            Request::GetQueueNum => RequestCode::GetQueueNum,
            Request::SetVringEnable(_) => RequestCode::SetVringEnable,
            Request::SendRarp(_) => RequestCode::SendRarp,
            Request::NetSetMtu(_) => RequestCode::NetSetMtu,
            Request::GetConfig(_) => RequestCode::GetConfig,
            Request::ResetDevice => RequestCode::ResetDevice,
            Request::SetStatus(_) => RequestCode::SetStatus,
            Request::GetStatus => RequestCode::GetStatus,
            Request::Unknown(_) => return None,
        })
    }

    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        self.code().map_or("UNKNOWN", RequestCode::name)
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
/// On error every fd is dropped, i.e. closed: a refused message leaks nothing, and so does a
/// request of unknown code, which decodes to [`Request::Unknown`].
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
    let Some(code) = RequestCode::from_u32(h.request) else {
        return Ok(Message {
            header,
            request: Request::Unknown(h.request),
        });
    };
    let carries_fds = matches!(
        code,
        RequestCode::SetMemTable
            | RequestCode::SetLogBase
            | RequestCode::SetLogFd
            | RequestCode::SetVringKick
            | RequestCode::SetVringCall
            | RequestCode::SetVringErr
    );
    if !carries_fds {
        want_fds(h, &fds, 0)?;
    }
    let state = || -> Result<VringState, DecodeError> {
        want_size(h, payload, 8)?;
        Ok(VringState {
            index: u32_at(payload, 0),
            num: u32_at(payload, 4),
        })
    };
    let u64_body = || -> Result<u64, DecodeError> {
        want_size(h, payload, 8)?;
        Ok(u64_at(payload, 0))
    };
    let request = match code {
        RequestCode::GetFeatures => Request::GetFeatures,
        RequestCode::SetFeatures => Request::SetFeatures(u64_body()?),
        RequestCode::SetOwner => Request::SetOwner,
        RequestCode::ResetOwner => Request::ResetOwner,
        RequestCode::SetMemTable => mem_table(h, payload, fds)?,
        RequestCode::SetLogBase => {
            want_size(h, payload, 16)?;
            want_fds(h, &fds, 1)?;
            let area = LogArea {
                size: u64_at(payload, 0),
                offset: u64_at(payload, 8),
            };
            match fds.pop() {
                Some(fd) => Request::SetLogBase(area, fd),
                None => {
                    return Err(DecodeError::FdCount {
                        request: h.request,
                        got: 0,
                        expected: 1,
                    })
                }
            }
        }
        RequestCode::SetLogFd => {
            want_fds(h, &fds, 1)?;
            match fds.pop() {
                Some(fd) => Request::SetLogFd(fd),
                None => {
                    return Err(DecodeError::FdCount {
                        request: h.request,
                        got: 0,
                        expected: 1,
                    })
                }
            }
        }
        RequestCode::SetVringNum => Request::SetVringNum(state()?),
        RequestCode::SetVringAddr => {
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
        RequestCode::SetVringBase => Request::SetVringBase(state()?),
        RequestCode::GetVringBase => Request::GetVringBase(state()?),
        RequestCode::SetVringKick => Request::SetVringKick(vring_fd(h, u64_body()?, fds)?),
        RequestCode::SetVringCall => Request::SetVringCall(vring_fd(h, u64_body()?, fds)?),
        RequestCode::SetVringErr => Request::SetVringErr(vring_fd(h, u64_body()?, fds)?),
        RequestCode::GetProtocolFeatures => Request::GetProtocolFeatures,
        RequestCode::SetProtocolFeatures => Request::SetProtocolFeatures(u64_body()?),
        RequestCode::GetQueueNum => Request::GetQueueNum,
        RequestCode::SetVringEnable => Request::SetVringEnable(state()?),
        RequestCode::SendRarp => {
            let v = u64_body()?.to_le_bytes();
            Request::SendRarp([v[0], v[1], v[2], v[3], v[4], v[5]])
        }
        RequestCode::NetSetMtu => Request::NetSetMtu(u64_body()?),
        RequestCode::GetConfig => {
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
        RequestCode::ResetDevice => Request::ResetDevice,
        RequestCode::SetStatus => {
            let v = u64_body()?;
            if v > 0xff {
                return Err(DecodeError::Invalid {
                    request: h.request,
                    field: "status",
                    value: v,
                });
            }
            Request::SetStatus(v as u8)
        }
        RequestCode::GetStatus => Request::GetStatus,
    };
    Ok(Message { header, request })
}

/// `SET_MEM_TABLE`: a region count, padding, then one `RegionSpec` and one fd per region.
fn mem_table(h: &Header, payload: &[u8], fds: Vec<OwnedFd>) -> Result<Request, DecodeError> {
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
    Ok(Request::SetMemTable(regions, fds))
}

/// `SET_VRING_KICK/CALL/ERR`: the ring index and the NOFD bit in `v`, and one fd unless NOFD.
fn vring_fd(h: &Header, v: u64, mut fds: Vec<OwnedFd>) -> Result<VringFd, DecodeError> {
    if v & !(VRING_IDX_MASK | VRING_NOFD_MASK) != 0 {
        return Err(DecodeError::Invalid {
            request: h.request,
            field: "vring fd payload",
            value: v,
        });
    }
    let fd = if v & VRING_NOFD_MASK != 0 {
        want_fds(h, &fds, 0)?;
        None
    } else {
        want_fds(h, &fds, 1)?;
        fds.pop()
    };
    Ok(VringFd {
        index: (v & VRING_IDX_MASK) as u32,
        fd,
    })
}

/// Encodes a request (frontend side: the test frontend and fuzz seeds use it).
pub fn encode_request(request: RequestCode, need_reply: bool, payload: &[u8]) -> Vec<u8> {
    let flags = FLAG_VERSION_1 | if need_reply { FLAG_NEED_REPLY } else { 0 };
    let h = Header {
        request: request.into(),
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

/// Payload of `SET_LOG_BASE` (frontend side).
pub fn log_base_payload(area: &LogArea) -> Vec<u8> {
    let mut p = area.size.to_le_bytes().to_vec();
    p.extend_from_slice(&area.offset.to_le_bytes());
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

    fn hdr(request: impl Into<u32>, flags: u32, size: u32) -> Header {
        Header {
            request: request.into(),
            flags,
            size,
        }
    }

    fn memfd() -> OwnedFd {
        rustix::fs::memfd_create("codec", rustix::fs::MemfdFlags::CLOEXEC).unwrap()
    }

    #[test]
    fn header_round_trips_and_rejects_bad_version_reply_and_size() {
        let h = hdr(
            RequestCode::SetFeatures,
            FLAG_VERSION_1 | FLAG_NEED_REPLY,
            8,
        );
        let p = Header::parse(&h.to_bytes()).unwrap();
        assert_eq!(p, h);
        assert!(p.need_reply());
        assert_eq!(
            Header::parse(&hdr(1u32, 2, 0).to_bytes()),
            Err(DecodeError::Version(2))
        );
        assert_eq!(
            Header::parse(&hdr(1u32, 0, 0).to_bytes()),
            Err(DecodeError::Version(0))
        );
        assert_eq!(
            Header::parse(&hdr(1u32, 5, 0).to_bytes()),
            Err(DecodeError::ReplyFlag(1))
        );
        assert!(matches!(
            Header::parse(&hdr(1u32, 1, 1 << 20).to_bytes()),
            Err(DecodeError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn decodes_every_fixed_size_request() {
        let st = vring_state_payload(3, 256);
        let cases: Vec<(RequestCode, Vec<u8>)> = vec![
            (RequestCode::GetFeatures, vec![]),
            (RequestCode::SetFeatures, 5u64.to_le_bytes().to_vec()),
            (RequestCode::SetOwner, vec![]),
            (RequestCode::ResetOwner, vec![]),
            (RequestCode::SetVringNum, st.clone()),
            (RequestCode::SetVringBase, st.clone()),
            (RequestCode::GetVringBase, st.clone()),
            (RequestCode::SetVringEnable, st.clone()),
            (RequestCode::GetProtocolFeatures, vec![]),
            (
                RequestCode::SetProtocolFeatures,
                3u64.to_le_bytes().to_vec(),
            ),
            (RequestCode::GetQueueNum, vec![]),
            (RequestCode::SetStatus, 15u64.to_le_bytes().to_vec()),
            (RequestCode::GetStatus, vec![]),
            (RequestCode::ResetDevice, vec![]),
            (RequestCode::SendRarp, 0u64.to_le_bytes().to_vec()),
            (RequestCode::NetSetMtu, 1500u64.to_le_bytes().to_vec()),
            (
                RequestCode::SetVringKick,
                (2u64 | VRING_NOFD_MASK).to_le_bytes().to_vec(),
            ),
            (
                RequestCode::SetVringAddr,
                vring_addr_payload(&VringAddr {
                    index: 1,
                    desc: 0x1000,
                    ..Default::default()
                }),
            ),
            (
                RequestCode::GetConfig,
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
                .unwrap_or_else(|e| panic!("{c:?}: {e}"));
            assert_ne!(m.request.name(), "UNKNOWN", "{c:?}");
            assert_eq!(m.request.code(), Some(c));
        }
        match decode(hdr(RequestCode::SetVringNum, 1, 8), &st, vec![])
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
            decode(hdr(RequestCode::SetFeatures, 1, 4), &[0; 4], vec![]),
            Err(DecodeError::PayloadSize { .. })
        ));
        assert!(matches!(
            decode(hdr(RequestCode::SetVringAddr, 1, 39), &[0; 39], vec![]),
            Err(DecodeError::PayloadSize { .. })
        ));
        assert!(matches!(
            decode(hdr(RequestCode::GetFeatures, 1, 0), &[], vec![memfd()]),
            Err(DecodeError::FdCount { .. })
        ));
        // KICK without the NOFD bit needs exactly one fd.
        assert!(matches!(
            decode(hdr(RequestCode::SetVringKick, 1, 8), &[0; 8], vec![]),
            Err(DecodeError::FdCount { .. })
        ));
        assert!(matches!(
            decode(
                hdr(RequestCode::SetVringCall, 1, 8),
                &[0; 8],
                vec![memfd(), memfd()]
            ),
            Err(DecodeError::FdCount { .. })
        ));
        assert!(matches!(
            decode(
                hdr(RequestCode::SetVringCall, 1, 8),
                &0x1_0000u64.to_le_bytes(),
                vec![memfd()]
            ),
            Err(DecodeError::Invalid { .. })
        ));
        // Header size and actual payload disagree.
        assert!(matches!(
            decode(hdr(RequestCode::SetFeatures, 1, 8), &[0; 4], vec![]),
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
            hdr(RequestCode::SetMemTable, 1, p.len() as u32),
            &p,
            vec![memfd(), memfd()],
        )
        .unwrap();
        assert!(
            matches!(m.request, Request::SetMemTable(ref v, ref f) if v.len() == 2 && f.len() == 2)
        );
        assert!(matches!(
            decode(
                hdr(RequestCode::SetMemTable, 1, p.len() as u32),
                &p,
                vec![memfd()]
            ),
            Err(DecodeError::FdCount { .. })
        ));
        let mut bad = p.clone();
        bad[0] = 9;
        assert!(matches!(
            decode(
                hdr(RequestCode::SetMemTable, 1, bad.len() as u32),
                &bad,
                vec![]
            ),
            Err(DecodeError::Invalid { .. })
        ));
        bad[0] = 3;
        assert!(matches!(
            decode(
                hdr(RequestCode::SetMemTable, 1, bad.len() as u32),
                &bad,
                vec![memfd(), memfd(), memfd()]
            ),
            Err(DecodeError::PayloadSize { .. })
        ));
    }

    #[test]
    fn request_codes_round_trip_and_unknown_codes_are_none() {
        for &c in RequestCode::ALL {
            assert_eq!(RequestCode::from_u32(u32::from(c)), Some(c));
        }
        let mut names: Vec<&str> = RequestCode::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RequestCode::ALL.len(), "one name per code");
        // Codes of the spec this backend does not serve (SET_CONFIG) and codes of no
        // request at all.
        for c in [0, 25, 999, u32::MAX] {
            assert_eq!(RequestCode::from_u32(c), None, "{c}");
        }
    }

    #[test]
    fn set_log_base_needs_its_fd_and_a_16_byte_payload() {
        let p = log_base_payload(&LogArea {
            size: 4096,
            offset: 64,
        });
        let m = decode(hdr(RequestCode::SetLogBase, 1, 16), &p, vec![memfd()]).unwrap();
        assert!(matches!(
            m.request,
            Request::SetLogBase(
                LogArea {
                    size: 4096,
                    offset: 64
                },
                _
            )
        ));
        assert!(matches!(
            decode(hdr(RequestCode::SetLogBase, 1, 16), &p, vec![]),
            Err(DecodeError::FdCount { .. })
        ));
        assert!(matches!(
            decode(hdr(RequestCode::SetLogBase, 1, 8), &p[..8], vec![memfd()]),
            Err(DecodeError::PayloadSize { .. })
        ));
        let m = decode(hdr(RequestCode::SetLogFd, 1, 0), &[], vec![memfd()]).unwrap();
        assert!(matches!(m.request, Request::SetLogFd(_)));
        assert!(matches!(
            decode(hdr(RequestCode::SetLogFd, 1, 0), &[], vec![]),
            Err(DecodeError::FdCount { .. })
        ));
    }

    #[test]
    fn unknown_requests_decode_as_unknown() {
        let m = decode(hdr(999u32, 1, 3), &[1, 2, 3], vec![memfd()]).unwrap();
        assert!(matches!(m.request, Request::Unknown(999)));
        assert_eq!(m.request.code(), None);
        assert_eq!(m.request.name(), "UNKNOWN");
    }

    #[test]
    fn reply_encoding_sets_reply_flag_and_echoes_the_request() {
        let mut out = Vec::new();
        hdr(
            RequestCode::GetFeatures,
            FLAG_VERSION_1 | FLAG_NEED_REPLY,
            0,
        )
        .reply(&7u64.to_le_bytes(), &mut out);
        assert_eq!(out.len(), 20);
        assert_eq!(
            u32::from_le_bytes(out[0..4].try_into().unwrap()),
            u32::from(RequestCode::GetFeatures)
        );
        assert_eq!(
            u32::from_le_bytes(out[4..8].try_into().unwrap()),
            FLAG_VERSION_1 | FLAG_REPLY
        );
        assert_eq!(u64::from_le_bytes(out[12..20].try_into().unwrap()), 7);
        // A refused unknown request is answered under its own code.
        let mut out = Vec::new();
        hdr(999u32, FLAG_VERSION_1 | FLAG_NEED_REPLY, 0).reply(&1u64.to_le_bytes(), &mut out);
        assert_eq!(u32::from_le_bytes(out[0..4].try_into().unwrap()), 999);
    }
}
