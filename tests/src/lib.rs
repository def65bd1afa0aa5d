//! Test support for the compatibility and cluster tests in `tests/tests/`.

pub mod cluster;
pub mod manifests;
