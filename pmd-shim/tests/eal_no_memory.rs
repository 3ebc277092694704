//! EAL init that cannot get its memory fails with a clear message carrying DPDK's own text,
//! and EAL refuses a second initialisation in the same process.

use pmd_shim::{Eal, Error};

#[test]
fn eal_init_without_enough_memory_fails_clearly() {
    testkit::hugepages::ensure(512);
    let free_mib = testkit::hugepages::free_pages() * 2;
    // Ask for far more than the reserved hugepages can hold.
    let ask = (free_mib + 64 * 1024).to_string();
    let prefix = format!("--file-prefix=vr-nomem-{}", std::process::id());
    let err = Eal::init(&[
        "eal-no-memory",
        "-l",
        "0",
        "--no-pci",
        "--in-memory",
        "-m",
        ask.as_str(),
        prefix.as_str(),
    ])
    .expect_err("EAL must fail when it cannot get the memory it was told to reserve");
    let text = err.to_string();
    match &err {
        Error::EalInit { errno, .. } => assert_eq!(errno.0, libc::ENOMEM, "{text}"),
        other => panic!("wrong error kind: {other:?}"),
    }
    assert!(text.contains("EAL initialisation failed"), "{text}");
    assert!(
        text.contains(&pmd_shim::eal::strerror(libc::ENOMEM)),
        "DPDK's own text: {text}"
    );
    assert!(
        text.contains("hugepages:") && text.contains("scripts/hugepages.sh"),
        "a hint: {text}"
    );

    let again = Eal::init(&["eal-no-memory", "--no-pci"]).expect_err("no second init");
    assert!(matches!(again, Error::EalOnce(_)), "{again}");
    // The failed init leaves EAL's runtime directory for this unique prefix behind.
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/vr-nomem-{}", std::process::id()));
}
