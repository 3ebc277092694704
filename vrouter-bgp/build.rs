//! Compiles GoBGP's gRPC API (package `apipb`: gobgp.proto and attribute.proto of GoBGP 3.x)
//! into a client. The .proto files come from Debian's golang-github-osrg-gobgp-dev (GoBGP's
//! source under /usr/share/gocode; `GOBGP_PROTO_DIR` names another directory), the
//! well-known types they import from libprotobuf-dev (/usr/include), protoc from
//! protobuf-compiler: scripts/install-deps.sh installs all three.

use std::path::Path;

const GOBGP_PROTO_DIR: &str = "/usr/share/gocode/src/github.com/osrg/gobgp/api";

fn main() {
    println!("cargo:rerun-if-env-changed=GOBGP_PROTO_DIR");
    let dir = std::env::var("GOBGP_PROTO_DIR").unwrap_or_else(|_| GOBGP_PROTO_DIR.to_string());
    let protos = ["gobgp.proto", "attribute.proto"].map(|p| Path::new(&dir).join(p));
    for p in &protos {
        assert!(
            p.is_file(),
            "{} is missing: install golang-github-osrg-gobgp-dev (scripts/install-deps.sh) or set GOBGP_PROTO_DIR",
            p.display()
        );
        println!("cargo:rerun-if-changed={}", p.display());
    }
    tonic_build::configure()
        .build_server(false)
        .compile_protos(&protos, &[Path::new(&dir), Path::new("/usr/include")])
        .expect("compiling GoBGP's .proto files (protoc: protobuf-compiler, libprotobuf-dev)");
}
