//! The heart of Substratus: pure planners that turn a spec and the observed children into
//! the desired children and status, the reconcilers that apply them, and the [`Cloud`] trait
//! that every provider implements. Nothing in here knows which cloud it runs on.
//!
//! - [`names`]: child names, labels and the storage prefix hash (a contract with users).
//! - [`cloud`]: the `Cloud` trait; [`fake`]: an in-memory implementation for tests.
//! - [`plan`]: pure planners per kind; [`conditions`], [`env`]: their building blocks.
//! - [`reconcile`]: the reconcilers (I/O only): read, plan, apply, write status.
//! - [`controllers`]: the wiring, which watch triggers which reconcile.
//! - [`watch`]: caches and triggers, the memory and latency machinery; no behaviour.

pub mod cloud;
pub mod conditions;
pub mod controllers;
pub mod env;
pub mod fake;
pub mod metrics;
pub mod names;
pub mod plan;
pub mod reconcile;
pub mod watch;

pub use cloud::Cloud;
