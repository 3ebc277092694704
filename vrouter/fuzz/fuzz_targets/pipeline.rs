//! Feed arbitrary frames through the pipeline on every kind of vif. The first byte picks the
//! ingress vif (fabric, pod, unknown); the rest is the frame. Run (bounded):
//! `cargo +nightly fuzz run pipeline -- -max_total_time=60` from `vrouter/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vrouter::pipeline::{NoFlow, Pipeline, TxBatches};
use vrouter::{StatsRegistry, VecBuf};

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

fuzz_target!(|data: &[u8]| {
    static BED: OnceLock<std::sync::Mutex<Bed>> = OnceLock::new();
    let bed = BED.get_or_init(|| {
        let stats = StatsRegistry::default();
        let core = stats.new_core();
        std::sync::Mutex::new(Bed {
            stats,
            pipe: Pipeline::new(tables(), core, NoFlow),
            out: TxBatches::new(32),
        })
    });
    let Some((&vif, frame)) = data.split_first() else {
        return;
    };
    let mut bed = bed.lock().unwrap_or_else(|e| e.into_inner());
    let Bed { stats, pipe, out } = &mut *bed;
    out.clear();
    let vif = u16::from(vif % 4);
    let before = checks::Tally::read(stats, vif);
    pipe.process(vif, [VecBuf::from_frame(frame)], out);
    checks::packets_accounted(out, 1, before, checks::Tally::read(stats, vif));
});
