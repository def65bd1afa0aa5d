//! The gateway: one OpenAI-compatible endpoint in front of every Server.
//!
//! - [`openai`]: what a request asks for (its `model`, the prefix that routes it) and the
//!   error shape clients expect;
//! - [`table`]: Servers and their EndpointSlices as a routing table (pure);
//! - [`pick`]: which replica takes a request, least-load or prefix-hash with bounded load (pure);
//! - [`scale`]: how many replicas the load asks for, with the scale-down delay (pure);
//! - [`load`]: requests in flight and held, per Server and replica;
//! - [`peers`]: replicas of the gateway add up their loads;
//! - [`adapters`]: fine-tuned adapters loaded into replicas through the engine's run-time API;
//! - [`proxy`]: the HTTP front: hold, forward, retry, stream back;
//! - [`run`]: the watches that keep the table and the loop that writes `spec.replicas`.

pub mod adapters;
pub mod load;
pub mod metrics;
pub mod openai;
pub mod peers;
pub mod pick;
pub mod proxy;
pub mod run;
pub mod scale;
pub mod table;

pub use proxy::{Gateway, Options};
