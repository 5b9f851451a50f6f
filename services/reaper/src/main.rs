//! `adze-reaper`: deadline scans as their own process.

/// Allocation-heavy async code (messages, JSON, gRPC frames) runs faster on mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    adze_runtime::service_main("reaper", |loaded, shared, shutdown| async move {
        let config: adze_reaper::Config = loaded.section("reaper")?;
        let deps = adze_reaper::Deps::new(shared.pool, shared.bus);
        adze_reaper::run(config, deps, shutdown).await
    })
}
