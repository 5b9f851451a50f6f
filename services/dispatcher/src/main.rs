//! `adze-dispatcher`: worker connections as their own process (scale horizontally).

/// Allocation-heavy async code (messages, JSON, gRPC frames) runs faster on mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    adze_runtime::service_main("dispatcher", |loaded, shared, shutdown| async move {
        let mut config: adze_dispatcher::Config = loaded.section("dispatcher")?;
        if let Some(listen) = loaded.common.server.listen {
            config.listen = listen;
        }
        config.tls = adze_runtime::tls::ServerTls::from_settings(&loaded.common.server.tls)?;
        let deps = adze_dispatcher::Deps {
            pool: shared.pool,
            bus: shared.bus,
            auth: shared.auth,
        };
        adze_dispatcher::run(config, deps, shutdown).await
    })
}
