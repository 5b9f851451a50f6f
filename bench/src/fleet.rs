//! The fleet under test: one the bench brings up (own database, NATS prefix, secret and
//! ports; the release service binaries as child processes) or a running one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use sqlx::Connection as _;

use crate::args::Args;
use crate::services::{Proc, Spec, free_addr, run_cli};
use crate::target::database_url;
pub use crate::target::{Target, Topology};

/// A fleet and what to tear down.
pub struct Fleet {
    pub target: Target,
    /// Service logs and scratch files of this scenario.
    pub log_dir: PathBuf,
    procs: Vec<Proc>,
    admin_url: Option<String>,
    keep_database: bool,
    /// The OTLP receiver the services export to (`--otlp-sink`).
    sink: Option<crate::otlp::Sink>,
}

impl Fleet {
    /// What the services' spans say of each run, when they export to the bench's sink.
    pub fn span_stamps(&self) -> Option<crate::otlp::StampLog> {
        self.sink.as_ref().map(crate::otlp::Sink::stamps)
    }

    /// A running fleet given on the command line; nothing is started or torn down.
    pub fn external(args: &Args, log_dir: PathBuf) -> anyhow::Result<Self> {
        let (Some(grpc), Some(token)) = (&args.grpc, &args.token) else {
            bail!("--grpc needs --token");
        };
        let database = args.database_url.as_ref().map(|url| {
            let name = url
                .rsplit('/')
                .next()
                .unwrap_or("")
                .split('?')
                .next()
                .unwrap_or("")
                .to_owned();
            (url.clone(), name, false)
        });
        let target = Target {
            grpc: grpc.clone(),
            dispatcher: args.dispatcher.clone().unwrap_or_else(|| grpc.clone()),
            token: token.clone(),
            prefix: args.prefix.clone(),
            nats_url: args.nats_url.clone(),
            database,
            pids: args.pids.clone(),
            tls_ca: None,
        };
        Ok(Fleet {
            target,
            log_dir,
            procs: Vec::new(),
            admin_url: None,
            keep_database: true,
            sink: None,
        })
    }

    /// Creates a database, migrates it, issues a token and starts the services.
    /// Whatever was started is torn down again if a step fails.
    pub async fn start(
        args: &Args,
        bin_dir: &Path,
        log_dir: PathBuf,
        topology: Topology,
    ) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db = format!("adze_bench_{}", &id[..12]);
        let mut admin = sqlx::PgConnection::connect(&args.pg_admin_url)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to Postgres at {} (source scripts/deps.sh)",
                    args.pg_admin_url
                )
            })?;
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&mut admin)
            .await?;
        let mut settings = args.pg_settings.clone();
        if let Some(ms) = args.pg_auto_explain_ms {
            settings.push(("session_preload_libraries".into(), "auto_explain".into()));
            settings.push(("auto_explain.log_min_duration".into(), format!("{ms}ms")));
        }
        for (name, value) in settings {
            sqlx::query(&format!("ALTER DATABASE {db} SET {name} = '{value}'"))
                .execute(&mut admin)
                .await
                .with_context(|| format!("cannot set {name} on the bench database"))?;
        }
        let _ = admin.close().await;
        let url = database_url(&args.pg_admin_url, &db);
        let target = Target {
            grpc: String::new(),
            dispatcher: String::new(),
            token: String::new(),
            prefix: format!("bench{}", &id[12..20]),
            nats_url: args.nats_url.clone(),
            database: Some((url, db, true)),
            pids: Vec::new(),
            tls_ca: None,
        };
        let mut fleet = Fleet {
            target,
            log_dir,
            procs: Vec::new(),
            admin_url: Some(args.pg_admin_url.clone()),
            keep_database: args.keep_database,
            sink: None,
        };
        match fleet.bring_up(args, bin_dir, topology, &id).await {
            Ok(()) => Ok(fleet),
            Err(e) => {
                fleet.stop().await;
                Err(e)
            }
        }
    }

    async fn bring_up(
        &mut self,
        args: &Args,
        bin_dir: &Path,
        topology: Topology,
        id: &str,
    ) -> anyhow::Result<()> {
        let [api, dispatcher, scheduler, reaper] =
            [free_addr()?, free_addr()?, free_addr()?, free_addr()?];
        let dispatcher = if topology != Topology::Separate {
            api.clone()
        } else {
            dispatcher
        };
        let db_url = self
            .target
            .database
            .as_ref()
            .map(|d| d.0.clone())
            .unwrap_or_default();
        let mut env = vec![
            ("ADZE_DATABASE_URL".to_owned(), db_url),
            ("ADZE_NATS_URL".to_owned(), args.nats_url.clone()),
            ("ADZE_PREFIX".to_owned(), self.target.prefix.clone()),
            (
                "ADZE_AUTH__SECRET".to_owned(),
                format!("bench-{id}-{}", uuid::Uuid::new_v4().simple()),
            ),
            ("ADZE_SERVER__PUBLIC_GRPC_ADDRESS".to_owned(), api.clone()),
            ("RUST_LOG".to_owned(), args.service_log.clone()),
        ];
        if let Some(n) = args.service_threads {
            env.push(("TOKIO_WORKER_THREADS".to_owned(), n.to_string()));
        }
        let adze = bin_dir.join("adze");
        let cli_log = self.log_dir.join("cli.log");
        let scheme = if args.tls {
            // A certificate set for 127.0.0.1; the API ports serve it, clients trust its CA.
            let dir = self.log_dir.join("certs");
            let dir_arg = dir.to_string_lossy().into_owned();
            run_cli(
                &adze,
                &["dev", "certs", "--dir", &dir_arg, "--force"],
                &env,
                &cli_log,
            )
            .await?;
            for (var, file) in [
                ("ADZE_SERVER__TLS__MODE", "tls".to_owned()),
                (
                    "ADZE_SERVER__TLS__CERT_FILE",
                    format!("{dir_arg}/server.pem"),
                ),
                (
                    "ADZE_SERVER__TLS__KEY_FILE",
                    format!("{dir_arg}/server.key"),
                ),
            ] {
                env.push((var.to_owned(), file));
            }
            self.target.tls_ca = Some(dir.join("ca.pem"));
            "https"
        } else {
            // Plaintext, said explicitly.
            env.push(("ADZE_SERVER__TLS__MODE".to_owned(), "none".to_owned()));
            "http"
        };
        let server_url = format!("{scheme}://{api}");
        env.push(("ADZE_SERVER__PUBLIC_URL".to_owned(), server_url.clone()));
        if let Ok(redis) = std::env::var("ADZE_REDIS_URL") {
            env.push(("ADZE_REDIS_URL".to_owned(), redis));
        }
        if args.otlp_sink {
            let sink = crate::otlp::Sink::start().await?;
            env.push((
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                sink.endpoint.clone(),
            ));
            env.push(("OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(), "grpc".to_owned()));
            // Exported within a second of their end, so that a phase's spans are in
            // before its legs are computed.
            env.push(("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "500".to_owned()));
            self.sink = Some(sink);
        }
        run_cli(&adze, &["migrate"], &env, &cli_log).await?;
        let tenant = run_cli(
            &adze,
            &["tenant", "create", "--name", "bench"],
            &env,
            &cli_log,
        )
        .await?;
        let tenant = last_word(&tenant).context("`adze tenant create` printed no tenant id")?;
        let token_args = [
            "token",
            "create",
            "--tenant",
            &tenant,
            "--name",
            "bench",
            "--server-url",
            &server_url,
            "--grpc-address",
            &api,
        ];
        let token = run_cli(&adze, &token_args, &env, &cli_log).await?;
        self.target.token = last_word(&token).context("`adze token create` printed no token")?;
        self.target.grpc = api.clone();
        self.target.dispatcher = dispatcher.clone();

        let mut services: Vec<(&str, PathBuf, Vec<String>, String)> = match topology {
            Topology::Separate => vec![
                ("ingest", bin_dir.join("adze-ingest"), vec![], api.clone()),
                (
                    "dispatcher",
                    bin_dir.join("adze-dispatcher"),
                    vec![],
                    dispatcher.clone(),
                ),
            ],
            Topology::Combined => {
                let args = ["server", "--roles", "ingest,dispatcher", "--listen", &api]
                    .map(String::from)
                    .to_vec();
                vec![("server", adze.clone(), args, api.clone())]
            }
            Topology::Single => {
                let roles = "ingest,dispatcher,scheduler,reaper,ratelimit";
                let args = ["server", "--roles", roles, "--listen", &api]
                    .map(String::from)
                    .to_vec();
                vec![("server", adze.clone(), args, api.clone())]
            }
        };
        if topology != Topology::Single {
            services.push((
                "scheduler",
                bin_dir.join("adze-scheduler"),
                vec![],
                scheduler,
            ));
            services.push(("reaper", bin_dir.join("adze-reaper"), vec![], reaper));
            // Builds from before the ratelimit service have no binary for it.
            let ratelimit = bin_dir.join("adze-ratelimit");
            if ratelimit.exists() {
                services.push(("ratelimit", ratelimit, vec![], free_addr()?));
            }
        }
        for (name, program, args, listen) in &services {
            let mut env = env.clone();
            env.push(("ADZE_SERVER__LISTEN".to_owned(), listen.clone()));
            let spec = Spec {
                name,
                program,
                args,
                env: &env,
                log_dir: &self.log_dir,
                capture_stdout: false,
            };
            let proc = Proc::spawn(spec)?;
            self.target.pids.push((name.to_string(), proc.pid));
            self.procs.push(proc);
        }
        for proc in &mut self.procs {
            if matches!(proc.name.as_str(), "ingest" | "dispatcher" | "server") {
                let addr = if proc.name == "dispatcher" {
                    &dispatcher
                } else {
                    &api
                };
                proc.wait_listening(addr, Duration::from_secs(30)).await?;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.ensure_running()
    }

    /// Starts an extra process (a Python worker) that is torn down with the fleet.
    pub fn spawn(&mut self, spec: Spec<'_>) -> anyhow::Result<&mut Proc> {
        let proc = Proc::spawn(spec)?;
        self.procs.push(proc);
        let last = self.procs.len() - 1;
        Ok(&mut self.procs[last])
    }

    /// Fails if a process of the fleet has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.procs.iter_mut().try_for_each(Proc::ensure_running)
    }

    /// Stops the processes (extras first), deletes the JetStream streams and drops the
    /// database, when the bench created them.
    pub async fn stop(mut self) {
        while let Some(mut proc) = self.procs.pop() {
            proc.stop(Duration::from_secs(10)).await;
        }
        // The services flushed their spans as they stopped.
        if let Some(sink) = self.sink.take() {
            let (spans, exports) = sink.received();
            eprintln!("otlp sink: {spans} spans received in {exports} exports");
        }
        let Some(admin_url) = self.admin_url.take() else {
            return;
        };
        // Every service creates the scheduler events', the trigger events' intake and
        // the dead letters' streams under the prefix (named as `adze_bus::Subjects` does).
        let stream_prefix = self.target.prefix.replace(['.', '-'], "_").to_uppercase();
        if let Ok(client) = async_nats::connect(&self.target.nats_url).await {
            let js = async_nats::jetstream::new(client);
            for kind in ["EVENTS", "INTAKE", "DEADLETTER"] {
                let _ = js.delete_stream(format!("{stream_prefix}_{kind}")).await;
            }
        }
        if let (true, Some((_, db, true))) = (self.keep_database, &self.target.database) {
            eprintln!("[bench] kept database {db} (--keep-database)");
            return;
        }
        if let (Some((_, db, true)), Ok(mut admin)) = (
            &self.target.database,
            sqlx::PgConnection::connect(&admin_url).await,
        ) {
            let drop = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
            if let Err(e) = sqlx::query(&drop).execute(&mut admin).await {
                tracing::warn!(error = %e, database = %db, "cannot drop the bench database");
            }
        }
    }
}

fn last_word(out: &str) -> Option<String> {
    out.split_whitespace().last().map(str::to_owned)
}
