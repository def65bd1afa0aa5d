//! The images the local cluster's real node runs, built on this machine ([`crate::image`])
//! from what Debian packages and the repository's own builds provide, cached by content in
//! `~/.cache/substratus/images` (or `$SUBSTRATUS_CACHE/images`).
//!
//! - `pause`: the sandbox image, Kubernetes' `build/pause/linux/pause.c` (from the module
//!   cache of the control plane's build) compiled statically.
//! - `busybox`: Debian's static busybox with its applets, a passwd file and `/tmp`; the
//!   workloads of the tests (shell, `httpd`, `wget`, `find`, `tar`).
//! - `operator`: the operator binary of a release build with the shared libraries it loads,
//!   non-root, as `deploy/Dockerfile` describes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::image::{self, Built, Recipe, Source};

/// The pause image's version (the tag the kubelet of [`crate::KUBERNETES_VERSION`] expects).
const PAUSE_VERSION: &str = "3.10";
/// The busybox image's repository.
pub const BUSYBOX_REPOSITORY: &str = "localhost/substratus/busybox";
/// The operator image's repository.
pub const OPERATOR_REPOSITORY: &str = "localhost/substratus/substratus-operator";

/// Where built images and their inputs are cached.
pub fn cache_dir() -> PathBuf {
    let root = std::env::var_os("SUBSTRATUS_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("substratus")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/substratus")))
        .unwrap_or_else(|| PathBuf::from("/tmp/substratus-cache"));
    root.join("images")
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The Kubernetes module's source directory in the Go module cache.
fn kubernetes_source() -> Result<PathBuf> {
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/gotools/kubernetes");
    let out = run(Command::new("go").current_dir(&module).args([
        "list",
        "-m",
        "-f",
        "{{.Dir}}",
        "k8s.io/kubernetes",
    ]))?;
    let dir = PathBuf::from(out.trim());
    if !dir.is_dir() {
        bail!(
            "k8s.io/kubernetes is not in the module cache ({}); run hack/build-controlplane.sh",
            dir.display()
        );
    }
    Ok(dir)
}

/// The pause image, compiled once per version.
pub fn pause() -> Result<Built> {
    let cache = cache_dir();
    let binary = cache.join(format!("pause-{PAUSE_VERSION}/pause"));
    if !binary.is_file() {
        let source = kubernetes_source()?.join("build/pause/linux/pause.c");
        std::fs::create_dir_all(binary.parent().unwrap_or(&cache))?;
        let partial = binary.with_extension("partial");
        run(Command::new("gcc")
            .args(["-Os", "-static", "-Wall", "-Werror"])
            .arg(format!("-DVERSION=v{PAUSE_VERSION}-substratus"))
            .arg("-o")
            .arg(&partial)
            .arg(&source))?;
        std::fs::rename(&partial, &binary)?;
    }
    let mut r = Recipe::new(crate::node::PAUSE_IMAGE);
    r.add("pause", Source::File(binary, 0o755));
    r.config.entrypoint = vec!["/pause".into()];
    r.config.user = "65535:65535".into();
    image::build(&r, &cache)
}

/// Minimal account files: root, and the `nobody` and distroless `nonroot` users.
fn accounts(r: &mut Recipe) {
    r.add(
        "etc/passwd",
        Source::Bytes(
            b"root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n".to_vec(),
            0o644,
        ),
    )
    .add(
        "etc/group",
        Source::Bytes(
            b"root:x:0:\nnonroot:x:65532:\nnogroup:x:65534:\n".to_vec(),
            0o644,
        ),
    )
    .add("tmp", Source::Dir(0o1777))
    .add("root", Source::Dir(0o700))
    .add("home/nonroot", Source::Dir(0o755));
}

/// Debian's static busybox and every applet it has, as `/bin/<applet>` links.
pub fn busybox() -> Result<Built> {
    let bin = Path::new("/bin/busybox");
    if !bin.is_file() {
        bail!("/bin/busybox is missing; run hack/install-node-deps.sh (busybox-static)");
    }
    let banner = run(Command::new(bin).arg("--help")).unwrap_or_default();
    let version = banner
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .unwrap_or("0")
        .to_owned();
    let applets = run(Command::new(bin).arg("--list"))?;
    let mut r = Recipe::new(format!("{BUSYBOX_REPOSITORY}:{version}"));
    r.add("bin/busybox", Source::File(bin.to_owned(), 0o755));
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        if applet != "busybox" && !applet.contains('/') {
            r.add(&format!("bin/{applet}"), Source::Symlink("busybox".into()));
        }
    }
    accounts(&mut r);
    r.config.env = vec!["PATH=/bin".into()];
    r.config.cmd = vec!["/bin/sh".into()];
    image::build(&r, &cache_dir())
}

/// The kaniko image's repository.
pub const KANIKO_REPOSITORY: &str = "localhost/substratus/kaniko";
/// The kaniko release built (`hack/build-controlplane.sh`): the original project's last.
pub const KANIKO_VERSION: &str = "v1.23.2";

/// The kaniko executor (built with the control plane) laid out as kaniko's own image is:
/// `/kaniko/executor`, CA certificates in `/kaniko/ssl/certs`, `DOCKER_CONFIG` in
/// `/kaniko/.docker`, workdir `/workspace`. It runs as root, as kaniko must: it unpacks the
/// base image over its own filesystem.
pub fn kaniko(bin_dir: &Path) -> Result<Built> {
    let executor = bin_dir.join("kaniko");
    if !executor.is_file() {
        bail!(
            "{} is missing; build it with hack/build-controlplane.sh",
            executor.display()
        );
    }
    let mut r = Recipe::new(format!("{KANIKO_REPOSITORY}:{KANIKO_VERSION}"));
    r.add("kaniko/executor", Source::File(executor, 0o755))
        .add("kaniko/.docker", Source::Dir(0o755))
        .add("workspace", Source::Dir(0o755))
        .add(
            "etc/nsswitch.conf",
            Source::Bytes(b"hosts: files dns\n".to_vec(), 0o644),
        );
    let certs = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if certs.is_file() {
        r.add(
            "kaniko/ssl/certs/ca-certificates.crt",
            Source::File(certs.to_owned(), 0o644),
        );
    }
    r.config.entrypoint = vec!["/kaniko/executor".into()];
    r.config.env = vec![
        "PATH=/usr/local/bin:/kaniko".into(),
        "HOME=/root".into(),
        "USER=root".into(),
        "SSL_CERT_DIR=/kaniko/ssl/certs".into(),
        "DOCKER_CONFIG=/kaniko/.docker/".into(),
    ];
    r.config.working_dir = "/workspace".into();
    image::build(&r, &cache_dir())
}

/// The operator image around `binary` (a release build of `substratus-operator`).
pub fn operator(binary: &Path, tag: &str) -> Result<Built> {
    let mut r = Recipe::new(format!("{OPERATOR_REPOSITORY}:{tag}"));
    image::add_with_libraries(&mut r, "usr/local/bin/substratus-operator", binary)?;
    accounts(&mut r);
    let certs = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if certs.is_file() {
        r.add(
            "etc/ssl/certs/ca-certificates.crt",
            Source::File(certs.to_owned(), 0o644),
        );
    }
    r.config.entrypoint = vec!["/usr/local/bin/substratus-operator".into()];
    r.config.cmd = vec!["run".into()];
    r.config.user = "65532:65532".into();
    image::build(&r, &cache_dir())
}
