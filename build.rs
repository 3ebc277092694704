//! vrouterd links DPDK through pmd-shim; this only turns a missing DPDK into a clear message
//! before the long bindgen error would appear.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Err(e) = pkg_config::Config::new()
        .atleast_version("22.11")
        .cargo_metadata(false)
        .probe("libdpdk")
    {
        panic!(
            "vrouterd needs DPDK 22.11 or newer (pkg-config libdpdk): {e}\n\
             On Debian 12 run scripts/install-deps.sh (apt-get install dpdk dpdk-dev libdpdk-dev)."
        );
    }
}
