//! `adze-ratelimit`: the rate-limit service as its own process.

/// Allocation-heavy async code (messages, JSON) runs faster on mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    adze_runtime::service_main("ratelimit", |loaded, shared, shutdown| async move {
        let config: adze_ratelimit::Config = loaded.section("ratelimit")?;
        let deps = adze_ratelimit::Deps::new(shared.pool, shared.bus, shared.redis_url);
        adze_ratelimit::run(config, deps, shutdown).await
    })
}
