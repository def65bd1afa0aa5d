//! Reconcilers: read what the planners need, run them, apply what they ask for. Quiet when
//! nothing changed: children carry the hash of the state they were applied from and are
//! only written when it differs (or when someone else changed it since: see
//! [`crate::watch::slim::drifted`]), status is written only when it differs, and the service
//! accounts and identity bindings of a namespace are ensured once while they exist.

mod accounts;
mod batch;
mod build;
mod context;
mod error;
mod events;
pub mod failure;
pub mod janitor;
mod notebook;
mod pipeline;
#[cfg(test)]
mod scripted;
mod server;
mod status;

pub use accounts::restore_accounts;
pub use batch::{reconcile_dataset, reconcile_model};
pub use context::{Context, FIELD_MANAGER, IDENTITY_BOUND_ANNOTATION};
pub use error::Error;
pub(crate) use error::kube_err;
pub use notebook::reconcile_notebook;
pub use server::reconcile_server;
pub use status::*;
