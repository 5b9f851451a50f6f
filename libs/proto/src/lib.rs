//! Hatchet-compatible gRPC protocol types, generated at build time from `proto/`.
//!
//! The root package (no `package` line, as the SDKs expect) holds `Dispatcher`,
//! `EventsService` and `WorkflowService` and is generated at this crate's root;
//! package `v1` holds `AdminService`; package `adze.v1` holds Adze's extensions
//! (`WorkerReports`).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/_.rs"));

/// Messages and services of protobuf package `v1`.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/v1.rs"));
}

/// Adze's own extensions of the protocol (package `adze.v1`).
pub mod adze {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/adze.v1.rs"));
    }
}

/// The root (unnamed) protobuf package under a name, for readable imports.
pub mod hatchet {
    pub use crate::{
        dispatcher_client, dispatcher_server, events_service_client, events_service_server,
        workflow_service_client, workflow_service_server, *,
    };
}

/// The compiled descriptors of every protobuf file above (a `FileDescriptorSet`,
/// encoded), for tools and tests that walk the services and their methods.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// The engine version reported by `Dispatcher.GetVersion`. The SDKs choose their
/// protocol from it; see HATCHET-WIRE.md ("Version gate").
pub const ENGINE_VERSION: &str = "v0.80.5";

/// `google.rpc.Status`: the rich error detail a gRPC status carries in its
/// `grpc-status-details-bin` trailer (`tonic::Status::details`).
pub mod rpc {
    /// The status with its typed details.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        /// The gRPC code.
        #[prost(int32, tag = "1")]
        pub code: i32,
        /// The message.
        #[prost(string, tag = "2")]
        pub message: String,
        /// Typed details (`type.googleapis.com/<full message name>`).
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<prost_types::Any>,
    }
}
