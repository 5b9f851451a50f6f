//! The scenarios, and the context they share: the fleet's address, clients, observers.

mod backlog;
mod children;
mod compare;
mod dashboard;
mod durable;
mod events;
mod family;
mod fanout;
mod latency;
mod live;
mod phase;
mod ramp;
mod timeouts;
mod wire;

pub use phase::{Phase, STALL, open_loop_phase, open_loop_phase_with, settle, wait_done, warmup};

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use adze_sdk::Client;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::args::{Args, Scale, Scenario};
use crate::fleet::{Fleet, Target};
use crate::metrics::{Groups, Members, RssWatch};
use crate::observe::{self, NatsCounters};
use crate::pgstats::{ActivitySampler, PgStats};
use crate::recorder::Hub;
use crate::report::Report;
use crate::workers;

/// Everything a scenario needs.
pub struct Ctx {
    pub scale: Scale,
    pub target: Target,
    pub hub: Arc<Hub>,
    pub nats: Arc<NatsCounters>,
    pub groups: Groups,
    /// Extra process groups (Python processes, by leader pid) measured as their own groups.
    pub extra_groups: Mutex<Vec<(String, u32)>>,
    pub rss: Arc<RssWatch>,
    pub pg: Option<PgStats>,
    pub pg_activity: Option<Arc<ActivitySampler>>,
    /// What the services' spans say of each run (`--otlp-sink`).
    pub spans: Option<crate::otlp::StampLog>,
    /// Trigger clients (one connection each).
    pub clients: Vec<Client>,
    pub log_dir: PathBuf,
    pub repo: PathBuf,
    pub python: PathBuf,
    stop: CancellationToken,
    background: JoinSet<()>,
}

impl Ctx {
    /// Connects the observers and clients to `fleet`.
    pub async fn new(
        args: &Args,
        scale: Scale,
        fleet: &Fleet,
        repo: PathBuf,
    ) -> anyhow::Result<Self> {
        let target = fleet.target.clone();
        let hub = Arc::new(Hub::default());
        let stop = CancellationToken::new();
        let mut background = JoinSet::new();
        let nats = observe::spawn(
            &target.nats_url,
            &target.prefix,
            hub.clone(),
            !args.no_nats_count,
            stop.clone(),
            &mut background,
        )
        .await?;
        let (pg, pg_activity) = match &target.database {
            Some((url, db, owned)) => (
                Some(PgStats::connect(url, db, *owned).await?),
                Some(ActivitySampler::spawn(url, db, stop.clone(), &mut background).await?),
            ),
            None => (None, None),
        };
        let mut groups = Groups::default();
        for (name, pid) in &target.pids {
            groups.add(name.clone(), Members::Pids(vec![*pid]));
        }
        groups.add("bench", Members::Pids(vec![std::process::id()]));
        let db = target.database.as_ref().map(|d| d.1.clone());
        groups.add(
            "postgres",
            Members::Comm {
                comm: "postgres",
                db,
            },
        );
        groups.add(
            "nats-server",
            Members::Comm {
                comm: "nats-server",
                db: None,
            },
        );
        groups.add(
            "redis-server",
            Members::Comm {
                comm: "redis-server",
                db: None,
            },
        );
        let rss = RssWatch::spawn(target.pids.clone(), stop.clone(), &mut background);
        let clients = (0..scale.connections)
            .map(|_| workers::client(&target))
            .collect::<anyhow::Result<_>>()?;
        let python = args
            .python
            .clone()
            .unwrap_or_else(|| repo.join(".adze/venv/bin/python"));
        Ok(Ctx {
            scale,
            target,
            hub,
            nats,
            groups,
            extra_groups: Mutex::default(),
            rss,
            pg,
            pg_activity,
            spans: fleet.span_stamps(),
            clients,
            log_dir: fleet.log_dir.clone(),
            repo,
            python,
            stop,
            background,
        })
    }

    /// Handler sleep of the no-op/sleep workers.
    pub fn task_sleep(&self) -> Duration {
        Duration::from_millis(self.scale.task_sleep_ms)
    }

    /// The process groups, with any extra pids registered so far.
    pub fn all_groups(&self) -> Groups {
        let mut groups = self.groups.clone();
        for (name, pid) in self
            .extra_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            groups.add(name.clone(), Members::ProcessGroup(*pid));
        }
        groups
    }

    /// Stops the observers.
    pub async fn close(mut self) {
        self.stop.cancel();
        while self.background.join_next().await.is_some() {}
        if let Some(pg) = &self.pg {
            pg.close().await;
        }
    }
}

/// Runs one scenario.
pub async fn run(scenario: Scenario, ctx: &Ctx, fleet: &mut Fleet) -> anyhow::Result<Report> {
    match scenario {
        Scenario::Noop => ramp::run(ctx, ramp::Shape::Noop).await,
        Scenario::Dag3 => ramp::run(ctx, ramp::Shape::Dag3).await,
        Scenario::Latency => latency::run(ctx).await,
        Scenario::Fanout => fanout::run(ctx).await,
        Scenario::Backlog => backlog::run(ctx).await,
        Scenario::Wire => wire::run(ctx, fleet).await,
        Scenario::Timeouts => timeouts::run(ctx).await,
        Scenario::Keyed => ramp::run(ctx, ramp::Shape::Keyed).await,
        Scenario::Limited => ramp::run(ctx, ramp::Shape::Limited).await,
        Scenario::Sticky => ramp::run(ctx, ramp::Shape::Sticky).await,
        Scenario::Events => events::run(ctx).await,
        Scenario::Children => children::run(ctx).await,
        Scenario::Durable => durable::run(ctx).await,
        Scenario::Dashboard => dashboard::run(ctx).await,
        Scenario::Live => live::run(ctx).await,
        Scenario::Compare => compare::run(ctx).await,
    }
}
