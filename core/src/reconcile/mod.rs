//! Reconcilers: read what the planners need, run them, apply what they ask for. Quiet when
//! nothing changed: children carry the hash of the state they were applied from and are
//! only written when it differs (or when someone else changed it since: see
//! [`slim::drifted`]), status is written only when it differs, and the service accounts and
//! identity bindings of a namespace are ensured once while they exist.

mod batch;
mod build;
mod caches;
mod context;
mod controllers;
mod error;
mod events;
mod exclusive;
pub mod failure;
mod index;
pub mod janitor;
mod notebook;
mod server;
mod slim;
mod status;

pub use caches::Caches;
pub use context::{Context, FIELD_MANAGER, IDENTITY_BOUND_ANNOTATION};
pub use controllers::{ControllerOptions, run};
pub use error::Error;
pub(crate) use error::kube_err;
pub use status::*;
