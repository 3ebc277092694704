//! The `vrouter-cni` plugin binary: CNI_* environment and configuration on stdin, result or
//! CNI error object on stdout.

fn main() {
    std::process::exit(vrouter_cni::main_with(vrouter_cni::plugin::run));
}
