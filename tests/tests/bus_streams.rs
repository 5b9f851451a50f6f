//! Every service of a fleet makes sure its JetStream streams exist as it starts, so
//! several create the same streams at the same moment. Each of them must start: a
//! creation the server refuses because another one just made the stream (its subjects
//! overlap, or the name is taken) finds that stream instead of failing the service.

use adze_bus::Bus;
use adze_tests::nats_url;
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_starting_at_once_all_find_their_streams() {
    for round in 0..40 {
        let prefix = format!(
            "streams{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        // One connection per service, as separate processes have.
        let mut buses = Vec::new();
        for _ in 0..6 {
            buses.push(Bus::connect(&nats_url(), &prefix).await.expect("connect"));
        }
        let go = std::sync::Arc::new(tokio::sync::Barrier::new(buses.len()));
        let mut starting = JoinSet::new();
        for bus in buses.clone() {
            let go = go.clone();
            starting.spawn(async move {
                go.wait().await;
                bus.ensure_streams().await
            });
        }
        let mut failed = Vec::new();
        while let Some(done) = starting.join_next().await {
            if let Err(e) = done.expect("join") {
                failed.push(e.to_string());
            }
        }
        let subjects = buses[0].subjects().clone();
        let streams = [
            subjects.events_stream(),
            subjects.intake_stream(),
            subjects.dead_letter_stream(),
        ];
        let js = buses[0].jetstream().clone();
        let mut found = 0;
        for stream in &streams {
            if js.get_stream(stream).await.is_ok() {
                found += 1;
            }
            let _ = js.delete_stream(stream).await;
        }
        assert!(
            failed.is_empty(),
            "round {round}: services failed to start: {failed:?}"
        );
        assert_eq!(found, streams.len(), "round {round}: every stream exists");
    }
}
