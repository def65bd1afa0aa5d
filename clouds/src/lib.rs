//! Providers of [`substratus_core::Cloud`]: one module per cloud, each behind a cargo feature
//! (all on by default). Provider SDK types never cross the trait.
//!
//! - [`kind`]: a local kind cluster with an S3-compatible bucket (MinIO).
//! - `gcp`: GKE, Cloud Storage, Artifact Registry (feature `gcp`).
//! - `aws`: EKS, S3, ECR (feature `aws`).
//! - `azure`: AKS, Blob Storage, ACR (feature `azure`).
//! - [`gpu`]: the GPU catalogues of every provider, as data.
//! - [`static_pv`], [`checksum`]: what several backends share.

pub mod checksum;
pub mod gpu;
pub mod kind;
pub mod static_pv;

#[cfg(any(feature = "gcp", feature = "aws", feature = "azure"))]
pub mod rest;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "gcp")]
pub mod gcp;
