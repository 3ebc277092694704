//! What every pipeline target checks after a `process` call.

use vrouter::pipeline::TxBatches;
use vrouter::PacketBuf;

/// Each of the `n` packets just processed landed in exactly one place (a vif's queue, the
/// host queue or the dropped list), and whatever leaves through a vif still has an Ethernet
/// header.
pub fn packets_accounted<B: PacketBuf>(out: &TxBatches<B>, n: usize) {
    let sent: usize = out.touched().iter().map(|&v| out.tx(v).len()).sum();
    assert_eq!(
        sent + out.host.len() + out.dropped.len(),
        n,
        "every packet lands in exactly one place"
    );
    for &v in out.touched() {
        for b in out.tx(v) {
            assert!(b.len() >= 14);
        }
    }
}
