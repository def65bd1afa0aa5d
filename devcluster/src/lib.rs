//! A real Kubernetes control plane on 127.0.0.1 for tests and local use.
//!
//! etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as unprivileged
//! processes with generated certificates and RBAC; kwok simulates the nodes of a cloud's GPU
//! node pools ([`profiles`]) and the lifecycle of their pods (`kwok/stages.yaml`). Nothing
//! listens on Service or Pod IPs: they are only strings, and only loopback is dialled.
//!
//! Every process gets `PR_SET_PDEATHSIG`, so none outlives the launcher, whatever way it ends.
#![allow(
    unsafe_code,
    reason = "process control through libc (pre_exec, kill, setns, geteuid), which std does not wrap"
)]

pub mod certs;
pub mod confine;
pub mod emulators;
pub mod image;
pub mod netns;
pub mod node;
pub mod ports;
pub mod profiles;
pub mod recipes;
pub mod registry;
pub mod s3;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

pub use profiles::Profile;

/// kwok stage definitions shipped with the launcher.
pub const STAGES_YAML: &str = include_str!("../kwok/stages.yaml");

/// The Kubernetes version the binaries are built at (see `hack/build-controlplane.sh`).
pub const KUBERNETES_VERSION: &str = "v1.36.3";

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct Options {
    /// Directory holding kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
    /// etcd and kwok.
    pub bin_dir: PathBuf,
    /// Directory for certificates, kubeconfigs, etcd data and logs; emptied at start.
    pub state_dir: PathBuf,
    /// Node pools to create.
    pub profiles: Vec<Profile>,
    /// Multiplies the node count of every pool.
    pub scale: usize,
    /// Adds a real node ([`node`]) that runs the pods no simulated GPU node takes: the
    /// profiles' CPU-only pools are left out, so CPU work lands on real containers.
    pub real_node: bool,
    /// Image archives loaded into the real node at start (the pause image is always).
    pub node_images: Vec<PathBuf>,
}

impl Options {
    /// The nodes of the profiles this cluster simulates.
    fn simulated_nodes(&self) -> Vec<serde_json::Value> {
        self.profiles
            .iter()
            .flat_map(|p| profiles::nodes(*p, self.scale))
            .filter(|n| !self.real_node || profiles::has_gpus(n))
            .map(|mut n| {
                // Only pods that ask for a GPU may land on a simulated node; the
                // ExtendedResourceToleration admission adds this toleration to them.
                if self.real_node {
                    profiles::taint_for_gpu_pods_only(&mut n);
                }
                n
            })
            .collect()
    }
}

/// A running cluster. Dropping it stops every process.
pub struct Cluster {
    procs: Vec<(String, Child)>,
    bin_dir: PathBuf,
    state_dir: PathBuf,
    kubeconfig: PathBuf,
    api_port: u16,
    etcd_port: u16,
    etcd_peer_port: u16,
    /// kwok's kubelet API (logs, exec, port-forward of simulated pods), on loopback.
    kubelet_port: u16,
    certs: certs::CertPaths,
    /// The real node's namespace and egress proxy (made before the API server starts).
    network: Option<node::Network>,
    node: Option<node::RealNode>,
}

/// Finds the binaries: `$SUBSTRATUS_CONTROLPLANE_BIN`, else the cache that
/// `hack/build-controlplane.sh` fills. Never builds: a missing binary is an error saying how
/// to build it (a Go build of Kubernetes takes about 20 minutes on 2 cores).
pub fn locate_binaries() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SUBSTRATUS_CONTROLPLANE_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/build-controlplane.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--cached-only")
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "the local cluster's binaries are not built ({}); build them once with \
             hack/build-controlplane.sh (cached under ~/.cache/substratus, about 20 minutes), \
             or run everything with hack/test.sh; hack/unit.sh runs the tests that need no cluster",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    Ok(PathBuf::from(dir))
}

/// Whether a start failed because a component could not bind its port.
fn lost_a_port(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("address already in use")
}

/// Waits until `check` returns true, at most `timeout`, polling every `every`.
fn wait_until(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

impl Cluster {
    /// Starts etcd → kube-apiserver → kube-controller-manager → kube-scheduler → kwok, creates
    /// the profiles' nodes and waits until they are Ready and schedulable.
    ///
    /// A component that finds its port taken (another program bound it after it was chosen)
    /// makes the whole start begin again on fresh ports, up to three times.
    pub fn start(opts: &Options) -> Result<Cluster> {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        loop {
            match Cluster::start_once(opts) {
                Err(e) if attempt < ATTEMPTS && lost_a_port(&e) => {
                    eprintln!(
                        "devcluster: a port was taken; starting again on fresh ports ({e:#})"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn start_once(opts: &Options) -> Result<Cluster> {
        for b in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubectl",
            "kwok",
        ] {
            let p = opts.bin_dir.join(b);
            if !p.is_file() {
                bail!(
                    "{} is missing; build it with hack/build-controlplane.sh",
                    p.display()
                );
            }
        }
        if opts.state_dir.exists() {
            std::fs::remove_dir_all(&opts.state_dir)
                .with_context(|| format!("clearing {}", opts.state_dir.display()))?;
        }
        std::fs::create_dir_all(opts.state_dir.join("logs"))?;
        let certs = certs::generate(&opts.state_dir.join("pki"))?;
        let mut cluster = Cluster {
            procs: Vec::new(),
            bin_dir: opts.bin_dir.clone(),
            state_dir: opts.state_dir.clone(),
            kubeconfig: opts.state_dir.join("kubeconfig"),
            api_port: ports::free_loopback_port()?,
            etcd_port: ports::free_loopback_port()?,
            etcd_peer_port: ports::free_loopback_port()?,
            kubelet_port: ports::free_loopback_port()?,
            certs,
            network: None,
            node: None,
        };
        if opts.real_node {
            if let Some(why) = node::unavailable(&opts.bin_dir) {
                bail!("no real node: {why}");
            }
            cluster.network = Some(node::Network::create()?);
        }
        cluster.write_kubeconfigs()?;
        std::fs::write(cluster.state_dir.join("kwok-stages.yaml"), STAGES_YAML)?;
        std::fs::write(cluster.state_dir.join("audit-policy.yaml"), AUDIT_POLICY)?;

        cluster.start_etcd()?;
        cluster.start_apiserver()?;
        cluster.install_kwok_crds()?;
        for c in ["kube-controller-manager", "kube-scheduler", "kwok"] {
            cluster.start_component(c)?;
        }
        let nodes = opts.simulated_nodes();
        if !nodes.is_empty() {
            apply_node_list(&cluster.bin_dir, &cluster.kubeconfig, &nodes)?;
            cluster.wait_for_nodes(nodes.len())?;
        }
        cluster.wait_for_default_service_account()?;
        if let Some(network) = cluster.network.take() {
            let mut images = vec![recipes::pause()?.archive];
            images.extend(opts.node_images.iter().cloned());
            let (bin, kc) = (cluster.bin_dir.clone(), cluster.kubeconfig.clone());
            cluster.node = Some(node::RealNode::start(
                network,
                node::NodeOptions {
                    bin_dir: &opts.bin_dir,
                    state_dir: &opts.state_dir,
                    certs: &cluster.certs,
                    api_port: cluster.api_port,
                    images,
                },
                Box::new(move || kubectl(&bin, &kc)),
            )?);
        }
        Ok(cluster)
    }

    /// The real node, when the cluster has one.
    pub fn real_node(&self) -> Option<&node::RealNode> {
        self.node.as_ref()
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's audit log: one JSON line per request.
    pub fn audit_log(&self) -> PathBuf {
        audit_log_of(&self.kubeconfig)
    }

    /// The API server's URL.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// A `kubectl` command bound to this cluster's admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        kubectl(&self.bin_dir, &self.kubeconfig)
    }

    /// Creates (or updates) the nodes of a profile.
    pub fn add_nodes(&self, profile: Profile, scale: usize) -> Result<()> {
        apply_nodes(&self.bin_dir, &self.kubeconfig, profile, scale)
    }

    fn write_kubeconfigs(&self) -> Result<()> {
        for client in &self.certs.clients {
            let file = if client.user == "admin" {
                self.kubeconfig.clone()
            } else {
                self.state_dir
                    .join(format!("{}.kubeconfig", client.user.replace(':', "-")))
            };
            let cfg = json!({
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "substratus-dev", "cluster": {
                    "server": self.server_url(),
                    "certificate-authority": self.certs.ca_cert,
                }}],
                "users": [{"name": client.user, "user": {
                    "client-certificate": client.cert,
                    "client-key": client.key,
                }}],
                "contexts": [{"name": "substratus-dev", "context": {
                    "cluster": "substratus-dev", "user": client.user, "namespace": "default",
                }}],
                "current-context": "substratus-dev",
            });
            std::fs::write(&file, serde_json::to_vec_pretty(&cfg)?)
                .with_context(|| format!("writing {}", file.display()))?;
        }
        Ok(())
    }

    fn spawn(&mut self, name: &str, args: Vec<String>) -> Result<()> {
        let log_path = self.state_dir.join("logs").join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(self.bin_dir.join(name));
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        dies_with_parent(&mut cmd);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        self.procs.push((name.to_owned(), child));
        Ok(())
    }

    /// Fails with the tail of a component's log if it has exited.
    fn check_alive(&mut self) -> Result<()> {
        check_alive(&mut self.procs, &self.state_dir.join("logs"))
    }

    fn start_etcd(&mut self) -> Result<()> {
        let client = format!("http://127.0.0.1:{}", self.etcd_port);
        let peer = format!("http://127.0.0.1:{}", self.etcd_peer_port);
        let data = self.state_dir.join("etcd");
        self.spawn(
            "etcd",
            vec![
                "--name=devcluster".into(),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster=devcluster={peer}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
                "--listen-metrics-urls=".into(),
            ],
        )?;
        let port = self.etcd_port;
        let mut alive = Ok(());
        wait_until(
            "etcd health",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                alive = self.check_alive();
                alive.is_err() || http_get_ok(port, "/health")
            },
        )?;
        alive
    }

    fn start_apiserver(&mut self) -> Result<()> {
        let c = self.certs.clone();
        let cert_dir = self.state_dir.join("apiserver");
        std::fs::create_dir_all(&cert_dir)?;
        let node_flags = if self.network.is_some() || self.node.is_some() {
            node::apiserver_flags(&self.state_dir, &c)?
        } else {
            vec!["--authorization-mode=RBAC".into()]
        };
        self.spawn(
            "kube-apiserver",
            node_flags
                .into_iter()
                .chain([
                    format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port),
                    "--bind-address=127.0.0.1".into(),
                    "--advertise-address=127.0.0.1".into(),
                    format!("--secure-port={}", self.api_port),
                    format!("--cert-dir={}", cert_dir.display()),
                    format!("--tls-cert-file={}", c.serving_cert.display()),
                    format!("--tls-private-key-file={}", c.serving_key.display()),
                    format!("--client-ca-file={}", c.ca_cert.display()),
                    format!(
                        "--service-account-key-file={}",
                        c.service_account_pub.display()
                    ),
                    format!(
                        "--service-account-signing-key-file={}",
                        c.service_account_key.display()
                    ),
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                    "--service-cluster-ip-range=10.96.0.0/16".into(),
                    "--endpoint-reconciler-type=none".into(),
                    "--allow-privileged=true".into(),
                    // GKE and EKS add the nvidia.com/gpu toleration to pods that request GPUs;
                    // NodeRestriction keeps a kubelet to its own node and pods.
                    "--enable-admission-plugins=ExtendedResourceToleration,NodeRestriction".into(),
                    // Simulated nodes' kubelet API is kwok's, at their InternalIP (127.0.0.1).
                    "--kubelet-preferred-address-types=InternalIP".into(),
                    "--profiling=false".into(),
                    // Every request is logged (metadata only), so tests and benchmarks can count
                    // what a client sent, by user, verb and resource.
                    format!(
                        "--audit-policy-file={}",
                        self.state_dir.join("audit-policy.yaml").display()
                    ),
                    format!("--audit-log-path={}", self.audit_log().display()),
                    "--audit-log-format=json".into(),
                    "--audit-log-maxsize=1024".into(),
                    "--audit-log-mode=blocking".into(),
                ])
                .collect(),
        )?;
        let mut alive = Ok(());
        let (bin, kc) = (self.bin_dir.clone(), self.kubeconfig.clone());
        wait_until(
            "kube-apiserver /readyz",
            Duration::from_secs(90),
            Duration::from_millis(250),
            || {
                alive = self.check_alive();
                alive.is_err()
                    || kubectl(&bin, &kc)
                        .args(["get", "--raw=/readyz"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .map(|s| s.success())
                        .unwrap_or(false)
            },
        )?;
        alive
    }

    /// kwok's Logs, Exec and PortForward CRDs (copied next to the binaries by
    /// `hack/build-controlplane.sh`), Established before kwok starts.
    fn install_kwok_crds(&self) -> Result<()> {
        let dir = self.bin_dir.join("kwok-crds");
        if !dir.is_dir() {
            bail!(
                "{} is missing; run hack/build-controlplane.sh",
                dir.display()
            );
        }
        let out = self
            .kubectl()
            .args(["apply", "--server-side", "-f"])
            .arg(&dir)
            .output()?;
        if !out.status.success() {
            bail!(
                "installing kwok's CRDs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = self
            .kubectl()
            .args([
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/logs.kwok.x-k8s.io",
                "crd/execs.kwok.x-k8s.io",
                "crd/portforwards.kwok.x-k8s.io",
            ])
            .output()?;
        if !out.status.success() {
            bail!(
                "kwok's CRDs not Established: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn start_component(&mut self, name: &str) -> Result<()> {
        let c = self.certs.clone();
        let own = |user: &str| {
            self.state_dir
                .join(format!("{}.kubeconfig", user.replace(':', "-")))
        };
        let args: Vec<String> = match name {
            "kube-controller-manager" => vec![
                format!(
                    "--kubeconfig={}",
                    own("system:kube-controller-manager").display()
                ),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=true".into(),
                format!(
                    "--service-account-private-key-file={}",
                    c.service_account_key.display()
                ),
                format!("--root-ca-file={}", c.ca_cert.display()),
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route"
                    .into(),
                // kwok heartbeats every simulated node every 10 s; at 1,000 nodes on a
                // starved machine a heartbeat can be a minute late, and a node marked
                // NotReady turns its pods' Ready false for good (nothing re-reports them).
                "--node-monitor-grace-period=300s".into(),
                "--concurrent-job-syncs=20".into(),
            ],
            "kube-scheduler" => vec![
                format!("--kubeconfig={}", own("system:kube-scheduler").display()),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
                "--leader-elect=false".into(),
            ],
            "kwok" => vec![
                format!("--kubeconfig={}", self.kubeconfig.display()),
                format!(
                    "--config={}",
                    self.state_dir.join("kwok-stages.yaml").display()
                ),
                "--manage-all-nodes=false".into(),
                format!(
                    "--manage-nodes-with-annotation-selector={}=fake",
                    profiles::SIMULATED_NODE_ANNOTATION
                ),
                "--cidr=10.0.0.1/16".into(),
                // Nodes are reached on loopback, where kwok serves the kubelet API: logs,
                // exec and port-forward of a simulated pod go where its Logs, Exec and
                // PortForward objects say (a local file, process or port).
                "--node-ip=127.0.0.1".into(),
                format!("--node-port={}", self.kubelet_port),
                format!("--server-address=127.0.0.1:{}", self.kubelet_port),
                format!("--tls-cert-file={}", c.serving_cert.display()),
                format!("--tls-private-key-file={}", c.serving_key.display()),
                "--enable-crds=Logs,Exec,PortForward".into(),
                "--node-lease-duration-seconds=0".into(),
            ],
            other => bail!("unknown component {other}"),
        };
        self.spawn(name, args)?;
        std::thread::sleep(Duration::from_millis(200));
        self.check_alive()
    }

    fn wait_for_nodes(&mut self, nodes: usize) -> Result<()> {
        let (bin, kc) = (self.bin_dir.clone(), self.kubeconfig.clone());
        let mut alive = Ok(());
        // Ready, and the node-lifecycle controller has lifted the not-ready taint. kwok
        // initialises nodes one by one: large profiles get more time.
        wait_until(
            "simulated nodes to be Ready and schedulable",
            Duration::from_secs(120) + Duration::from_millis(300) * nodes as u32,
            Duration::from_millis(500),
            || {
                alive = self.check_alive();
                if alive.is_err() {
                    return true;
                }
                let out = kubectl(&bin, &kc)
                    .args(["get", "nodes", "-o", "json"])
                    .output();
                let Ok(out) = out else { return false };
                let Ok(list) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                    return false;
                };
                let items = list["items"].as_array().cloned().unwrap_or_default();
                !items.is_empty()
                    && items.iter().all(|n| {
                        let ready = n["status"]["conditions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True");
                        let tainted =
                            n["spec"]["taints"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|t| {
                                    t["key"]
                                        .as_str()
                                        .is_some_and(|k| k.starts_with("node.kubernetes.io/"))
                                });
                        ready && !tainted
                    })
            },
        )?;
        alive
    }

    fn wait_for_default_service_account(&mut self) -> Result<()> {
        let (bin, kc) = (self.bin_dir.clone(), self.kubeconfig.clone());
        wait_until(
            "the default ServiceAccount",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || {
                kubectl(&bin, &kc)
                    .args(["get", "serviceaccount", "default", "-n", "default"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            },
        )
    }

    /// Stops every process, newest first: SIGTERM, then SIGKILL after 5 s. The real node
    /// goes first, while the API server can still delete its pods.
    pub fn stop(&mut self) {
        self.node.take();
        self.network.take();
        while let Some((_, mut child)) = self.procs.pop() {
            terminate(&mut child, Duration::from_secs(5));
        }
    }

    /// Stops one component for good (SIGTERM, then SIGKILL after 5 s): a benchmark that
    /// measures the operator alone stops the parts that would run its Jobs.
    pub fn stop_component(&mut self, name: &str) -> Result<()> {
        let Some(i) = self.procs.iter().position(|(n, _)| n == name) else {
            return Err(anyhow!("{name} is not running"));
        };
        let (_, mut child) = self.procs.remove(i);
        terminate(&mut child, Duration::from_secs(5));
        Ok(())
    }

    /// Stops one component (SIGKILL) and starts it again with the same arguments; for fault
    /// tests. Returns once it answers again.
    pub fn restart(&mut self, name: &str) -> Result<()> {
        let Some(i) = self.procs.iter().position(|(n, _)| n == name) else {
            return Err(anyhow!("{name} is not running"));
        };
        let (_, mut child) = self.procs.remove(i);
        let _ = child.kill();
        let _ = child.wait();
        match name {
            "etcd" => self.start_etcd(),
            "kube-apiserver" => self.start_apiserver(),
            other => self.start_component(other),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes the process `cmd` starts receive SIGKILL when the thread that started it ends.
pub(crate) fn dies_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Fails with the last lines of its log (`<logs>/<name>.log`) if a process has exited.
pub(crate) fn check_alive(procs: &mut [(String, Child)], logs: &Path) -> Result<()> {
    for (name, child) in procs {
        if let Some(status) = child.try_wait()? {
            let log = logs.join(format!("{name}.log"));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            bail!(
                "{name} exited ({status}); last lines of {}:\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    Ok(())
}

/// Stops a child process as an orchestrator would: SIGTERM, then SIGKILL once `grace` has
/// passed; reaps it either way.
pub fn terminate(child: &mut std::process::Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(None)) {
        // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Audit policy: metadata of every request, once, when its response is complete.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
";

/// The audit log of the cluster whose admin kubeconfig is `kubeconfig` (they share a
/// state directory).
pub fn audit_log_of(kubeconfig: &Path) -> PathBuf {
    kubeconfig
        .parent()
        .unwrap_or(Path::new("."))
        .join("audit.log")
}

/// A `kubectl` command with an explicit kubeconfig.
pub fn kubectl(bin_dir: &Path, kubeconfig: &Path) -> Command {
    let mut cmd = Command::new(bin_dir.join("kubectl"));
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display()));
    cmd
}

/// Creates or updates the nodes of a profile through `kubectl apply`.
pub fn apply_nodes(
    bin_dir: &Path,
    kubeconfig: &Path,
    profile: Profile,
    scale: usize,
) -> Result<()> {
    apply_node_list(bin_dir, kubeconfig, &profiles::nodes(profile, scale))
        .with_context(|| format!("creating the {} nodes", profile.name()))
}

fn apply_node_list(bin_dir: &Path, kubeconfig: &Path, nodes: &[serde_json::Value]) -> Result<()> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": nodes});
    let mut apply = kubectl(bin_dir, kubeconfig);
    apply.args(["apply", "-f", "-"]);
    pipe_json(apply, &list).context("kubectl apply of the nodes")
}

/// Runs `cmd` (a `kubectl … -f -`) with `value` as JSON on its standard input; fails with
/// what it wrote to standard error.
pub fn pipe_json(mut cmd: Command, value: &serde_json::Value) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running kubectl")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("kubectl stdin"))?
        .write_all(&serde_json::to_vec(value)?)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A plain HTTP GET on loopback; true on a 200 answer.
fn http_get_ok(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.0 200")
        || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bind_conflict_starts_the_cluster_again() {
        let kwok = anyhow!(
            "kwok exited (exit status: 1); last lines:\n\"err\":\"listen tcp 127.0.0.1:42297: bind: address already in use\""
        );
        assert!(lost_a_port(&kwok.context("starting the cluster")));
        assert!(!lost_a_port(&anyhow!(
            "timed out after 30s waiting for etcd health"
        )));
        assert!(!lost_a_port(&anyhow!(
            "kube-apiserver exited (exit status: 1)"
        )));
    }
}
