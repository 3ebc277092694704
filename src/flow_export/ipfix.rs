//! IPFIX (RFC 7011) messages: one template per address family, data records of what a flow
//! did since its last record. Pure encoding; the exporter decides what and when.

use std::net::IpAddr;

/// IPFIX version number in the message header.
const VERSION: u16 = 10;
/// Set ids: templates, and the data sets of our two templates.
const TEMPLATE_SET: u16 = 2;
pub const TEMPLATE_V4: u16 = 256;
pub const TEMPLATE_V6: u16 = 257;
const MESSAGE_HEADER: usize = 16;
const SET_HEADER: usize = 4;
/// Largest message: fits one Ethernet frame with room for the IP and UDP headers.
pub const MAX_MESSAGE: usize = 1400;

/// Information elements (IANA id, length) of a record, after the addresses.
const COMMON: [(u16, u16); 12] = [
    (7, 2),   // sourceTransportPort
    (11, 2),  // destinationTransportPort
    (4, 1),   // protocolIdentifier
    (234, 4), // ingressVRFID
    (10, 4),  // ingressInterface
    (14, 4),  // egressInterface
    (2, 8),   // packetDeltaCount
    (1, 8),   // octetDeltaCount
    (152, 8), // flowStartMilliseconds
    (153, 8), // flowEndMilliseconds
    (136, 1), // flowEndReason
    (89, 1),  // forwardingStatus
];
/// IPv4 flows also carry their source-NAT translation (post = pre when not translated).
const V4_ADDRS: [(u16, u16); 6] = [
    (8, 4),   // sourceIPv4Address
    (12, 4),  // destinationIPv4Address
    (225, 4), // postNATSourceIPv4Address
    (226, 4), // postNATDestinationIPv4Address
    (227, 2), // postNAPTSourceTransportPort
    (228, 2), // postNAPTDestinationTransportPort
];
const V6_ADDRS: [(u16, u16); 2] = [(27, 16), (28, 16)];

/// Why a record was sent (flowEndReason, RFC 5102).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The flow aged out of the table.
    Idle = 1,
    /// Still running: a periodic record.
    Active = 2,
    /// TCP FIN or RST seen.
    EndOfFlow = 3,
    /// The flow was removed another way (a flush, its vif removed).
    Forced = 4,
}

/// One data record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub vrf: u32,
    pub in_vif: u32,
    pub out_vif: u32,
    pub packets: u64,
    pub bytes: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    pub reason: EndReason,
    /// The policy denied the flow.
    pub dropped: bool,
    /// The tuple as it left, if source NAT or a floating IP translated it (IPv4 only).
    pub translated: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr, u16, u16)>,
}

impl Record {
    fn template(&self) -> u16 {
        if self.src.is_ipv4() && self.dst.is_ipv4() {
            TEMPLATE_V4
        } else {
            TEMPLATE_V6
        }
    }

    fn len(&self) -> usize {
        let addrs: &[(u16, u16)] = if self.template() == TEMPLATE_V4 {
            &V4_ADDRS
        } else {
            &V6_ADDRS
        };
        addrs
            .iter()
            .chain(COMMON.iter())
            .map(|&(_, l)| usize::from(l))
            .sum::<usize>()
    }

    fn write(&self, out: &mut Vec<u8>) {
        let v6 = |a: IpAddr| match a {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        match (self.template(), self.src, self.dst) {
            (TEMPLATE_V4, IpAddr::V4(s), IpAddr::V4(d)) => {
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
                let (ps, pd, psp, pdp) = self.translated.unwrap_or((s, d, self.sport, self.dport));
                out.extend_from_slice(&ps.octets());
                out.extend_from_slice(&pd.octets());
                out.extend_from_slice(&psp.to_be_bytes());
                out.extend_from_slice(&pdp.to_be_bytes());
            }
            _ => {
                out.extend_from_slice(&v6(self.src));
                out.extend_from_slice(&v6(self.dst));
            }
        }
        out.extend_from_slice(&self.sport.to_be_bytes());
        out.extend_from_slice(&self.dport.to_be_bytes());
        out.push(self.proto);
        out.extend_from_slice(&self.vrf.to_be_bytes());
        out.extend_from_slice(&self.in_vif.to_be_bytes());
        out.extend_from_slice(&self.out_vif.to_be_bytes());
        out.extend_from_slice(&self.packets.to_be_bytes());
        out.extend_from_slice(&self.bytes.to_be_bytes());
        out.extend_from_slice(&self.start_ms.to_be_bytes());
        out.extend_from_slice(&self.end_ms.to_be_bytes());
        out.push(self.reason as u8);
        // RFC 7270 forwardingStatus: 0x40 forwarded (unknown reason), 0x82 dropped (ACL deny).
        out.push(if self.dropped { 0x82 } else { 0x40 });
    }
}

/// Builds IPFIX messages for one exporter (observation domain), numbering them as RFC 7011
/// asks: the sequence number counts the data records sent before each message.
pub struct Encoder {
    domain: u32,
    sequence: u32,
}

impl Encoder {
    pub fn new(domain: u32) -> Encoder {
        Encoder {
            domain,
            sequence: 0,
        }
    }

    /// A message holding both templates.
    pub fn templates(&mut self, export_secs: u32) -> Vec<u8> {
        let mut m = self.header_space();
        let start = m.len();
        m.extend_from_slice(&TEMPLATE_SET.to_be_bytes());
        m.extend_from_slice(&[0, 0]);
        for (id, addrs) in [(TEMPLATE_V4, &V4_ADDRS[..]), (TEMPLATE_V6, &V6_ADDRS[..])] {
            m.extend_from_slice(&id.to_be_bytes());
            m.extend_from_slice(&((addrs.len() + COMMON.len()) as u16).to_be_bytes());
            for (ie, len) in addrs.iter().chain(COMMON.iter()) {
                m.extend_from_slice(&ie.to_be_bytes());
                m.extend_from_slice(&len.to_be_bytes());
            }
        }
        let set_len = (m.len() - start) as u16;
        m[start + 2..start + 4].copy_from_slice(&set_len.to_be_bytes());
        self.finish(m, export_secs, 0)
    }

    /// Messages carrying `records`, each at most [`MAX_MESSAGE`] bytes, a data set per run of
    /// records of one template.
    pub fn data(&mut self, records: &[Record], export_secs: u32) -> Vec<Vec<u8>> {
        let mut messages = Vec::new();
        let mut m = self.header_space();
        let mut set: Option<(u16, usize)> = None;
        let mut count = 0u32;
        for r in records {
            let t = r.template();
            let need = r.len()
                + if set.is_some_and(|(st, _)| st == t) {
                    0
                } else {
                    SET_HEADER
                };
            if m.len() + need > MAX_MESSAGE && count > 0 {
                close_set(&mut m, set.take());
                messages.push(self.finish(m, export_secs, count));
                m = self.header_space();
                count = 0;
            }
            if set.is_none_or(|(st, _)| st != t) {
                close_set(&mut m, set.take());
                set = Some((t, m.len()));
                m.extend_from_slice(&t.to_be_bytes());
                m.extend_from_slice(&[0, 0]);
            }
            r.write(&mut m);
            count += 1;
        }
        if count > 0 {
            close_set(&mut m, set.take());
            messages.push(self.finish(m, export_secs, count));
        }
        messages
    }

    fn header_space(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(MAX_MESSAGE);
        m.resize(MESSAGE_HEADER, 0);
        m
    }

    /// Fills in the message header; `records` data records are in it.
    fn finish(&mut self, mut m: Vec<u8>, export_secs: u32, records: u32) -> Vec<u8> {
        let len = m.len() as u16;
        m[0..2].copy_from_slice(&VERSION.to_be_bytes());
        m[2..4].copy_from_slice(&len.to_be_bytes());
        m[4..8].copy_from_slice(&export_secs.to_be_bytes());
        m[8..12].copy_from_slice(&self.sequence.to_be_bytes());
        m[12..16].copy_from_slice(&self.domain.to_be_bytes());
        self.sequence = self.sequence.wrapping_add(records);
        m
    }
}

/// Writes the length of the set that started at `at`.
fn close_set(m: &mut [u8], set: Option<(u16, usize)>) {
    if let Some((_, at)) = set {
        let len = (m.len() - at) as u16;
        m[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u16, v6: bool) -> Record {
        Record {
            src: if v6 {
                "2001:db8::1".parse().unwrap()
            } else {
                "198.18.1.2".parse().unwrap()
            },
            dst: "198.18.2.2".parse().unwrap(),
            sport: 1000 + i,
            dport: 53,
            proto: 17,
            vrf: 1,
            in_vif: 1,
            out_vif: 2,
            packets: 10,
            bytes: 600,
            start_ms: 1_700_000_000_000,
            end_ms: 1_700_000_001_000,
            reason: EndReason::Idle,
            dropped: false,
            translated: None,
        }
    }

    #[test]
    fn templates_and_records_are_framed_as_rfc_7011_says() {
        let mut e = Encoder::new(7);
        let t = e.templates(1234);
        assert_eq!(&t[0..2], &[0, 10]);
        assert_eq!(usize::from(u16::from_be_bytes([t[2], t[3]])), t.len());
        assert_eq!(u32::from_be_bytes(t[12..16].try_into().unwrap()), 7);
        // Set 2 spans the rest; the v4 template has 14 fields.
        assert_eq!(&t[16..18], &[0, 2]);
        assert_eq!(
            usize::from(u16::from_be_bytes([t[18], t[19]])),
            t.len() - 16
        );
        assert_eq!(
            &t[20..24],
            &[1, 0, 0, 18],
            "the v4 template: 18 fields, its NAT translation included"
        );

        // 40 records (v4 then v6) need several messages; sequence numbers count records.
        let records: Vec<Record> = (0..40).map(|i| record(i, i >= 20)).collect();
        let ms = e.data(&records, 1234);
        assert!(ms.len() > 1);
        let mut seq = 0u32;
        let mut seen = 0;
        for m in &ms {
            assert!(m.len() <= MAX_MESSAGE);
            assert_eq!(usize::from(u16::from_be_bytes([m[2], m[3]])), m.len());
            assert_eq!(u32::from_be_bytes(m[8..12].try_into().unwrap()), seq);
            // Walk the sets: their lengths tile the message exactly.
            let mut at = 16;
            let mut n = 0;
            while at < m.len() {
                let id = u16::from_be_bytes([m[at], m[at + 1]]);
                let len = usize::from(u16::from_be_bytes([m[at + 2], m[at + 3]]));
                let rec = if id == TEMPLATE_V4 { 20 + 51 } else { 32 + 51 };
                assert_eq!((len - 4) % rec, 0, "set {id} holds whole records");
                n += (len - 4) / rec;
                at += len;
            }
            assert_eq!(at, m.len());
            seq += n as u32;
            seen += n;
        }
        assert_eq!(seen, 40);

        // A translated record carries its translation after the addresses; an untranslated
        // one its own tuple there.
        let mut r = record(0, false);
        let mut plain = Vec::new();
        r.write(&mut plain);
        assert_eq!(plain.len(), r.len(), "the length messages are cut by");
        let mut v6 = Vec::new();
        record(0, true).write(&mut v6);
        assert_eq!(v6.len(), record(0, true).len());
        assert_eq!(
            &plain[8..20],
            &[198, 18, 1, 2, 198, 18, 2, 2, 0x03, 0xe8, 0, 53]
        );
        r.translated = Some((
            "203.0.113.1".parse().unwrap(),
            r.dst.to_string().parse().unwrap(),
            40000,
            53,
        ));
        let mut nat = Vec::new();
        r.write(&mut nat);
        assert_eq!(
            &nat[8..20],
            &[203, 0, 113, 1, 198, 18, 2, 2, 0x9c, 0x40, 0, 53]
        );
    }
}
