//! Arbitrary DHCP messages: the view over any bytes (checked, then every accessor and the
//! option walk), and the same bytes as the payload of a DHCP request from a pod (Ethernet,
//! IPv4 and UDP headers built around them) through the pipeline, on the vif that answers DHCP
//! and the one without an address. Every packet is accounted for, and an answer is a well-formed
//! DHCP reply from the server port. Run (bounded):
//! `cargo +nightly fuzz run dhcp -- -max_total_time=60` from `vrouter/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vrouter::pipeline::{NoFlow, Pipeline, TxBatches};
use vrouter::wire::dhcp;
use vrouter::{PacketBuf, StatsRegistry, VecBuf};

#[path = "../common/checks.rs"]
mod checks;
#[path = "../common/tables.rs"]
mod tables;
use tables::tables;

struct Bed {
    stats: StatsRegistry,
    pipe: Pipeline<NoFlow>,
    out: TxBatches<VecBuf>,
}

/// `msg` as a DHCP request from pod 1's MAC: broadcast, or (`unicast`) to its gateway.
fn frame(msg: &[u8], unicast: bool) -> Vec<u8> {
    let udp_len = 8 + msg.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    let (dmac, dst) = if unicast {
        ([0x00, 0x00, 0x5e, 0x00, 0x01, 0x00], [198, 18, 1, 1])
    } else {
        ([0xff; 6], [255; 4])
    };
    f.extend_from_slice(&dmac);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 0x0a, 0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    if unicast {
        ip[12..16].copy_from_slice(&[198, 18, 1, 10]);
    }
    ip[16..20].copy_from_slice(&dst);
    let sum = ip
        .chunks(2)
        .fold(0u32, |a, w| a + u32::from(u16::from_be_bytes([w[0], w[1]])));
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&68u16.to_be_bytes());
    f.extend_from_slice(&67u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(msg);
    f
}

fuzz_target!(|data: &[u8]| {
    static BED: OnceLock<std::sync::Mutex<Bed>> = OnceLock::new();
    let Some((&how, msg)) = data.split_first() else {
        return;
    };
    if let Ok(p) = dhcp::Packet::new_checked(msg) {
        let _ = (
            p.op(),
            p.xid(),
            p.flags(),
            p.ciaddr(),
            p.chaddr(),
            p.giaddr(),
        );
        let _ = (
            p.message_type(),
            p.requested_ip(),
            p.server_id(),
            p.requests(121),
        );
        let walked: usize = p.options().map(|(_, v)| v.len() + 2).sum();
        assert!(walked <= msg.len() - dhcp::MIN_LEN);
    }
    let bed = BED.get_or_init(|| {
        let stats = StatsRegistry::default();
        let core = stats.new_core();
        std::sync::Mutex::new(Bed {
            stats,
            pipe: Pipeline::new(tables(), core, NoFlow),
            out: TxBatches::new(32),
        })
    });
    let mut bed = bed.lock().unwrap_or_else(|e| e.into_inner());
    let Bed { stats, pipe, out } = &mut *bed;
    out.clear();
    // Pod 1 answers DHCP, pod 2 has no address.
    let vif = 1 + u16::from(how & 1);
    let before = checks::Tally::read(stats, vif);
    pipe.process(vif, [VecBuf::from_frame(&frame(msg, how & 2 != 0))], out);
    checks::packets_accounted(out, 1, before, checks::Tally::read(stats, vif));
    for b in out.tx(1) {
        let d = b.data();
        assert_eq!(
            &d[34..38],
            &[0, 67, 0, 68],
            "from the server port to the client's"
        );
        let reply = dhcp::Packet::new_checked(&d[42..]).expect("the answer is DHCP");
        assert_eq!(reply.op(), dhcp::op::BOOTREPLY);
        assert!(matches!(
            reply.message_type(),
            Some(dhcp::message_type::OFFER | dhcp::message_type::ACK | dhcp::message_type::NAK)
        ));
    }
});
