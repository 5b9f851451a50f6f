//! A `V1Dispatcher.DurableTask` stream driven by hand, as a worker's SDK would.

use std::time::Duration;

use adze_proto::v1::durable_task_request::Message as In;
use adze_proto::v1::durable_task_response::Message as Out;
use adze_proto::v1::v1_dispatcher_client::V1DispatcherClient;
use adze_proto::v1::{DurableTaskRequest, DurableTaskResponse};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::TestEnv;

/// An open stream: what is sent, what comes back.
pub struct Stream {
    tx: mpsc::Sender<DurableTaskRequest>,
    rx: tonic::Streaming<DurableTaskResponse>,
}

impl Stream {
    /// Opens a stream with the environment's token.
    pub async fn open(env: &TestEnv) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let mut client = V1DispatcherClient::new(env.channel().await);
        let rx = client
            .durable_task(crate::authorized(&env.token, ReceiverStream::new(rx)))
            .await
            .expect("the stream opens")
            .into_inner();
        Self { tx, rx }
    }

    /// Sends one request.
    pub async fn send(&self, message: In) {
        self.tx
            .send(DurableTaskRequest {
                message: Some(message),
            })
            .await
            .expect("send");
    }

    /// The next answer (within 10 s).
    pub async fn next(&mut self) -> Out {
        tokio::time::timeout(Duration::from_secs(10), self.rx.next())
            .await
            .expect("an answer in time")
            .expect("the stream goes on")
            .expect("an answer")
            .message
            .expect("a message")
    }

    /// Nothing comes within a moment.
    pub async fn quiet(&mut self) -> bool {
        tokio::time::timeout(Duration::from_millis(700), self.rx.next())
            .await
            .is_err()
    }
}
