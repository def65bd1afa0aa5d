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

/// This machine's CA bundle at `path` in the image, when the machine has one.
fn add_ca_certificates(r: &mut Recipe, path: &str) {
    let certs = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if certs.is_file() {
        r.add(path, Source::File(certs.to_owned(), 0o644));
    }
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
    add_ca_certificates(&mut r, "kaniko/ssl/certs/ca-certificates.crt");
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
    add_ca_certificates(&mut r, "etc/ssl/certs/ca-certificates.crt");
    r.config.entrypoint = vec!["/usr/local/bin/substratus-operator".into()];
    r.config.cmd = vec!["run".into()];
    r.config.user = "65532:65532".into();
    image::build(&r, &cache_dir())
}

/// The Debian release the Python image is made from, and its packages.
const PYTHON_SUITE: &str = "bookworm";
const PYTHON_PACKAGES: &str = "python3,python-is-python3,ca-certificates";
/// The Python image: the tag says what runs in it (Debian bookworm's Python is 3.11).
pub const PYTHON_REFERENCE: &str = "localhost/substratus/python:3.11-slim";

/// The Debian mirror apt uses on this machine (`URIs:` of a deb822 source, or the URL of a
/// one-line `deb` source, ending in `/debian`).
fn debian_mirror() -> Result<String> {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".sources") || name.ends_with(".list") {
                texts.push(std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    mirror_in(&texts).context("no Debian mirror in apt's sources (/etc/apt/sources.list*)")
}

fn mirror_in(texts: &[String]) -> Option<String> {
    texts.iter().flat_map(|t| t.lines()).find_map(|l| {
        let l = l.trim();
        let url = if let Some(rest) = l.strip_prefix("URIs:") {
            rest.split_whitespace().next()?
        } else if l.starts_with("deb ") {
            l.split_whitespace().find(|w| w.contains("://"))?
        } else {
            return None;
        };
        url.trim_end_matches('/')
            .ends_with("/debian")
            .then(|| url.to_owned())
    })
}

/// Mount points below `dir` (debootstrap mounts /proc and /sys in its target while it runs).
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = crate::confine::mount_points()
        .into_iter()
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
}

/// Removes a root filesystem left by an interrupted debootstrap, unmounting what it mounted
/// first (so nothing of the host's /proc or /sys is ever removed through it).
fn remove_rootfs(dir: &Path) -> Result<()> {
    for m in mounts_below(dir) {
        run(Command::new("umount").arg("-l").arg(&m))?;
    }
    if !mounts_below(dir).is_empty() {
        bail!("{} still has mounts; not removing it", dir.display());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    Ok(())
}

/// Adds every file, directory and link below `root` to the image, at the same path.
fn add_tree(r: &mut Recipe, root: &Path, dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(&path)?;
        let mode = meta.permissions().mode() & 0o7777;
        let t = meta.file_type();
        if t.is_symlink() {
            let target = std::fs::read_link(&path)?;
            r.add(&rel, Source::Symlink(target.to_string_lossy().into_owned()));
        } else if t.is_dir() {
            r.add(&rel, Source::Dir(mode));
            add_tree(r, root, &path)?;
        } else if t.is_file() {
            r.add(&rel, Source::File(path.clone(), mode));
        }
        // Devices, sockets and pipes: the runtime makes /dev; nothing else needs them.
    }
    Ok(())
}

/// Debian's Python 3.11 on a minimal Debian root filesystem made by debootstrap from the
/// mirror apt uses here: the base image of `examples/custom-model` (`python:3.11-slim`),
/// pushed to the local registry as `library/python:3.11-slim`, which the builder's registry
/// mirror setting reads instead of Docker Hub. The root filesystem is made once (about a
/// minute) and kept in the cache.
pub fn python() -> Result<Built> {
    let rootfs = python_rootfs()?;
    let mut r = Recipe::new(PYTHON_REFERENCE);
    add_tree(&mut r, &rootfs, &rootfs)?;
    r.files.remove(".complete");
    r.config.env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "LANG=C.UTF-8".into(),
    ];
    r.config.cmd = vec!["python3".into()];
    image::build(&r, &cache_dir())
}

/// The Python image's root filesystem, made by debootstrap once and kept in the cache.
fn python_rootfs() -> Result<PathBuf> {
    let cache = cache_dir();
    let key = format!(
        "{PYTHON_SUITE}-minbase-{}",
        PYTHON_PACKAGES.replace(',', "-")
    );
    let rootfs = cache.join("rootfs").join(&key);
    if !rootfs.join(".complete").is_file() {
        let partial = cache.join("rootfs").join(format!("{key}.partial"));
        remove_rootfs(&partial)?;
        remove_rootfs(&rootfs)?;
        std::fs::create_dir_all(&partial)?;
        let mirror = debian_mirror()?;
        let made = run(Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={PYTHON_PACKAGES}")])
            .arg(PYTHON_SUITE)
            .arg(&partial)
            .arg(&mirror));
        if let Err(e) = made {
            remove_rootfs(&partial)?;
            return Err(e.context("debootstrap (hack/install-node-deps.sh installs it)"));
        }
        if !mounts_below(&partial).is_empty() {
            remove_rootfs(&partial)?;
            bail!("debootstrap left mounts in its target");
        }
        for junk in ["var/cache/apt/archives", "var/lib/apt/lists", "var/log"] {
            let d = partial.join(junk);
            if d.is_dir() {
                std::fs::remove_dir_all(&d)?;
                std::fs::create_dir_all(&d)?;
            }
        }
        std::fs::rename(&partial, &rootfs)?;
        std::fs::write(rootfs.join(".complete"), "")?;
    }
    Ok(rootfs)
}

/// The reference workloads' image: the Python image plus `images/tinylm` at `/opt/tinylm`
/// (and its sample records at `/opt/tinylm/data`), with one command per role on `$PATH`
/// (`load-dataset`, `load-model`, `train`, `serve`); `serve` is the default. The tag is the
/// package's version.
pub const TINYLM_REPOSITORY: &str = "localhost/substratus/tinylm";

/// The version in `images/tinylm/tinylm/__init__.py`.
pub fn tinylm_version() -> Result<String> {
    let init = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/tinylm/tinylm/__init__.py");
    let text =
        std::fs::read_to_string(&init).with_context(|| format!("reading {}", init.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("__version__ = \"")?.strip_suffix('"'))
        .map(str::to_owned)
        .with_context(|| format!("no __version__ in {}", init.display()))
}

pub fn tinylm() -> Result<Built> {
    image::build(&tinylm_recipe()?, &cache_dir())
}

fn tinylm_recipe() -> Result<Recipe> {
    let rootfs = python_rootfs()?;
    let mut r = Recipe::new(format!("{TINYLM_REPOSITORY}:{}", tinylm_version()?));
    add_tree(&mut r, &rootfs, &rootfs)?;
    r.files.remove(".complete");
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/tinylm/tinylm");
    let mut sources: Vec<_> = std::fs::read_dir(&package)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("py" | "txt")))
        .collect();
    sources.sort();
    for path in sources {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(name) = name else { continue };
        r.add(
            &format!("opt/tinylm/tinylm/{name}"),
            Source::File(path, 0o644),
        );
    }
    for (command, module) in [
        ("load-dataset", "load_dataset"),
        ("load-model", "load_model"),
        ("train", "train"),
        ("serve", "serve"),
    ] {
        let script = format!("#!/bin/sh\nexec python3 -m tinylm.{module} \"$@\"\n");
        r.add(
            &format!("usr/local/bin/{command}"),
            Source::Bytes(script.into_bytes(), 0o755),
        );
    }
    // The sample records the local examples' Dataset copies.
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/tinylm/data");
    for e in std::fs::read_dir(&data)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        r.add(
            &format!("opt/tinylm/data/{name}"),
            Source::File(e.path(), 0o644),
        );
    }
    r.add("content", Source::Dir(0o755));
    r.config.env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "LANG=C.UTF-8".into(),
        "PYTHONPATH=/opt/tinylm".into(),
        "PYTHONUNBUFFERED=1".into(),
    ];
    r.config.working_dir = "/content".into();
    r.config.cmd = vec!["serve".into()];
    r.config.exposed_ports = vec![8080];
    Ok(r)
}

/// The notebook image: the reference workloads' image with Jupyter (notebook and ipykernel,
/// from PyPI wheels for CPython 3.11 on x86_64 Linux, downloaded once into the cache) on
/// `$PYTHONPATH`, serving on 8888 with the operator's default command (`jupyter lab
/// --NotebookApp.token=$(NOTEBOOK_TOKEN) --notebook-dir=/content`).
pub const NOTEBOOK_REPOSITORY: &str = "localhost/substratus/tinylm-notebook";
/// The Jupyter packages of the notebook image.
const JUPYTER_PACKAGES: [&str; 2] = ["notebook==7.2.2", "ipykernel==6.29.5"];

/// The Python version of the Python image (Debian bookworm's).
const IMAGE_PYTHON: &str = "3.11";

/// `pip` options that pick wheels for the image's Python, whatever this machine runs.
const WHEEL_TARGET: [&str; 13] = [
    "--only-binary=:all:",
    "--implementation",
    "cp",
    "--python-version",
    IMAGE_PYTHON,
    "--platform",
    "manylinux2014_x86_64",
    "--platform",
    "manylinux_2_17_x86_64",
    "--platform",
    "manylinux_2_28_x86_64",
    "--platform",
    "any",
];

/// The Jupyter packages installed into a directory for `$PYTHONPATH`, made once and cached
/// by the package versions. The image runs as a user that cannot write `__pycache__`, so
/// without bytecode made here every start compiles Jupyter's modules again (tens of seconds
/// on two busy cores); the bytecode is made when this machine's Python is the image's
/// (3.11), as unchecked-hash `.pyc`s, valid whatever the files' times in the image.
fn jupyter_site() -> Result<PathBuf> {
    let cache = cache_dir();
    let compiles =
        run(Command::new("python3")
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]))
        .map(|v| v.trim() == IMAGE_PYTHON)
        .unwrap_or(false);
    let key = format!(
        "{}{}",
        JUPYTER_PACKAGES.join("-").replace("==", "-"),
        if compiles { "-pyc" } else { "" }
    );
    let site = cache.join("site").join(&key);
    if site.join(".complete").is_file() {
        return Ok(site);
    }
    let wheels = cache.join("wheels").join(&key);
    if !wheels.join(".complete").is_file() {
        std::fs::create_dir_all(&wheels)?;
        run(Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "-q",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&wheels)
            .args(WHEEL_TARGET)
            .args(JUPYTER_PACKAGES))
        .context("downloading the Jupyter wheels (python3 -m pip)")?;
        std::fs::write(wheels.join(".complete"), "")?;
    }
    let partial = cache.join("site").join(format!("{key}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    std::fs::create_dir_all(&partial)?;
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-index",
        ])
        .args(["--no-compile", "--find-links"])
        .arg(&wheels)
        .arg("--target")
        .arg(&partial)
        .args(WHEEL_TARGET)
        .args(JUPYTER_PACKAGES))
    .context("installing the Jupyter wheels")?;
    if compiles {
        // A module that does not compile (a template, say) only keeps its source: the run
        // fails on that, not on a missing speed-up, so the exit code is not an error here.
        Command::new("python3")
            .args(["-m", "compileall", "-q", "-q", "-j", "0"])
            .args(["--invalidation-mode", "unchecked-hash"])
            .arg(&partial)
            .output()
            .context("compiling the Jupyter modules (python3 -m compileall)")?;
    }
    if site.exists() {
        std::fs::remove_dir_all(&site)?;
    }
    std::fs::rename(&partial, &site)?;
    std::fs::write(site.join(".complete"), "")?;
    Ok(site)
}

pub fn notebook() -> Result<Built> {
    let base = tinylm_recipe()?;
    let site = jupyter_site()?;
    let mut r = base;
    r.reference = format!("{NOTEBOOK_REPOSITORY}:{}", tinylm_version()?);
    // The wheels' own scripts name this machine's Python; the image runs the modules.
    let mut jupyter = Recipe::new("");
    add_tree(&mut jupyter, &site, &site)?;
    for (path, source) in jupyter.files {
        if path == ".complete" || path == "bin" || path.starts_with("bin/") {
            continue;
        }
        r.files.insert(format!("opt/jupyter/{path}"), source);
    }
    r.files.insert("opt/jupyter".into(), Source::Dir(0o755));
    // `jupyter X` runs `jupyter-X` from $PATH.
    for (command, module) in [
        ("jupyter", "jupyter"),
        ("jupyter-lab", "jupyterlab"),
        ("jupyter-notebook", "notebook"),
        ("jupyter-server", "jupyter_server"),
        ("jupyter-kernel", "jupyter_client.kernelapp"),
    ] {
        let script = format!("#!/bin/sh\nexec python3 -m {module} \"$@\"\n");
        r.add(
            &format!("usr/local/bin/{command}"),
            Source::Bytes(script.into_bytes(), 0o755),
        );
    }
    r.config.env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "LANG=C.UTF-8".into(),
        "PYTHONPATH=/opt/tinylm:/opt/jupyter".into(),
        "PYTHONUNBUFFERED=1".into(),
        "JUPYTER_PATH=/opt/jupyter/share/jupyter".into(),
        "JUPYTER_DATA_DIR=/tmp/jupyter-data".into(),
        "JUPYTER_RUNTIME_DIR=/tmp/jupyter-runtime".into(),
    ];
    r.config.cmd = [
        "jupyter",
        "lab",
        "--allow-root",
        "--ip=0.0.0.0",
        "--no-browser",
        "--notebook-dir=/content",
    ]
    .map(str::to_owned)
    .to_vec();
    r.config.exposed_ports = vec![8888];
    image::build(&r, &cache_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debian_mirror_is_read_from_either_source_format() {
        let deb822 = "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n".to_owned();
        assert_eq!(
            mirror_in(&[deb822]).as_deref(),
            Some("http://mirror.example/debian")
        );
        let one_line = "deb [arch=amd64] http://mirror.example/debian/ bookworm main\n".to_owned();
        assert_eq!(
            mirror_in(&[one_line]).as_deref(),
            Some("http://mirror.example/debian/")
        );
        let security_only = "URIs: http://mirror.example/debian-security\n".to_owned();
        assert_eq!(mirror_in(&[security_only]), None);
    }
}
