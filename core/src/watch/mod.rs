//! The watch layer: what the reconcilers read, fed by watches and held in memory, and the
//! streams that tell the controllers something changed. It holds no Substratus behaviour —
//! only how objects are kept small and routed — and can be ignored when changing what the
//! operator does.
//!
//! - [`caches`]: the caches and the triggers a controller subscribes to.
//! - [`index`]: key → summary maps fed by metadata watches, with change notifications.
//! - [`slim`]: the cut-down shapes kept per object (metadata and status, summaries).
//! - [`frozen`]: Substratus objects as held: metadata, what the wiring reads, JSON.
//! - [`referrers`]: who refers to whom, so that a change finds the objects naming it.
//! - [`exclusive`]: a keyed lock, so that an object is reconciled by one lane at a time.

pub mod caches;
pub mod exclusive;
pub mod frozen;
pub mod index;
pub mod referrers;
pub mod slim;

pub use caches::Volume;
pub use caches::{Caches, Watches};
