//! DHCP messages (RFC 2131) in their BOOTP framing (RFC 951), with the options vrouterd reads and
//! writes (RFC 2132, classless static routes RFC 3442).
//!
//! [`Packet`] is a view of a UDP payload: `new_checked` checks the fixed part, the magic cookie
//! and that the options area is a well-formed sequence of code / length / value up to `END` (or
//! the end of the buffer), after which [`Packet::options`] and the option getters are infallible.
//! Options overloaded into `sname` / `file` (option 52) are not read: a request that needs them
//! carries nothing vrouterd answers from. [`Reply`] is what vrouterd sends, written by
//! [`Reply::emit`] into a buffer of at least [`Reply::buffer_len`] bytes.

use super::field::{check_len, view};
use super::WireError;
use arrayvec::ArrayVec;
use std::net::Ipv4Addr;

pub mod field {
    use crate::wire::field::{Field, Rest};
    pub const OP: Field = 0..1;
    pub const HTYPE: Field = 1..2;
    pub const HLEN: Field = 2..3;
    pub const HOPS: Field = 3..4;
    pub const XID: Field = 4..8;
    pub const SECS: Field = 8..10;
    pub const FLAGS: Field = 10..12;
    pub const CIADDR: Field = 12..16;
    pub const YIADDR: Field = 16..20;
    pub const SIADDR: Field = 20..24;
    pub const GIADDR: Field = 24..28;
    pub const CHADDR: Field = 28..44;
    pub const SNAME: Field = 44..108;
    pub const FILE: Field = 108..236;
    pub const MAGIC: Field = 236..240;
    pub const OPTIONS: Rest = 240..;
}

/// The fixed part and the magic cookie: the least a DHCP message is.
pub const MIN_LEN: usize = field::OPTIONS.start;
/// The least a BOOTP message sent is (RFC 1542 section 2.1): replies are padded to it.
pub const BOOTP_MIN_LEN: usize = 300;
pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
pub const MAGIC_COOKIE: u32 = 0x6382_5363;
/// `flags`: the client cannot take unicast before it has its address (RFC 2131 section 2).
pub const FLAG_BROADCAST: u16 = 0x8000;
/// `htype` of Ethernet, whose `hlen` is 6.
pub const HTYPE_ETHERNET: u8 = 1;
/// A lease time that never ends (RFC 2131 section 3.3).
pub const INFINITE_LEASE: u32 = u32::MAX;

pub mod op {
    pub const BOOTREQUEST: u8 = 1;
    pub const BOOTREPLY: u8 = 2;
}

/// Option 53's values.
pub mod message_type {
    pub const DISCOVER: u8 = 1;
    pub const OFFER: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const DECLINE: u8 = 4;
    pub const ACK: u8 = 5;
    pub const NAK: u8 = 6;
    pub const RELEASE: u8 = 7;
    pub const INFORM: u8 = 8;
}

/// Option codes.
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS_SERVERS: u8 = 6;
    pub const INTERFACE_MTU: u8 = 26;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const CLASSLESS_STATIC_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

/// At most this many DNS servers go in a reply.
pub const MAX_DNS: usize = 4;
/// At most this many classless static routes go in a reply (the default route through the
/// gateway, added when routes are sent, comes on top): 17 routes of at most 9 bytes fit one
/// option of 255.
pub const MAX_ROUTES: usize = 16;

view! {
    /// A DHCP / BOOTP message (a UDP payload).
    pub struct Packet;
    op: u8 = field::OP;
    htype: u8 = field::HTYPE;
    hlen: u8 = field::HLEN;
    hops: u8 = field::HOPS;
    xid: u32 = field::XID;
    secs: u16 = field::SECS;
    flags: u16 = field::FLAGS;
    ciaddr: Ipv4Addr = field::CIADDR;
    yiaddr: Ipv4Addr = field::YIADDR;
    siaddr: Ipv4Addr = field::SIADDR;
    giaddr: Ipv4Addr = field::GIADDR;
    magic: u32 = field::MAGIC;
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// The fixed part is there, the cookie is DHCP's, and every option up to `END` (or the end
    /// of the buffer) lies within the buffer.
    pub fn check(&self) -> Result<(), WireError> {
        let b = self.buf.as_ref();
        check_len(b, MIN_LEN)?;
        if self.magic() != MAGIC_COOKIE {
            return Err(WireError::Malformed);
        }
        let mut rest = &b[MIN_LEN..];
        while let Some((&code, tail)) = rest.split_first() {
            match code {
                opt::END => return Ok(()),
                opt::PAD => rest = tail,
                _ => {
                    let (&len, tail) = tail.split_first().ok_or(WireError::Truncated)?;
                    rest = tail.get(usize::from(len)..).ok_or(WireError::Truncated)?;
                }
            }
        }
        Ok(())
    }

    /// The 16 bytes of `chaddr`.
    pub fn chaddr(&self) -> [u8; 16] {
        super::field::array(&self.buf.as_ref()[field::CHADDR])
    }

    /// The options, `PAD` skipped, up to `END`.
    pub fn options(&self) -> Options<'_> {
        Options {
            rest: &self.buf.as_ref()[field::OPTIONS],
        }
    }

    /// The first option `code`'s value.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options().find(|&(c, _)| c == code).map(|(_, v)| v)
    }

    /// Option 53, if present and one byte long.
    pub fn message_type(&self) -> Option<u8> {
        match self.option(opt::MESSAGE_TYPE)? {
            [t] => Some(*t),
            _ => None,
        }
    }

    /// Option 50, if present and four bytes long.
    pub fn requested_ip(&self) -> Option<Ipv4Addr> {
        self.address_option(opt::REQUESTED_IP)
    }

    /// Option 54, if present and four bytes long.
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.address_option(opt::SERVER_ID)
    }

    /// Whether the parameter request list (option 55) names `code`.
    pub fn requests(&self, code: u8) -> bool {
        self.option(opt::PARAMETER_REQUEST_LIST)
            .is_some_and(|list| list.contains(&code))
    }

    fn address_option(&self, code: u8) -> Option<Ipv4Addr> {
        let v: [u8; 4] = self.option(code)?.try_into().ok()?;
        Some(Ipv4Addr::from(v))
    }
}

/// The options of a checked [`Packet`]: `(code, value)`.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Options<'a> {
    type Item = (u8, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&code, tail) = self.rest.split_first()?;
            match code {
                opt::END => {
                    self.rest = &[];
                    return None;
                }
                opt::PAD => self.rest = tail,
                _ => {
                    // Checked, but stop rather than panic on a buffer that was not.
                    let Some((&len, tail)) = tail.split_first() else {
                        self.rest = &[];
                        return None;
                    };
                    let len = usize::from(len);
                    if tail.len() < len {
                        self.rest = &[];
                        return None;
                    }
                    let (value, rest) = tail.split_at(len);
                    self.rest = rest;
                    return Some((code, value));
                }
            }
        }
    }
}

/// One classless static route (RFC 3442): `prefix/len` via `router` (0.0.0.0: on the link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub prefix: Ipv4Addr,
    pub len: u8,
    pub router: Ipv4Addr,
}

impl Route {
    /// Bytes of its encoding: width, the significant octets of the prefix, the router.
    pub const fn encoded_len(&self) -> usize {
        let len = if self.len > 32 { 32 } else { self.len };
        1 + (len as usize).div_ceil(8) + 4
    }
}

/// What a lease says besides the address: the configuration of one vif.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// The pod's gateway: also the server identifier and the replies' source.
    pub gateway: Ipv4Addr,
    pub dns: ArrayVec<Ipv4Addr, MAX_DNS>,
    /// Interface MTU (option 26), if any.
    pub mtu: Option<u16>,
    pub routes: ArrayVec<Route, MAX_ROUTES>,
    /// Seconds, or [`INFINITE_LEASE`].
    pub lease_time: u32,
}

impl Lease {
    pub fn subnet_mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(prefix_mask(self.prefix_len))
    }
}

/// The netmask of a prefix length (lengths past 32 count as 32).
pub fn prefix_mask(len: u8) -> u32 {
    match len {
        0 => 0,
        l => u32::MAX << (32 - u32::from(l.min(32))),
    }
}

/// A reply as values: the request's identifiers and what to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    /// OFFER, ACK or NAK.
    pub message_type: u8,
    pub xid: u32,
    pub flags: u16,
    pub htype: u8,
    pub hlen: u8,
    pub chaddr: [u8; 16],
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub server_id: Ipv4Addr,
    /// The configuration to hand out (none in a NAK).
    pub lease: Option<&'a Lease>,
    /// Send the lease time (not in an answer to INFORM, RFC 2131 section 4.3.5).
    pub with_lease_time: bool,
    /// Send the classless static routes (the client asked for option 121).
    pub with_routes: bool,
}

impl Reply<'_> {
    /// The routes option's length (without code and length bytes), 0 when none is sent: the
    /// configured routes and, since a client that takes them ignores option 3 (RFC 3442), the
    /// default route through the gateway.
    fn routes_len(&self) -> usize {
        match self.lease {
            Some(l) if self.with_routes && !l.routes.is_empty() => {
                l.routes.iter().map(Route::encoded_len).sum::<usize>() + 5
            }
            _ => 0,
        }
    }

    fn options_len(&self) -> usize {
        // Message type and server id, and END.
        let mut n = 3 + 6 + 1;
        if let Some(l) = self.lease {
            n += 6 + 6; // subnet mask, router
            if self.with_lease_time {
                n += 6;
                if l.lease_time != INFINITE_LEASE {
                    n += 12; // T1, T2
                }
            }
            if !l.dns.is_empty() {
                n += 2 + 4 * l.dns.len();
            }
            if l.mtu.is_some() {
                n += 4;
            }
            let r = self.routes_len();
            if r > 0 {
                n += 2 + r;
            }
        }
        n
    }

    /// Bytes [`Reply::emit`] writes: the message, padded to [`BOOTP_MIN_LEN`].
    pub fn buffer_len(&self) -> usize {
        (MIN_LEN + self.options_len()).max(BOOTP_MIN_LEN)
    }

    /// Writes the reply into the first [`Reply::buffer_len`] bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let len = self.buffer_len();
        check_len(buf, len)?;
        let b = &mut buf[..len];
        b.fill(0);
        b[field::OP][0] = op::BOOTREPLY;
        b[field::HTYPE][0] = self.htype;
        b[field::HLEN][0] = self.hlen;
        b[field::XID].copy_from_slice(&self.xid.to_be_bytes());
        b[field::FLAGS].copy_from_slice(&self.flags.to_be_bytes());
        b[field::CIADDR].copy_from_slice(&self.ciaddr.octets());
        b[field::YIADDR].copy_from_slice(&self.yiaddr.octets());
        b[field::GIADDR].copy_from_slice(&self.giaddr.octets());
        b[field::CHADDR].copy_from_slice(&self.chaddr);
        b[field::MAGIC].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        let mut w = Writer {
            b: &mut b[field::OPTIONS],
            at: 0,
        };
        w.put(opt::MESSAGE_TYPE, &[self.message_type]);
        w.put(opt::SERVER_ID, &self.server_id.octets());
        if let Some(l) = self.lease {
            if self.with_lease_time {
                w.put(opt::LEASE_TIME, &l.lease_time.to_be_bytes());
                if l.lease_time != INFINITE_LEASE {
                    // RFC 2131 section 4.4.5: T1 = 0.5, T2 = 0.875 of the lease.
                    let t1 = l.lease_time / 2;
                    let t2 = (u64::from(l.lease_time) * 7 / 8) as u32;
                    w.put(opt::RENEWAL_TIME, &t1.to_be_bytes());
                    w.put(opt::REBINDING_TIME, &t2.to_be_bytes());
                }
            }
            w.put(opt::SUBNET_MASK, &l.subnet_mask().octets());
            w.put(opt::ROUTER, &l.gateway.octets());
            if !l.dns.is_empty() {
                w.head(opt::DNS_SERVERS, 4 * l.dns.len());
                for d in &l.dns {
                    w.raw(&d.octets());
                }
            }
            if let Some(mtu) = l.mtu {
                w.put(opt::INTERFACE_MTU, &mtu.to_be_bytes());
            }
            let r = self.routes_len();
            if r > 0 {
                w.head(opt::CLASSLESS_STATIC_ROUTES, r);
                let default = Route {
                    prefix: Ipv4Addr::UNSPECIFIED,
                    len: 0,
                    router: l.gateway,
                };
                for route in l.routes.iter().chain(std::iter::once(&default)) {
                    let len = route.len.min(32);
                    w.raw(&[len]);
                    w.raw(&route.prefix.octets()[..usize::from(len).div_ceil(8)]);
                    w.raw(&route.router.octets());
                }
            }
        }
        w.raw(&[opt::END]);
        Ok(())
    }
}

/// Writes options into a buffer [`Reply::options_len`] sized.
struct Writer<'a> {
    b: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn raw(&mut self, v: &[u8]) {
        // Sized by options_len; a short buffer would have been refused by emit's length check.
        if let Some(d) = self.b.get_mut(self.at..self.at + v.len()) {
            d.copy_from_slice(v);
        }
        self.at += v.len();
    }
    fn head(&mut self, code: u8, len: usize) {
        self.raw(&[code, len as u8]);
    }
    fn put(&mut self, code: u8, v: &[u8]) {
        self.head(code, v.len());
        self.raw(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];

    /// A request as a client writes it, built byte by byte here (not by the code under test).
    fn request(msg_type: u8, extra: &[&[u8]]) -> Vec<u8> {
        let mut b = vec![0u8; MIN_LEN];
        b[0] = op::BOOTREQUEST;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        b[10] = 0x80;
        b[28..34].copy_from_slice(&MAC);
        b[236..240].copy_from_slice(&[99, 130, 83, 99]);
        b.extend_from_slice(&[53, 1, msg_type]);
        for o in extra {
            b.extend_from_slice(o);
        }
        b.push(255);
        b.resize(300, 0);
        b
    }

    fn lease() -> Lease {
        Lease {
            address: Ipv4Addr::new(198, 18, 1, 2),
            prefix_len: 24,
            gateway: Ipv4Addr::new(198, 18, 1, 1),
            dns: [Ipv4Addr::new(192, 0, 2, 53), Ipv4Addr::new(192, 0, 2, 54)]
                .into_iter()
                .collect(),
            mtu: Some(1400),
            routes: [
                Route {
                    prefix: Ipv4Addr::new(203, 0, 113, 0),
                    len: 24,
                    router: Ipv4Addr::new(198, 18, 1, 1),
                },
                Route {
                    prefix: Ipv4Addr::new(198, 51, 100, 128),
                    len: 25,
                    router: Ipv4Addr::new(198, 18, 1, 3),
                },
            ]
            .into_iter()
            .collect(),
            lease_time: 3600,
        }
    }

    #[test]
    fn a_request_is_read_field_by_field() {
        let b = request(
            message_type::REQUEST,
            &[
                &[50, 4, 198, 18, 1, 2],
                &[54, 4, 198, 18, 1, 1],
                &[55, 3, 1, 3, 121],
            ],
        );
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.op(), op::BOOTREQUEST);
        assert_eq!((p.htype(), p.hlen(), p.hops()), (1, 6, 0));
        assert_eq!(p.xid(), 0x1234_5678);
        assert_eq!(p.flags(), FLAG_BROADCAST);
        assert_eq!(p.secs(), 0);
        assert_eq!(&p.chaddr()[..6], &MAC);
        assert_eq!(p.message_type(), Some(message_type::REQUEST));
        assert_eq!(p.requested_ip(), Some(Ipv4Addr::new(198, 18, 1, 2)));
        assert_eq!(p.server_id(), Some(Ipv4Addr::new(198, 18, 1, 1)));
        assert!(p.requests(opt::CLASSLESS_STATIC_ROUTES) && !p.requests(opt::INTERFACE_MTU));
        assert_eq!(
            (p.ciaddr(), p.yiaddr(), p.siaddr(), p.giaddr()),
            (
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED
            )
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        let b = request(message_type::DISCOVER, &[]);
        assert_eq!(
            Packet::new_checked(&b[..MIN_LEN - 1]).unwrap_err(),
            WireError::Truncated
        );
        let mut bad = b.clone();
        bad[236] = 0;
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::Malformed
        );
        // An option whose length runs past the end.
        let mut cut = b[..MIN_LEN].to_vec();
        cut.extend_from_slice(&[53, 1, 1, 55, 9, 1, 3]);
        assert_eq!(
            Packet::new_checked(&cut[..]).unwrap_err(),
            WireError::Truncated
        );
        // A code with no length byte.
        let mut cut = b[..MIN_LEN].to_vec();
        cut.push(61);
        assert_eq!(
            Packet::new_checked(&cut[..]).unwrap_err(),
            WireError::Truncated
        );
        // No END but the options fill the buffer exactly: fine.
        let mut open = b[..MIN_LEN].to_vec();
        open.extend_from_slice(&[0, 0, 53, 1, 3]);
        let p = Packet::new_checked(&open[..]).unwrap();
        assert_eq!(p.message_type(), Some(3));
        // A message type of the wrong length is no message type.
        let mut two = b[..MIN_LEN].to_vec();
        two.extend_from_slice(&[53, 2, 1, 1, 255]);
        assert_eq!(Packet::new_checked(&two[..]).unwrap().message_type(), None);
    }

    /// The reply's options, read back by hand from the bytes (RFC 2132's layout), not with
    /// the view under test.
    fn options_by_hand(b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut i = MIN_LEN;
        while b[i] != 255 {
            if b[i] == 0 {
                i += 1;
                continue;
            }
            let len = usize::from(b[i + 1]);
            out.push((b[i], b[i + 2..i + 2 + len].to_vec()));
            i += 2 + len;
        }
        out
    }

    #[test]
    fn an_ack_carries_the_lease_as_rfc_2132_and_3442_lay_it_out() {
        let l = lease();
        let mut chaddr = [0u8; 16];
        chaddr[..6].copy_from_slice(&MAC);
        let r = Reply {
            message_type: message_type::ACK,
            xid: 0xdead_beef,
            flags: FLAG_BROADCAST,
            htype: 1,
            hlen: 6,
            chaddr,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: l.address,
            giaddr: Ipv4Addr::UNSPECIFIED,
            server_id: l.gateway,
            lease: Some(&l),
            with_lease_time: true,
            with_routes: true,
        };
        let mut b = vec![0xaa; r.buffer_len() + 10];
        r.emit(&mut b).unwrap();
        let b = &b[..r.buffer_len()];
        assert!(b.len() >= BOOTP_MIN_LEN);
        assert_eq!(b[0], 2, "BOOTREPLY");
        assert_eq!(&b[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&b[10..12], &[0x80, 0]);
        assert_eq!(&b[16..20], &[198, 18, 1, 2], "yiaddr");
        assert_eq!(&b[28..34], &MAC);
        assert!(b[44..236].iter().all(|&x| x == 0), "sname and file empty");
        assert_eq!(&b[236..240], &[99, 130, 83, 99]);
        let opts = options_by_hand(b);
        let want: Vec<(u8, Vec<u8>)> = vec![
            (53, vec![5]),
            (54, vec![198, 18, 1, 1]),
            (51, 3600u32.to_be_bytes().to_vec()),
            (58, 1800u32.to_be_bytes().to_vec()),
            (59, 3150u32.to_be_bytes().to_vec()),
            (1, vec![255, 255, 255, 0]),
            (3, vec![198, 18, 1, 1]),
            (6, vec![192, 0, 2, 53, 192, 0, 2, 54]),
            (26, vec![0x05, 0x78]),
            (
                121,
                vec![
                    24, 203, 0, 113, 198, 18, 1, 1, // 203.0.113.0/24 via .1
                    25, 198, 51, 100, 128, 198, 18, 1, 3, // 198.51.100.128/25 via .3
                    0, 198, 18, 1, 1, // default via the gateway
                ],
            ),
        ];
        assert_eq!(opts, want);
        // And the view reads its own output the same way.
        let p = Packet::new_checked(b).unwrap();
        assert_eq!(p.message_type(), Some(message_type::ACK));
        assert_eq!(p.server_id(), Some(l.gateway));
        assert_eq!(p.options().count(), want.len());
    }

    #[test]
    fn a_nak_has_no_lease_and_no_routes_unless_asked() {
        let r = Reply {
            message_type: message_type::NAK,
            xid: 1,
            flags: 0,
            htype: 1,
            hlen: 6,
            chaddr: [0; 16],
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            server_id: Ipv4Addr::new(198, 18, 1, 1),
            lease: None,
            with_lease_time: true,
            with_routes: true,
        };
        let mut b = vec![0; r.buffer_len()];
        r.emit(&mut b).unwrap();
        assert_eq!(b.len(), BOOTP_MIN_LEN);
        assert_eq!(
            options_by_hand(&b),
            vec![(53, vec![6]), (54, vec![198, 18, 1, 1])]
        );
        let l = lease();
        let offer = Reply {
            message_type: message_type::OFFER,
            lease: Some(&l),
            with_routes: false,
            ..r
        };
        let mut b = vec![0; offer.buffer_len()];
        offer.emit(&mut b).unwrap();
        assert!(options_by_hand(&b).iter().all(|(c, _)| *c != 121));
        assert_eq!(
            offer.emit(&mut b[..offer.buffer_len() - 1]),
            Err(WireError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn any_bytes_check_or_refuse_and_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut b = b;
            if b.len() >= MIN_LEN {
                b[236..240].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            }
            if let Ok(p) = Packet::new_checked(&b[..]) {
                let _ = (p.message_type(), p.requested_ip(), p.server_id(), p.requests(121));
                let total: usize = p.options().map(|(_, v)| v.len() + 2).sum();
                prop_assert!(total <= b.len() - MIN_LEN);
            }
        }

        #[test]
        fn every_reply_reads_back(
            routes in proptest::collection::vec((any::<[u8; 4]>(), 0u8..=32, any::<[u8; 4]>()), 0..=MAX_ROUTES),
            dns in proptest::collection::vec(any::<[u8; 4]>(), 0..=MAX_DNS),
            lease_time in any::<u32>(),
            with_routes in any::<bool>(),
        ) {
            let mut l = lease();
            l.routes = routes.iter().map(|&(p, len, r)| Route {
                prefix: Ipv4Addr::from(p), len, router: Ipv4Addr::from(r),
            }).collect();
            l.dns = dns.iter().map(|&d| Ipv4Addr::from(d)).collect();
            l.lease_time = lease_time;
            let r = Reply {
                message_type: message_type::OFFER, xid: 7, flags: 0, htype: 1, hlen: 6,
                chaddr: [1; 16], ciaddr: Ipv4Addr::UNSPECIFIED, yiaddr: l.address,
                giaddr: Ipv4Addr::UNSPECIFIED, server_id: l.gateway, lease: Some(&l),
                with_lease_time: true, with_routes,
            };
            let mut b = vec![0; r.buffer_len()];
            r.emit(&mut b).unwrap();
            let opts = options_by_hand(&b);
            let p = Packet::new_checked(&b[..]).unwrap();
            prop_assert_eq!(p.options().count(), opts.len());
            let want = if with_routes && !l.routes.is_empty() {
                l.routes.iter().map(Route::encoded_len).sum::<usize>() + 5
            } else { 0 };
            let got = p.option(121).map_or(0, <[u8]>::len);
            prop_assert_eq!(got, want);
            prop_assert!(want <= 255);
        }
    }
}
