//! Finds DPDK 22.11 with pkg-config, compiles the C shim for DPDK's static-inline functions and
//! generates narrow bindings with bindgen. Both see the same `pkg-config --cflags libdpdk`
//! (`-include rte_config.h -march=…`), so the struct layouts agree with the installed DPDK.

use std::env;
use std::path::PathBuf;

const DPDK_HELP: &str = "DPDK 22.11 development files were not found by pkg-config (libdpdk). \
     On Debian 12 run scripts/install-deps.sh (or: apt-get install dpdk dpdk-dev libdpdk-dev \
     pkg-config libclang-dev).";

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.c");
    println!("cargo:rerun-if-changed=csrc/shim.h");
    println!("cargo:rerun-if-changed=build.rs");

    let dpdk = match pkg_config::Config::new()
        .atleast_version("22.11")
        .statik(false)
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => panic!("{DPDK_HELP}\npkg-config said: {e}"),
    };
    let cflags = dpdk_cflags();

    // Everything the shim or Rust calls lives in these libraries; `--as-needed` in the pkg-config
    // output would drop the PMD plugins anyway, which EAL loads itself from its plugin directory.
    let mut shim = cc::Build::new();
    shim.file("csrc/shim.c").opt_level(3).warnings(true);
    for flag in &cflags {
        shim.flag(flag);
    }
    for inc in &dpdk.include_paths {
        shim.include(inc);
    }
    shim.compile("vr_pmd_shim");

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bindings = bindgen::Builder::default()
        .header("csrc/shim.h")
        .clang_args(&cflags)
        .clang_args(dpdk.include_paths.iter().map(|p| format!("-I{}", p.display())))
        .allowlist_function("vr_.*")
        .allowlist_type("vr_consts|vr_eth_setup")
        .allowlist_function("rte_eal_(init|cleanup|get_runtime_dir|remote_launch|wait_lcore|get_lcore_state|mp_wait_lcore|hotplug_add|hotplug_remove|process_type|has_hugepages)")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_(lcore_count|get_main_lcore|lcore_is_enabled|lcore_to_socket_id|socket_id|get_next_lcore|get_tsc_hz)")
        .allowlist_function("rte_dev_(probe|remove)")
        .allowlist_function("rte_vdev_(init|uninit)")
        .allowlist_function("rte_eth_(dev_configure|dev_info_get|rx_queue_setup|tx_queue_setup|dev_start|dev_stop|dev_close|dev_socket_id|dev_get_port_by_name|dev_get_name_by_port|dev_count_avail|macaddr_get|link_get_nowait|stats_get|stats_reset|xstats_get|xstats_get_names|promiscuous_enable|dev_is_valid_port|dev_set_mtu|dev_get_mtu)")
        .allowlist_function("rte_pktmbuf_(pool_create|free_bulk)")
        .allowlist_function("rte_mempool_(avail_count|in_use_count|free|lookup)")
        .allowlist_function("rte_ring_(create|free|lookup)")
        .allowlist_type("rte_mbuf|rte_mempool|rte_ring|rte_eth_.*|rte_ether_addr|rte_lcore_state_t|rte_dev_iterator")
        .allowlist_var("RTE_(MAX_LCORE|MAX_ETHPORTS|ETH_NAME_MAX_LEN|MEMPOOL_NAMESIZE|RING_NAMESIZE|PKTMBUF_HEADROOM|MBUF_DEFAULT_BUF_SIZE|ETH_RSS_.*|ETH_MQ_RX_.*|ETH_LINK_.*|RING_F_.*|MBUF_F_.*|ETH_XSTATS_NAME_SIZE)")
        .allowlist_var("SOCKET_ID_ANY|LCORE_ID_ANY")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .generate()
        .unwrap_or_else(|e| panic!("bindgen over DPDK's headers failed: {e}\n{DPDK_HELP}"));
    bindings
        .write_to_file(out.join("dpdk_bindings.rs"))
        .expect("writing the generated bindings into OUT_DIR");
}

/// `pkg-config --cflags libdpdk`, less the `-I` flags (handled as include paths).
fn dpdk_cflags() -> Vec<String> {
    let output = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|e| panic!("running pkg-config: {e}\n{DPDK_HELP}"));
    if !output.status.success() {
        panic!("pkg-config --cflags libdpdk failed\n{DPDK_HELP}");
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut flags = Vec::new();
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w.starts_with("-I") {
            continue;
        }
        if w == "-include" {
            if let Some(file) = words.next() {
                flags.push("-include".to_owned());
                flags.push(file.to_owned());
            }
            continue;
        }
        flags.push(w.to_owned());
    }
    flags
}
