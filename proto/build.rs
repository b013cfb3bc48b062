//! Compiles `proto/**/*.proto` with protox (pure Rust, so no system `protoc`)
//! and writes the descriptor set next to the generated code, so that server
//! reflection serves exactly the contracts the code was generated from.

use std::path::PathBuf;

const FILES: &[&str] = &[
    "quill/auth/v1/auth.proto",
    "quill/content/v1/content.proto",
    "quill/notification/v1/notification.proto",
    "quill/events/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(FILES)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("quill_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
