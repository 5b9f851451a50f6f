//! Compiles the Hatchet-compatible protocol with a pure-Rust proto compiler, so a
//! plain `cargo build` needs no `protoc` on the machine. The compiled descriptors are
//! also kept (`FILE_DESCRIPTOR_SET`), so a test can walk every served method.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/dispatcher.proto",
        "proto/events.proto",
        "proto/workflows.proto",
        "proto/v1/workflows.proto",
        "proto/v1/dispatcher.proto",
        "proto/v1/condition.proto",
        "proto/v1/trigger.proto",
        "proto/adze/v1/reports.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(files)?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptors.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
