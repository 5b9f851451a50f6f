//! Command line, and the settings each scenario reads (full scale or `--quick`).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Single-task workflows: ramp the offered rate, find the knee, sustain it.
    Noop,
    /// Three-step linear DAG: runs/s and per-step overhead.
    Dag3,
    /// Trigger → start / result percentiles at fixed offered rates.
    Latency,
    /// One run: 1 root → N parallel children; time to all done.
    Fanout,
    /// N queued tasks with no worker, then drain; probe latency while queued.
    Backlog,
    /// The official Python SDK's worker and client.
    Wire,
    /// Runs with 1 s execution timeouts, half of which time out: how late the
    /// timeout-reaper applies them.
    Timeouts,
    /// `noop` whose workflow has a concurrency key per run, 10,000 distinct keys with
    /// max_runs 1: what the concurrency stage costs when every task carries a key.
    Keyed,
    /// `noop` with a rate limit on every task (100 dynamic keys whose limit is never
    /// reached): what asking the `ratelimit` service costs.
    Limited,
    /// `dag3` as a SOFT-sticky workflow (run it with `--workers 2` or more).
    Sticky,
    /// Events as triggers: each event (pushed over gRPC, or published to NATS) starts
    /// a one-task run; events/s kept up with and publish → start percentiles per path.
    Events,
    /// Parents triggered together, each spawning child runs (of a one-task workflow)
    /// from inside its task and waiting for them: children/s and spawn → child start.
    Children,
    /// Durable orchestrators (each spawning children, waiting for them and sleeping
    /// durably): orchestrators/s and log writes per call; then memo-heavy durable tasks
    /// evicted and replayed: transactions per memo call and a whole log's replay time.
    Durable,
    /// The runs API's reads over a seeded history of `--dashboard-runs` runs.
    Dashboard,
    /// What open dashboards cost: single-task runs at 1,000/s (the first of
    /// `--latency-rates` ≥ 1,000, else the highest) with and without `--live-viewers`
    /// live streams attached, alternating, `--secs` each.
    Live,
    /// The same three measurements (a no-op burst, a three-step burst, trigger → start
    /// at 200/s) for Adze, BullMQ and pg-boss, one after the other, with ratios to the
    /// best peer (needs Node.js and `npm ci` in bench/compare; not part of the default set).
    Compare,
}

/// How the `events` scenario sends its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventPath {
    /// `EventsService.Push` through the Rust SDK (`Client::push_event`).
    Grpc,
    /// Published straight to JetStream on `<prefix>.events.<tenant>.<key>`.
    Nats,
}

impl EventPath {
    /// The name used in JSON and summary lines.
    pub fn name(self) -> &'static str {
        match self {
            EventPath::Grpc => "grpc",
            EventPath::Nats => "nats",
        }
    }
}

impl Scenario {
    /// Every scenario, in the order `adze-bench` runs them by default.
    pub const ALL: [Scenario; 15] = [
        Scenario::Noop,
        Scenario::Dag3,
        Scenario::Latency,
        Scenario::Fanout,
        Scenario::Backlog,
        Scenario::Wire,
        Scenario::Timeouts,
        Scenario::Keyed,
        Scenario::Limited,
        Scenario::Sticky,
        Scenario::Events,
        Scenario::Children,
        Scenario::Durable,
        Scenario::Dashboard,
        Scenario::Live,
    ];

    /// The name used in file names and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Noop => "noop",
            Scenario::Dag3 => "dag3",
            Scenario::Latency => "latency",
            Scenario::Fanout => "fanout",
            Scenario::Backlog => "backlog",
            Scenario::Wire => "wire",
            Scenario::Timeouts => "timeouts",
            Scenario::Keyed => "keyed",
            Scenario::Limited => "limited",
            Scenario::Sticky => "sticky",
            Scenario::Events => "events",
            Scenario::Children => "children",
            Scenario::Durable => "durable",
            Scenario::Dashboard => "dashboard",
            Scenario::Live => "live",
            Scenario::Compare => "compare",
        }
    }
}

/// Benchmarks an Adze fleet: by default one it starts itself per scenario (own database,
/// NATS prefix and secret, release binaries next to this one), or a running one given by
/// `--grpc`, `--dispatcher` and `--token`.
#[derive(Debug, Clone, Parser)]
#[command(name = "adze-bench", version)]
pub struct Args {
    /// Scenarios to run (default: all of them).
    #[arg(value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Small scale: every scenario in under three minutes, for smoke tests.
    #[arg(long)]
    pub quick: bool,

    /// gRPC address of a running fleet's ingest (client services). Skips the bring-up.
    #[arg(long, requires = "token")]
    pub grpc: Option<String>,
    /// Address of the running fleet's Dispatcher service (default: the --grpc address).
    #[arg(long)]
    pub dispatcher: Option<String>,
    /// API token for the running fleet.
    #[arg(long)]
    pub token: Option<String>,
    /// NATS subject prefix of the running fleet (ADZE_PREFIX there).
    #[arg(long, default_value = "adze")]
    pub prefix: String,
    /// Database URL of the running fleet, for Postgres counters (optional).
    #[arg(long)]
    pub database_url: Option<String>,
    /// A running fleet's process to measure, as name=pid (repeatable).
    #[arg(long = "pid", value_parser = parse_pid)]
    pub pids: Vec<(String, u32)>,

    /// NATS server.
    #[arg(long, env = "ADZE_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Postgres admin URL: the bench creates and drops its database through it.
    #[arg(
        long,
        env = "ADZE_PG_ADMIN_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub pg_admin_url: String,
    /// Directory of the service binaries (default: this binary's directory).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Results directory (default: bench/results of this checkout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// RUST_LOG of the services the bench starts.
    #[arg(long, default_value = "warn")]
    pub service_log: String,
    /// Tokio worker threads of each service the bench starts (`TOKIO_WORKER_THREADS`;
    /// default: Tokio's, one per core). The bench's own runtime is not affected.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub service_threads: Option<u16>,
    /// Python interpreter with hatchet-sdk for `wire` (default: .adze/venv/bin/python).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Log the plans of statements slower than this many ms (auto_explain, set on the
    /// bench database; needs a superuser admin URL) to the Postgres server log.
    #[arg(long)]
    pub pg_auto_explain_ms: Option<u64>,
    /// A setting for the bench database's sessions, as name=value (repeatable; applied
    /// with ALTER DATABASE before the services connect), e.g. plan_cache_mode=force_custom_plan.
    #[arg(long = "pg-set", value_parser = parse_setting)]
    pub pg_settings: Vec<(String, String)>,
    /// Every service the bench starts exports its spans over OTLP/gRPC to a receiver in
    /// the bench, which counts them (the cost of tracing, against a real receiver); the
    /// scenarios that split trigger → start into hops then also split it at every stage
    /// the spans mark ("start p50 by leg").
    #[arg(long)]
    pub otlp_sink: bool,
    /// Serve the fleet's API ports over TLS (a certificate set from `adze dev certs`);
    /// the bench's clients and workers verify it with the set's CA. For the gRPC
    /// scenarios (noop, dag3, latency and the like), to price TLS against plaintext.
    #[arg(long)]
    pub tls: bool,
    /// Run every role in one `adze server` process (the all-in-one layout) instead of
    /// one process per service, to price the process boundaries.
    #[arg(long)]
    pub single_process: bool,
    /// Do not count NATS messages (subscribe to run notices only).
    #[arg(long)]
    pub no_nats_count: bool,
    /// Keep each scenario's database when it ends (its name is printed), to study the
    /// stored timestamps afterwards; drop it yourself with `DROP DATABASE`.
    #[arg(long)]
    pub keep_database: bool,

    /// Slots per worker.
    #[arg(long, default_value_t = 200)]
    pub slots: usize,
    /// Worker instances (each its own connection).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Handlers sleep this long (0 = no-op workers).
    #[arg(long, default_value_t = 0)]
    pub task_sleep_ms: u64,
    /// Client connections the load generator spreads triggers over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Trigger RPCs in flight at most.
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,

    /// Offered rates of the noop/dag3 ramp, per second.
    #[arg(long, value_delimiter = ',')]
    pub rates: Option<Vec<u32>>,
    /// Offered runs/s of the dag3 ramp (each run is three tasks).
    #[arg(long, value_delimiter = ',')]
    pub dag3_rates: Option<Vec<u32>>,
    /// Seconds per ramp step.
    #[arg(long)]
    pub step_secs: Option<u64>,
    /// Seconds of the final sustained run at the knee.
    #[arg(long)]
    pub sustain_secs: Option<u64>,
    /// Offered rates of the latency scenario, per second.
    #[arg(long, value_delimiter = ',')]
    pub latency_rates: Option<Vec<u32>>,
    /// Seconds per latency rate (and of the wire run).
    #[arg(long)]
    pub secs: Option<u64>,
    /// Children of the fanout run (the engine allows 2,000 tasks per workflow).
    #[arg(long, default_value_t = 1000)]
    pub fanout: usize,
    /// Fanout runs, one after the other.
    #[arg(long)]
    pub fanout_runs: Option<usize>,
    /// Tasks queued in the backlog scenario.
    #[arg(long)]
    pub backlog: Option<usize>,
    /// Probe rate (tasks/s of a separate workflow) in the backlog scenario.
    #[arg(long, default_value_t = 50)]
    pub probe_rate: u32,
    /// Longest wait for the backlog to drain, in seconds.
    #[arg(long)]
    pub drain_timeout_secs: Option<u64>,
    /// Offered rate of the Python client in `wire`, per second.
    #[arg(long)]
    pub wire_rate: Option<u32>,
    /// Runs of the timeouts scenario (half of them time out).
    #[arg(long)]
    pub timeout_tasks: Option<usize>,
    /// Offered rate of the timeouts scenario, per second.
    #[arg(long)]
    pub timeout_rate: Option<u32>,
    /// Offered events/s of the events scenario, each rate on each path.
    #[arg(long, value_delimiter = ',')]
    pub event_rates: Option<Vec<u32>>,
    /// Seconds per rate and path of the events scenario.
    #[arg(long)]
    pub event_secs: Option<u64>,
    /// Paths of the events scenario, in order (default: grpc,nats).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub event_paths: Option<Vec<EventPath>>,
    /// Publish NATS events without a `Nats-Msg-Id` header (ingest then dedupes them by
    /// their place in the intake stream).
    #[arg(long)]
    pub event_no_msg_id: bool,
    /// Parents of the children scenario, triggered together in one bulk call.
    #[arg(long)]
    pub children_parents: Option<usize>,
    /// Child runs each parent spawns from its task, and waits for, in the children scenario.
    #[arg(long)]
    pub children_per_parent: Option<usize>,
    /// In the children scenario, parents give their worker slot back (`ReleaseSlot`)
    /// before spawning, instead of holding it while they wait (then the workers get
    /// `--slots` slots rather than `--slots` + parents).
    #[arg(long)]
    pub children_release_slot: bool,
    /// Orchestrators of the durable scenario, triggered together.
    #[arg(long)]
    pub durable_orchestrators: Option<usize>,
    /// Child runs each orchestrator spawns (in one call) and waits for.
    #[arg(long, default_value_t = 10)]
    pub durable_children: usize,
    /// The durable sleep of each orchestrator after its children, ms.
    #[arg(long, default_value_t = 100)]
    pub durable_sleep_ms: u64,
    /// Durable tasks of the replay part, run side by side.
    #[arg(long)]
    pub durable_replay_tasks: Option<usize>,
    /// Memo calls each replay task makes (the length of the log it replays).
    #[arg(long)]
    pub durable_replay_memos: Option<usize>,
    /// Runs the dashboard scenario seeds before it reads (default 1,000,000; --quick 20,000).
    #[arg(long)]
    pub dashboard_runs: Option<usize>,
    /// Live streams (dashboard pages) the live scenario opens: half on the runs list,
    /// half on runs in flight.
    #[arg(long, default_value_t = 10)]
    pub live_viewers: usize,
    /// Rounds of the compare scenario (medians are reported).
    #[arg(long)]
    pub compare_rounds: Option<usize>,
    /// One-task runs of compare's no-op burst.
    #[arg(long)]
    pub compare_noop: Option<usize>,
    /// Three-step runs of compare's DAG burst.
    #[arg(long)]
    pub compare_dag3: Option<usize>,
    /// Offered rate of compare's latency measurement, per second.
    #[arg(long, default_value_t = 200)]
    pub compare_rate: u32,
    /// Seconds of compare's latency measurement.
    #[arg(long)]
    pub compare_secs: Option<u64>,
    /// Peers compare measures (bullmq, pg-boss).
    #[arg(long, value_delimiter = ',', default_values_t = ["bullmq".to_owned(), "pg-boss".to_owned()])]
    pub compare_peers: Vec<String>,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    let (name, value) = s.split_once('=').ok_or("expected name=value")?;
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    if name.is_empty() || !name.chars().all(valid) {
        return Err(format!("{name:?} is not a setting name"));
    }
    Ok((name.to_owned(), value.replace('\'', "''")))
}

fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or("expected name=pid, e.g. ingest=1234")?;
    let pid = pid.parse().map_err(|e| format!("pid {pid:?}: {e}"))?;
    Ok((name.to_owned(), pid))
}

/// Scale of every scenario after applying `--quick` and explicit flags.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scale {
    pub rates: Vec<u32>,
    pub dag3_rates: Vec<u32>,
    pub step_secs: u64,
    pub sustain_secs: u64,
    /// Sustained runs at most (each 25 % below the last that did not keep up).
    pub sustain_attempts: usize,
    pub latency_rates: Vec<u32>,
    pub secs: u64,
    pub fanout: usize,
    pub fanout_runs: usize,
    pub backlog: usize,
    pub probe_rate: u32,
    pub probe_secs: u64,
    pub drain_timeout_secs: u64,
    pub wire_rate: u32,
    pub timeout_tasks: usize,
    pub timeout_rate: u32,
    pub event_rates: Vec<u32>,
    pub event_secs: u64,
    pub event_paths: Vec<EventPath>,
    pub event_msg_id: bool,
    pub children_parents: usize,
    pub children_per_parent: usize,
    pub children_release_slot: bool,
    pub durable_orchestrators: usize,
    pub durable_children: usize,
    pub durable_sleep_ms: u64,
    pub durable_replay_tasks: usize,
    pub durable_replay_memos: usize,
    pub dashboard_runs: usize,
    pub live_viewers: usize,
    pub compare: CompareScale,
    pub slots: usize,
    pub workers: usize,
    pub task_sleep_ms: u64,
    pub connections: usize,
    pub max_in_flight: usize,
}

/// The compare scenario's sizes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompareScale {
    pub rounds: usize,
    pub noop: usize,
    pub dag3: usize,
    pub rate: u32,
    pub secs: u64,
    pub peers: Vec<String>,
}

impl Scale {
    /// Full-scale defaults, or `--quick` ones, overridden by explicit flags.
    pub fn from_args(a: &Args) -> Self {
        let q = a.quick;
        Scale {
            rates: a.rates.clone().unwrap_or_else(|| {
                if q {
                    vec![500, 1000, 2000]
                } else {
                    vec![1000, 2000, 4000, 6000, 8000, 10000]
                }
            }),
            dag3_rates: a.dag3_rates.clone().unwrap_or_else(|| {
                if q {
                    vec![100, 250, 500]
                } else {
                    vec![250, 500, 1000, 1500, 2000, 3000]
                }
            }),
            step_secs: a.step_secs.unwrap_or(if q { 4 } else { 15 }),
            sustain_secs: a.sustain_secs.unwrap_or(if q { 8 } else { 60 }),
            sustain_attempts: if q { 1 } else { 3 },
            latency_rates: a.latency_rates.clone().unwrap_or_else(|| {
                if q {
                    vec![100, 1000]
                } else {
                    vec![100, 200, 1000, 3000]
                }
            }),
            secs: a.secs.unwrap_or(if q { 4 } else { 20 }),
            fanout: a.fanout.clamp(1, 1999),
            fanout_runs: a.fanout_runs.unwrap_or(if q { 1 } else { 3 }),
            backlog: a.backlog.unwrap_or(if q { 50_000 } else { 1_000_000 }),
            probe_rate: a.probe_rate.max(1),
            probe_secs: if q { 4 } else { 15 },
            drain_timeout_secs: a.drain_timeout_secs.unwrap_or(if q { 30 } else { 900 }),
            wire_rate: a.wire_rate.unwrap_or(if q { 100 } else { 500 }),
            timeout_tasks: a.timeout_tasks.unwrap_or(if q { 2_000 } else { 10_000 }),
            timeout_rate: a.timeout_rate.unwrap_or(if q { 500 } else { 1_000 }),
            event_rates: a
                .event_rates
                .clone()
                .unwrap_or_else(|| if q { vec![200, 500] } else { vec![500, 1000] }),
            event_secs: a.event_secs.unwrap_or(if q { 4 } else { 10 }),
            event_paths: a
                .event_paths
                .clone()
                .unwrap_or_else(|| vec![EventPath::Grpc, EventPath::Nats]),
            event_msg_id: !a.event_no_msg_id,
            children_parents: a.children_parents.unwrap_or(if q { 10 } else { 50 }).max(1),
            children_per_parent: a
                .children_per_parent
                .unwrap_or(if q { 50 } else { 100 })
                .max(1),
            children_release_slot: a.children_release_slot,
            durable_orchestrators: a
                .durable_orchestrators
                .unwrap_or(if q { 20 } else { 200 })
                .max(1),
            durable_children: a.durable_children.max(1),
            durable_sleep_ms: a.durable_sleep_ms,
            durable_replay_tasks: a
                .durable_replay_tasks
                .unwrap_or(if q { 2 } else { 8 })
                .max(1),
            durable_replay_memos: a
                .durable_replay_memos
                .unwrap_or(if q { 200 } else { 1_000 })
                .max(1),
            dashboard_runs: a
                .dashboard_runs
                .unwrap_or(if q { 20_000 } else { 1_000_000 })
                .max(1),
            live_viewers: a.live_viewers,
            compare: CompareScale {
                rounds: a.compare_rounds.unwrap_or(1).max(1),
                noop: a
                    .compare_noop
                    .unwrap_or(if q { 2_000 } else { 10_000 })
                    .max(1),
                dag3: a.compare_dag3.unwrap_or(if q { 500 } else { 3_000 }).max(1),
                rate: a.compare_rate.max(1),
                secs: a.compare_secs.unwrap_or(if q { 4 } else { 15 }).max(1),
                peers: a.compare_peers.clone(),
            },
            slots: a.slots.max(1),
            workers: a.workers.max(1),
            task_sleep_ms: a.task_sleep_ms,
            connections: a.connections.max(1),
            max_in_flight: a.max_in_flight.max(1),
        }
    }
}
