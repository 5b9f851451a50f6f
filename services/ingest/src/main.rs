//! `adze-ingest`: the client API as its own process.

/// Allocation-heavy async code (messages, JSON, gRPC frames) runs faster on mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    adze_runtime::service_main("ingest", |loaded, shared, shutdown| async move {
        let mut config: adze_ingest::Config = loaded.section("ingest")?;
        if let Some(listen) = loaded.common.server.listen {
            config.listen = listen;
        }
        config.tls = adze_runtime::tls::ServerTls::from_settings(&loaded.common.server.tls)?;
        let deps = adze_ingest::Deps {
            pool: shared.pool,
            bus: shared.bus,
            auth: shared.auth,
            budget: std::sync::Arc::new(adze_ingest::budget::RequestBudget::new(
                config.request_budget,
            )),
        };
        adze_ingest::run(config, deps, shutdown).await
    })
}
