//! The client side of Substratus: `sub` and the kubectl plugins. Build contexts are packed
//! and uploaded through the signed URL the operator hands out; objects are watched until
//! Ready; notebooks and servers are reached by port-forwarding through the Kubernetes API.

pub mod archive;
pub mod client;
pub mod commands;
pub mod errors;
pub mod get;
pub mod logs;
pub mod manifest;
pub mod objects;
pub mod portforward;
pub mod sync;
pub mod upload;
