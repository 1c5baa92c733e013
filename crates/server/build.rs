//! Generate the gRPC types from `proto/` without a system `protoc`: `protox`
//! parses the .proto files in Rust, `tonic-prost-build` generates the code,
//! and the encoded descriptor set is written for server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "../../proto/fathom/v1/retrieval.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["../../proto"])?;
    compiler.include_source_info(true).open_file(PROTO)?;
    std::fs::write(
        out.join("fathom_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    // Source info carries the .proto comments into the generated docs.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
