//! Compiles the `.proto` files under `proto/` with the pure-Rust `protox`
//! compiler (no system `protoc` is needed), stores the encoded descriptor set
//! in `$OUT_DIR/mesh_descriptor.bin` and generates prost messages plus tonic
//! client and server stubs.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

const PROTO_DIR: &str = "proto";

const PROTO_FILES: &[&str] = &[
    "proto/workload.proto",
    "proto/authorization.proto",
    "proto/citadel.proto",
    "proto/zds.proto",
    "proto/node.proto",
    "proto/status.proto",
    "proto/discovery.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }

    let fds = protox::compile(PROTO_FILES, [PROTO_DIR])?;

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    fs::write(out_dir.join("mesh_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        // We print our own rerun-if-changed lines above; protox reads the files.
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;

    Ok(())
}
