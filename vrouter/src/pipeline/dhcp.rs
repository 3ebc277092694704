//! The DHCP server each pod vif has in the vrouter (RFC 2131): a DISCOVER gets an OFFER of the
//! vif's address, a REQUEST for it an ACK (for another address a NAK), an INFORM an ACK with the
//! configuration but no lease; RELEASE and DECLINE change nothing (the address is the vif's,
//! fixed by its configuration). The answer is written over the request in its own buffer and
//! leaves by the vif it came from, like an ARP reply: nothing is allocated, and the packet is
//! received once and sent once.
//!
//! What a vif hands out is its [`Lease`] in the topology (its `ip`, `prefix-len`, gateway, DNS
//! servers, MTU, classless static routes and lease time). The gateway is the server identifier
//! and the replies' source address; the vrouter answers ARP for it (see `ingress`).

use super::reply::answer_ethernet;
use crate::buf::PacketBuf;
use crate::meta::{PacketMeta, L3};
use crate::offload::Offload;
use crate::stats::DropReason;
use crate::wire::dhcp::{self, message_type as mt, Lease, Reply};
use crate::wire::{checksum, ethernet, ipv4, udp, MacAddr};
use std::net::Ipv4Addr;

/// TTL of the vrouter's DHCP replies.
const REPLY_TTL: u8 = 64;

/// Whether a pod's packet is DHCP for the vrouter's server: UDP from the client port to the
/// server port, broadcast or to the vif's gateway (a renewal). A unicast DHCP packet to any
/// other address is routed like other traffic (a server elsewhere).
#[inline(always)]
pub(super) fn for_server(m: &PacketMeta, lease: Option<&Lease>) -> bool {
    m.l3 == L3::Ipv4
        && m.proto == ipv4::proto::UDP
        && m.dport == dhcp::SERVER_PORT
        && m.sport == dhcp::CLIENT_PORT
        && !m.fragment
        && (m.dst_v4() == u32::MAX || lease.is_some_and(|l| m.dst_v4() == u32::from(l.gateway)))
}

/// What answering a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The buffer holds the reply.
    Replied,
    /// Nothing to answer (counted as `dhcp_ignored`).
    Ignored,
}

/// Answer the DHCP request in `buf` (UDP at `m.l4_off`) from `lease`, as `mac`: the reply
/// replaces the request in the buffer.
pub fn answer<B: PacketBuf>(
    buf: &mut B,
    m: &PacketMeta,
    lease: &Lease,
    mac: MacAddr,
) -> Result<Answer, DropReason> {
    let l3 = usize::from(m.l3_off);
    let l4 = usize::from(m.l4_off);
    let data = buf.data();
    let ip_end = l3 + usize::from(m.l3_len);
    let u = udp::Packet::new_checked(data.get(l4..ip_end.min(data.len())).unwrap_or_default())?;
    let req = dhcp::Packet::new_checked(u.payload())?;
    if req.op() != dhcp::op::BOOTREQUEST {
        return Ok(Answer::Ignored);
    }
    let asker_mac = ethernet::Frame::new_checked(data)?.src();
    let ciaddr = req.ciaddr();
    let (message_type, yiaddr) = match req.message_type() {
        Some(mt::DISCOVER) => (mt::OFFER, lease.address),
        Some(mt::REQUEST) => {
            if req.server_id().is_some_and(|s| s != lease.gateway) {
                // The client took another server's offer.
                return Ok(Answer::Ignored);
            }
            // SELECTING / INIT-REBOOT name the address in option 50; RENEWING and
            // REBINDING in ciaddr (RFC 2131 section 4.3.2).
            let wanted = req.requested_ip().unwrap_or(ciaddr);
            if wanted == lease.address {
                (mt::ACK, lease.address)
            } else {
                (mt::NAK, Ipv4Addr::UNSPECIFIED)
            }
        }
        Some(mt::INFORM) => (mt::ACK, Ipv4Addr::UNSPECIFIED),
        _ => return Ok(Answer::Ignored),
    };
    let inform = req.message_type() == Some(mt::INFORM);
    let nak = message_type == mt::NAK;
    let reply = Reply {
        message_type,
        xid: req.xid(),
        flags: req.flags(),
        htype: req.htype(),
        hlen: req.hlen(),
        chaddr: req.chaddr(),
        ciaddr: if nak { Ipv4Addr::UNSPECIFIED } else { ciaddr },
        yiaddr,
        giaddr: req.giaddr(),
        server_id: lease.gateway,
        lease: (!nak).then_some(lease),
        with_lease_time: !inform,
        with_routes: req.requests(dhcp::opt::CLASSLESS_STATIC_ROUTES),
    };
    // Where the answer goes (RFC 2131 section 4.1, no relay): a NAK to everyone; to a client
    // that has its address (renewing, INFORM), to that address; to one that asked for
    // broadcast, broadcast; otherwise to the offered address at the client's MAC.
    let broadcast = (Ipv4Addr::BROADCAST, MacAddr::BROADCAST);
    let (dst, dst_mac) = if nak {
        broadcast
    } else if !ciaddr.is_unspecified() {
        (ciaddr, asker_mac)
    } else if reply.flags & dhcp::FLAG_BROADCAST != 0 {
        broadcast
    } else {
        (yiaddr, asker_mac)
    };

    let msg_len = reply.buffer_len();
    let udp_len = udp::HEADER_LEN + msg_len;
    let ip = ipv4::Repr {
        src: lease.gateway,
        dst,
        protocol: ipv4::proto::UDP,
        payload_len: udp_len,
        ttl: REPLY_TTL,
        ident: 0,
        dont_frag: false,
        dscp_ecn: 0,
    };
    let want = l3 + ip.buffer_len() + udp_len;
    // Only the first segment is kept: the reply is written there.
    let have = buf.len();
    buf.truncate(have).map_err(|_| DropReason::Truncated)?;
    buf.set_offload(Offload::NONE);
    if have > want {
        buf.truncate(want).map_err(|_| DropReason::Truncated)?;
    } else if have < want {
        buf.append(want - have).map_err(|_| DropReason::Truncated)?;
    }
    let (eth, rest) = buf.data_mut().split_at_mut(l3);
    answer_ethernet(eth, Some(dst_mac), mac)?;
    let (iph, dgram) = rest.split_at_mut(ip.buffer_len());
    ip.emit(&mut ipv4::Packet::new_unchecked(iph));
    let (udph, msg) = dgram.split_at_mut(udp::HEADER_LEN);
    reply.emit(msg)?;
    let mut u = udp::Packet::new_unchecked(&mut *udph);
    udp::Repr {
        src_port: dhcp::SERVER_PORT,
        dst_port: dhcp::CLIENT_PORT,
        payload_len: msg_len,
    }
    .emit(&mut u);
    let pseudo = checksum::pseudo_v4(
        lease.gateway.octets(),
        dst.octets(),
        ipv4::proto::UDP,
        udp_len as u16,
    );
    let sum = !checksum::fold(checksum::sum(checksum::sum(pseudo, udph), msg));
    // A computed zero goes as all ones: zero means "no checksum" (RFC 768).
    let sum = if sum == 0 { 0xffff } else { sum };
    udp::Packet::new_unchecked(&mut *udph).set_checksum(sum);
    Ok(Answer::Replied)
}
