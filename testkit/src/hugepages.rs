//! Hugepages for tests: reserved through the project's own script, never assumed.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root (testkit lives one level below it).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// Makes sure at least `pages` 2 MiB hugepages are reserved and hugetlbfs is mounted, by running
/// `scripts/hugepages.sh` (idempotent). Panics with the script's output if it fails: a test
/// that needs hugepages must not run without them, nor skip silently.
pub fn ensure(pages: u32) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let script = workspace_root().join("scripts/hugepages.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(pages.to_string())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed (tests need root and hugepages):\n{}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Free 2 MiB hugepages right now.
pub fn free_pages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
