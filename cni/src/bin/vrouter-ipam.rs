//! The `vrouter-ipam` IPAM plugin binary: the built-in pools for any CNI plugin to delegate to.

fn main() {
    std::process::exit(vrouter_cni::main_with(vrouter_cni::ipam_plugin::run));
}
