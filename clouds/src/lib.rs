//! Providers of [`substratus_core::Cloud`]: one module per cloud. Provider SDK types never
//! cross the trait.
//!
//! - [`kind`]: a local kind cluster with an S3-compatible bucket (MinIO).
//! - [`gpu`]: the GPU catalogues of every provider, as data.

pub mod gpu;
pub mod kind;
