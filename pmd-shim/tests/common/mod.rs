//! EAL for the tests of one test binary: initialised once per process (EAL cannot be initialised
//! twice), in memory so nothing is left in hugetlbfs or /var/run/dpdk.

use std::sync::OnceLock;

use pmd_shim::Eal;

pub fn eal() -> &'static Eal {
    static EAL: OnceLock<Eal> = OnceLock::new();
    EAL.get_or_init(|| {
        testkit::hugepages::ensure(512);
        let prefix = format!("--file-prefix=vr-pmdtest-{}", std::process::id());
        Eal::init(&[
            "pmd-shim-test",
            "-l",
            "0-1",
            "--no-pci",
            "--in-memory",
            "-m",
            "256",
            prefix.as_str(),
            "--log-level=lib.eal:warning",
        ])
        .expect("EAL init for tests")
    })
}
