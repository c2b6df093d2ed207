//! Compiles the `.proto` contract with protox (no system `protoc`), writes the file
//! descriptor set for server reflection, generates tonic/prost code, and generates
//! proto3 canonical JSON (serde) impls with pbjson for the gateway.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "slipway/auth/v1/auth.proto",
    "slipway/registry/v1/registry.proto",
    "slipway/deploy/v1/deploy.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=slipway");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let fds = protox::compile(PROTOS, ["."])?;
    let descriptor_bytes = fds.encode_to_vec();
    fs::write(out_dir.join("slipway_descriptor.bin"), &descriptor_bytes)?;

    tonic_prost_build::configure()
        .compile_well_known_types(true)
        // Well-known types come from pbjson-types so they have canonical JSON too.
        .extern_path(".google.protobuf", "::pbjson_types")
        // ...except Timestamp, whose canonical JSON ends in `Z` (see src/timestamp.rs).
        .extern_path(".google.protobuf.Timestamp", "crate::wkt::Timestamp")
        .compile_fds(fds)?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .build(&[".slipway"])?;
    Ok(())
}
