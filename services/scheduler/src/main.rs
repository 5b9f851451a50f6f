//! `adze-scheduler`: the task state machine as its own process.

/// Allocation-heavy async code (messages, JSON, gRPC frames) runs faster on mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    adze_runtime::service_main("scheduler", |loaded, shared, shutdown| async move {
        let config: adze_scheduler::Config = loaded.section("scheduler")?;
        let deps = adze_scheduler::Deps {
            pool: shared.pool,
            bus: shared.bus,
        };
        adze_scheduler::run(config, deps, shutdown).await
    })
}
