//! The workspace's own binaries, for tests that run them as a user does (`sub` against the
//! real node). Cargo gives a test the path of its own package's binaries only, so the binary
//! is built here, once per test process, by the cargo running the tests, in its target
//! directory; an up-to-date build is a no-op.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// `cargo build -p <package> --bin <bin>`, returning the executable's path from cargo's
/// messages.
fn build(package: &str, bin: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--locked",
            "--message-format=json-render-diagnostics",
        ])
        .args(["-p", package, "--bin", bin])
        .current_dir(crate::manifests::repo_root())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running cargo build -p {package}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p {package} --bin {bin}: {}",
            out.status
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("cargo built no executable named {bin}"))
}

/// The `sub` CLI.
pub fn sub() -> PathBuf {
    static SUB: OnceLock<PathBuf> = OnceLock::new();
    SUB.get_or_init(|| build("substratus-cli", "sub").unwrap_or_else(|e| panic!("{e}")))
        .clone()
}
