//! The cluster-test fixture: a real control plane (the one named by
//! `SUBSTRATUS_TEST_KUBECONFIG`, or one started for this test process), our CRDs installed
//! and Established, and a namespace per test that is deleted afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use substratus_devcluster::{Cluster, Options, Profile, locate_binaries};

use crate::manifests::repo_root;

/// A cluster the tests of this process share.
#[derive(Clone, Debug)]
pub struct SharedCluster {
    pub kubeconfig: PathBuf,
    pub bin_dir: PathBuf,
}

static SHARED: OnceLock<Result<SharedCluster, String>> = OnceLock::new();

/// Whether the cluster this process starts has a real node ([`with_real_node`]).
static REAL_NODE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the cluster this process starts have a real node beside the simulated kind GPU node
/// (the CPU-only pools are left out, so CPU pods run in real containers). Call before the
/// first [`shared`]; stop it with [`stop`] so that the node is cleaned up.
pub fn with_real_node() {
    REAL_NODE.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The shared cluster, started on first use (with every profile's node pools) unless
/// `SUBSTRATUS_TEST_KUBECONFIG` names a running one. Our CRDs are installed and Established.
pub fn shared() -> &'static SharedCluster {
    let res = SHARED.get_or_init(|| start_or_attach().map_err(|e| format!("{e:#}")));
    match res {
        Ok(c) => c,
        Err(e) => panic!("no test cluster: {e}"),
    }
}

fn start_or_attach() -> Result<SharedCluster> {
    let bin_dir = locate_binaries()?;
    let kubeconfig = match std::env::var_os("SUBSTRATUS_TEST_KUBECONFIG") {
        Some(kc) => PathBuf::from(kc),
        None => start_in_background(&bin_dir)?,
    };
    let cluster = SharedCluster {
        kubeconfig,
        bin_dir,
    };
    install_crds(&cluster)?;
    Ok(cluster)
}

/// Starts a cluster owned by a thread that lives as long as the test process; every process
/// of the cluster dies with it (`PR_SET_PDEATHSIG`), even when a test aborts.
fn start_in_background(bin_dir: &Path) -> Result<PathBuf> {
    remove_stale_state_dirs();
    let state_dir =
        std::env::temp_dir().join(format!("substratus-test-cluster-{}", std::process::id()));
    let real_node = REAL_NODE.load(std::sync::atomic::Ordering::SeqCst);
    let opts = Options {
        bin_dir: bin_dir.to_path_buf(),
        state_dir,
        profiles: if real_node {
            vec![Profile::Kind]
        } else {
            Profile::ALL.to_vec()
        },
        scale: 1,
        real_node,
        node_images: if real_node {
            vec![substratus_devcluster::recipes::busybox()?.archive]
        } else {
            vec![]
        },
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let (control_tx, control_rx) = std::sync::mpsc::channel::<Restart>();
    std::thread::Builder::new()
        .name("test-cluster".into())
        .spawn(move || match Cluster::start(&opts) {
            Ok(mut cluster) => {
                let _ = tx.send(Ok(cluster.kubeconfig().to_path_buf()));
                // This thread owns every process of the cluster (they die with it), so
                // restarts for fault tests happen here too.
                for (component, reply) in control_rx {
                    if component == STOP {
                        cluster.stop();
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    let _ = reply.send(cluster.restart(&component).map_err(|e| format!("{e:#}")));
                }
                loop {
                    std::thread::park();
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        })?;
    let _ = CONTROL.set(std::sync::Mutex::new(control_tx));
    rx.recv_timeout(Duration::from_secs(300))
        .context("the test cluster did not start within 300s")?
}

type Restart = (String, std::sync::mpsc::Sender<Result<(), String>>);
/// The control message that stops the whole cluster.
const STOP: &str = "<stop>";

/// Stops the cluster this process started (its real node first, which removes everything
/// the node made); returns once it is stopped.
pub fn stop() -> Result<(), String> {
    restart_component(STOP)
}
static CONTROL: OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Restart>>> = OnceLock::new();

/// Kills a component of the cluster this process started (etcd, kube-apiserver,
/// kube-controller-manager, kube-scheduler, kwok) and starts it again; returns once it
/// answers. Fails for a cluster named by `SUBSTRATUS_TEST_KUBECONFIG`.
pub fn restart_component(component: &str) -> Result<(), String> {
    shared();
    let control = CONTROL
        .get()
        .ok_or("the cluster was not started by this process")?;
    let (reply_tx, reply_rx) = std::sync::mpsc::channel();
    control
        .lock()
        .map_err(|e| e.to_string())?
        .send((component.to_owned(), reply_tx))
        .map_err(|e| e.to_string())?;
    reply_rx
        .recv_timeout(Duration::from_secs(180))
        .map_err(|e| format!("restarting {component}: {e}"))?
}

/// Removes the state directories of earlier test processes that are gone.
fn remove_stale_state_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("substratus-test-cluster-") else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A `kubectl` bound to the shared cluster.
pub fn kubectl() -> Command {
    let c = shared();
    substratus_devcluster::kubectl(&c.bin_dir, &c.kubeconfig)
}

/// `kubectl <args>` on the shared cluster, with `stdin` (JSON) if any: its output, or its
/// error output.
pub fn kubectl_with(args: &[&str], stdin: Option<&serde_json::Value>) -> Result<String, String> {
    use std::io::Write;
    let mut child = kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut input = child.stdin.take().expect("kubectl's stdin");
    if let Some(v) = stdin {
        input
            .write_all(v.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
    }
    drop(input);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `kubectl get <what> <name> -n <ns> -o json`.
pub fn kubectl_json(what: &str, name: &str, ns: &str) -> Result<serde_json::Value, String> {
    let out = kubectl_with(&["get", what, name, "-n", ns, "-o", "json"], None)?;
    serde_json::from_str(&out).map_err(|e| e.to_string())
}

fn run(mut cmd: Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn install_crds(c: &SharedCluster) -> Result<()> {
    let crds = repo_root().join("crds/generated/crds.yaml");
    let mut apply = substratus_devcluster::kubectl(&c.bin_dir, &c.kubeconfig);
    apply.args([
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=substratus-tests",
        "-f",
    ]);
    apply.arg(&crds);
    run(apply)?;
    let mut wait = substratus_devcluster::kubectl(&c.bin_dir, &c.kubeconfig);
    wait.args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/models.substratus.ai",
        "crd/datasets.substratus.ai",
        "crd/servers.substratus.ai",
        "crd/notebooks.substratus.ai",
    ]);
    run(wait)?;
    Ok(())
}

/// Installs rustls's one crypto provider (aws-lc-rs, the only one in the graph) as the
/// process default.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A client of the shared cluster, as the admin.
pub async fn client() -> Client {
    install_crypto_provider();
    let c = shared();
    let kc = Kubeconfig::read_from(&c.kubeconfig).expect("reading the test kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a client configuration from the test kubeconfig");
    Client::try_from(config).expect("a client of the test cluster")
}

/// A namespace of its own for one test; deleted when dropped.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// Creates `t-<prefix>-<random>`.
    pub fn new(prefix: &str) -> TestNamespace {
        let suffix: u32 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ std::process::id())
            .unwrap_or(0);
        let name = format!("t-{prefix}-{:x}", suffix & 0xffffff);
        let mut cmd = kubectl();
        cmd.args(["create", "namespace", &name]);
        run(cmd).unwrap_or_else(|e| panic!("creating namespace {name}: {e:#}"));
        TestNamespace { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let mut cmd = kubectl();
        cmd.args([
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
        let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// Polls `check` every 200 ms until it returns `Some`, for at most `timeout`; panics naming
/// `what` (and the last observation) when time runs out.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    poll_until(what, timeout, check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`wait_for`], but returns the timeout as an error, for a caller that explains it.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out after {timeout:?} waiting for {what}; last seen: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
