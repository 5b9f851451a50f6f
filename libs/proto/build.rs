//! Compiles the Hatchet-compatible protocol with a pure-Rust proto compiler, so a
//! plain `cargo build` needs no `protoc` on the machine.

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
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
