//! Test support for the compatibility and cluster tests in `tests/tests/`.

pub mod archives;
pub mod audit;
pub mod binaries;
pub mod cluster;
pub mod fake_api;
pub mod kubelet;
pub mod manifests;
pub mod objects;
pub mod operator;
