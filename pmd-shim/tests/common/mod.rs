//! EAL for a test. DPDK initialises EAL once per process, so these tests run one process per
//! test (cargo-nextest, as the README's test command does); the handle is owned by the test and
//! cleans EAL up (runtime directory included) when the test's last DPDK object drops.

use pmd_shim::Eal;

pub fn eal() -> Eal {
    testkit::hugepages::ensure(512);
    let prefix = format!("--file-prefix=vr-pmdtest-{}", std::process::id());
    Eal::init(&[
        "pmd-shim-test",
        "-l",
        "0-1",
        "--no-pci",
        "--in-memory",
        "-m",
        "64",
        prefix.as_str(),
        "--log-level=lib.eal:warning",
    ])
    .expect("EAL init for tests (one test per process: run them with cargo nextest)")
}
