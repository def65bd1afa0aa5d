//! A real node beside the simulated ones: kubelet, containerd with runc, the CNI bridge,
//! kube-proxy and a DNS server, running real containers from images built on this machine.
//!
//! Everything the node runs is confined to four things that the node's stop (and the sweep of
//! [`crate::confine`], at every start, after a crash) removes completely:
//! - the network namespace [`NETNS`] (see [`crate::netns`]); its iptables chains, bridge and
//!   sysctls go with it;
//! - the cgroup `/substratus-node` in every cgroup v1 hierarchy: the node's daemons run in
//!   `system/` below it (and so do containerd's shims, its children), pods in the kubelet's
//!   `kubepods/`; a stop kills every process left in the subtree;
//! - the directories [`ROOT`] and [`RUN`] (the kubelet's root, containerd's root and state,
//!   the CNI state, pod logs, sockets), with every mount below them;
//! - the per-sandbox network namespaces containerd binds under `/run/netns/cni-*`.
//!
//! There is one real node per machine: the kubelet's device-plugin directory and
//! `/var/log/containers` are fixed paths.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::certs::CertPaths;
use crate::confine::{hierarchies, make_cgroups};
pub use crate::confine::{node_cgroups, node_mounts, node_processes, sweep};
use crate::netns::{EgressProxy, EgressRules, NetNs, Relay};

/// The node's name.
pub const NODE_NAME: &str = "substratus-node";
/// The kubelet's identity (the Node authorizer limits it to its own node and pods).
pub const NODE_USER: &str = "system:node:substratus-node";
/// The DNS server's identity, bound to the read-only ClusterRole `substratus-dns`.
pub const DNS_USER: &str = "system:substratus-dns";
/// The node's address, inside its namespace only.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 2);
/// The node's network (inside the namespace).
pub const NODE_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 254, 0, 0), 24);
/// The pods' network (inside the namespace).
pub const POD_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 244, 0, 0), 24);
/// The `kubernetes` Service's cluster IP (first of `--service-cluster-ip-range`).
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// The cluster DNS Service's IP.
pub const DNS_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The network namespace the node lives in.
pub const NETNS: &str = "substratus-node";
/// Persistent state of the node (removed on stop).
pub const ROOT: &str = "/var/lib/substratus-node";
/// Sockets and runtime state of the node (removed on stop).
pub const RUN: &str = "/run/substratus-node";
/// The node's cgroup, under every v1 hierarchy.
pub const CGROUP: &str = "substratus-node";
/// The CSI driver of the node's S3 plugin (`csi/s3`), which mounts bucket prefixes.
pub const CSI_DRIVER: &str = "s3.csi.substratus.ai";
/// Where the node's S3 plugin reads the credentials of inline volumes: the files `endpoint`,
/// `accessKeyID`, `secretAccessKey` and `region` ([`write_csi_credentials`]), the layout of a
/// Secret mounted as a volume.
pub const CSI_CREDENTIALS: &str = "/var/lib/substratus-node/csi-s3/credentials";
/// The in-cluster registry: its Service name and port (the kind backend's registry URL).
pub const REGISTRY_HOST: &str = "registry.substratus.svc.cluster.local:5000";
/// The registry's port on the node's address.
pub const REGISTRY_PORT: u16 = 5000;
/// The image containerd runs every pod sandbox from.
pub const PAUSE_IMAGE: &str = "localhost/substratus/pause:3.10";

/// Where the cgroup v1 hierarchies are mounted.
pub(crate) const CGROUP_FS: &str = "/sys/fs/cgroup";

/// Debian's CNI plugins.
const CNI_BIN: &str = "/usr/lib/cni";

/// Programs the node needs besides the control plane's: Debian's packages (installed by
/// `hack/install-node-deps.sh`).
pub const HOST_PROGRAMS: [&str; 8] = [
    "/usr/bin/containerd",
    "/usr/bin/containerd-shim-runc-v2",
    "/usr/sbin/runc",
    "/usr/bin/ctr",
    "/usr/sbin/iptables",
    "/usr/bin/nsenter",
    "/usr/lib/cni/bridge",
    "/usr/bin/s3fs",
];

/// Why a real node cannot run here, if it cannot.
pub fn unavailable(bin_dir: &Path) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("a real node needs root (network namespace, mounts, cgroups)".into());
    }
    if !Path::new(CGROUP_FS).join("memory").is_dir() {
        return Some(format!(
            "a real node needs cgroup v1 hierarchies under {CGROUP_FS}"
        ));
    }
    for p in HOST_PROGRAMS {
        if !Path::new(p).exists() {
            return Some(format!("{p} is missing; run hack/install-node-deps.sh"));
        }
    }
    for b in ["kubelet", "kube-proxy", "substratus-csi-s3", "registry"] {
        if !bin_dir.join(b).is_file() {
            return Some(format!(
                "{} is missing; build it with hack/build-controlplane.sh",
                bin_dir.join(b).display()
            ));
        }
    }
    None
}

/// Flags the API server needs to reach a real node: cluster traffic through the egress
/// proxy, kubelets authenticated by the cluster CA, and node credentials limited by the Node
/// authorizer.
pub fn apiserver_flags(state_dir: &Path, certs: &CertPaths) -> Result<Vec<String>> {
    let egress = state_dir.join("egress-selector.yaml");
    std::fs::write(
        &egress,
        format!(
            "apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: {}
",
            egress_socket().display()
        ),
    )?;
    let client = certs
        .client(crate::certs::APISERVER_KUBELET_CLIENT)
        .context("the API server's kubelet client certificate")?;
    Ok(vec![
        format!("--egress-selector-config-file={}", egress.display()),
        format!("--kubelet-client-certificate={}", client.cert.display()),
        format!("--kubelet-client-key={}", client.key.display()),
        format!(
            "--kubelet-certificate-authority={}",
            certs.ca_cert.display()
        ),
        "--authorization-mode=Node,RBAC".into(),
    ])
}

/// The unix socket of the API server's egress proxy.
pub fn egress_socket() -> PathBuf {
    Path::new(RUN).join("egress.sock")
}

/// The parts that exist before the API server starts: the namespace and the egress proxy.
pub struct Network {
    pub ns: NetNs,
    egress: Option<EgressProxy>,
}

impl Network {
    /// Sweeps what an earlier node left, then creates the namespace and the egress proxy.
    pub fn create() -> Result<Network> {
        sweep()?;
        std::fs::create_dir_all(RUN)?;
        std::fs::create_dir_all(ROOT)?;
        let ns = NetNs::create(NETNS, NODE_IP, NODE_NET.1)?;
        let egress = EgressProxy::start(
            &egress_socket(),
            &ns,
            EgressRules {
                inside: vec![NODE_NET, POD_NET],
            },
        )?;
        Ok(Network {
            ns,
            egress: Some(egress),
        })
    }
}

/// A running real node.
pub struct RealNode {
    network: Network,
    procs: Vec<(String, Child)>,
    relays: Vec<Relay>,
    kubectl: Box<dyn Fn() -> Command + Send>,
    logs: PathBuf,
    /// Seconds from the first node process to the node being Ready.
    pub started_in: Duration,
}

/// What the node is started with.
pub struct NodeOptions<'a> {
    pub bin_dir: &'a Path,
    pub state_dir: &'a Path,
    pub certs: &'a CertPaths,
    pub api_port: u16,
    /// Image archives to import before the kubelet starts (the pause image among them).
    pub images: Vec<PathBuf>,
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn kubeconfig_of(state_dir: &Path, user: &str) -> PathBuf {
    state_dir.join(format!("{}.kubeconfig", user.replace(':', "-")))
}

impl RealNode {
    /// Starts containerd, imports the images, starts the kubelet, kube-proxy and the DNS
    /// server (when built) inside `network`, and waits until the node is Ready.
    pub fn start(
        network: Network,
        opts: NodeOptions<'_>,
        kubectl: Box<dyn Fn() -> Command + Send>,
    ) -> Result<RealNode> {
        let logs = opts.state_dir.join("logs");
        let mut node = RealNode {
            network,
            procs: Vec::new(),
            relays: Vec::new(),
            kubectl,
            logs,
            started_in: Duration::ZERO,
        };
        let t0 = Instant::now();
        node.relays
            .push(crate::netns::forward_into(&node.network.ns, opts.api_port)?);
        node.cluster_objects(opts.api_port)?;
        make_cgroups()?;
        node.start_containerd()?;
        for archive in &opts.images {
            node.import(archive)?;
        }
        node.start_kubelet(&opts)?;
        node.start_kube_proxy(&opts)?;
        node.spawn(
            "csi-s3",
            &opts.bin_dir.join("substratus-csi-s3"),
            vec![
                format!("--driver-name={CSI_DRIVER}"),
                format!("--kubelet-root={ROOT}/kubelet"),
                format!("--node-id={NODE_NAME}"),
                format!("--state-dir={ROOT}/csi-s3"),
                format!("--inline-credentials={CSI_CREDENTIALS}"),
                "--s3fs=/usr/bin/s3fs".into(),
            ],
        )?;
        node.start_registry(&opts)?;
        if opts.bin_dir.join("coredns").is_file() {
            node.start_dns(&opts)?;
        }
        node.wait_ready()?;
        node.started_in = t0.elapsed();
        Ok(node)
    }

    /// The `kubernetes` Service's endpoint (the namespace's door to the API server) and the
    /// DNS Service, its endpoint and the DNS server's read-only role.
    fn cluster_objects(&self, api_port: u16) -> Result<()> {
        let slice = |name: &str, service: &str, ports: serde_json::Value| {
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name, "namespace": if service == "kubernetes" {"default"} else {"kube-system"},
                    "labels": {"kubernetes.io/service-name": service,
                               "endpointslice.kubernetes.io/managed-by": "devcluster.substratus.ai"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [NODE_IP.to_string()], "conditions": {"ready": true}}],
                "ports": ports,
            })
        };
        let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
            slice("kubernetes", "kubernetes", json!([{"name": "https", "port": api_port, "protocol": "TCP"}])),
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
             "spec": {"clusterIP": DNS_SERVICE_IP.to_string(), "ports": [
                 {"name": "dns", "port": 53, "protocol": "UDP"},
                 {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}},
            slice("kube-dns", "kube-dns", json!([
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}])),
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "substratus"}},
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "registry", "namespace": "substratus"},
             "spec": {"ports": [{"name": "http", "port": REGISTRY_PORT, "protocol": "TCP"}]}},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": "registry", "namespace": "substratus",
                 "labels": {"kubernetes.io/service-name": "registry",
                            "endpointslice.kubernetes.io/managed-by": "devcluster.substratus.ai"}},
             "addressType": "IPv4",
             "endpoints": [{"addresses": [NODE_IP.to_string()], "conditions": {"ready": true}}],
             "ports": [{"name": "http", "port": REGISTRY_PORT, "protocol": "TCP"}]},
            // Static and inline volumes, nothing to attach: the kubelet publishes them
            // directly, telling the plugin the pod's namespace (inline volumes are derived
            // from it).
            {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
             "metadata": {"name": CSI_DRIVER},
             "spec": {"attachRequired": false, "podInfoOnMount": true, "fsGroupPolicy": "None",
                      "volumeLifecycleModes": ["Persistent", "Ephemeral"]}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": "substratus-dns"},
             "rules": [
                 {"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["list", "watch"]},
                 {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "substratus-dns"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "substratus-dns"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": DNS_USER}]},
        ]});
        let mut apply = (self.kubectl)();
        apply.args(["apply", "--server-side", "-f", "-"]);
        crate::pipe_json(apply, &objects).context("creating the node's Services")?;
        Ok(())
    }

    /// Starts `program` inside the namespace and the node's `system` cgroup; it dies with
    /// this process.
    fn spawn(&mut self, name: &str, program: &Path, args: Vec<String>) -> Result<()> {
        let log = std::fs::File::create(self.logs.join(format!("{name}.log")))?;
        let mut cmd = Command::new("/usr/bin/nsenter");
        cmd.arg(format!("--net={}", self.network.ns.path().display()))
            .arg("--")
            .arg(program)
            .args(&args)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let procs_files: Vec<std::ffi::CString> = hierarchies()?
            .iter()
            .map(|h| {
                std::ffi::CString::new(
                    h.join(CGROUP)
                        .join("system/cgroup.procs")
                        .to_string_lossy()
                        .into_owned(),
                )
            })
            .collect::<Result<_, _>>()?;
        crate::dies_with_parent(&mut cmd);
        // SAFETY: between fork and exec only async-signal-safe calls (open, write, close) on
        // memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for f in &procs_files {
                    let fd = libc::open(f.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // "0" moves the writing process.
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    if n != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        self.procs.push((name.to_owned(), child));
        Ok(())
    }

    fn check_alive(&mut self) -> Result<()> {
        crate::check_alive(&mut self.procs, &self.logs)
    }

    fn start_containerd(&mut self) -> Result<()> {
        let root = Path::new(ROOT);
        let run = Path::new(RUN);
        let cni_conf = root.join("cni/net.d");
        std::fs::create_dir_all(&cni_conf)?;
        write_json(
            &cni_conf.join("10-substratus.conflist"),
            &json!({
                "cniVersion": "0.4.0",
                "name": "substratus",
                "plugins": [
                    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
                     "hairpinMode": true,
                     "ipam": {"type": "host-local",
                              "ranges": [[{"subnet": format!("{}/{}", POD_NET.0, POD_NET.1)}]],
                              "routes": [{"dst": "0.0.0.0/0"}],
                              "dataDir": root.join("cni/ipam")}},
                    {"type": "portmap", "capabilities": {"portMappings": true}},
                ],
            }),
        )?;
        let config = format!(
            r#"version = 2
root = "{root}/containerd"
state = "{run}/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{run}/containerd.sock"

[ttrpc]
  address = "{run}/containerd-ttrpc.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # Root here may not lower oom_score_adj (no CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{run}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{root}/certs.d"
"#,
            root = root.display(),
            run = run.display(),
            pause = PAUSE_IMAGE,
            cni_bin = CNI_BIN,
            cni_conf = cni_conf.display(),
        );
        // The registry's Service name resolves only inside the cluster: containerd (on the
        // node, with no cluster DNS) reaches it at the node's address, over plain HTTP.
        let hosts = root.join("certs.d").join(REGISTRY_HOST);
        std::fs::create_dir_all(&hosts)?;
        std::fs::write(
            hosts.join("hosts.toml"),
            format!(
                "server = \"http://{REGISTRY_HOST}\"\n\n[host.\"http://{NODE_IP}:{REGISTRY_PORT}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )?;
        let path = root.join("containerd.toml");
        std::fs::write(&path, config)?;
        self.spawn(
            "containerd",
            Path::new("/usr/bin/containerd"),
            vec![format!("--config={}", path.display())],
        )?;
        let sock = run.join("containerd.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.ctr(&["version"]).is_err() {
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("containerd did not answer on {} within 30s", sock.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Runs `ctr` against the node's containerd, in the Kubernetes namespace.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        ctr(args)
    }

    /// Imports a docker-archive into the node's containerd, where pods find it.
    pub fn import(&self, archive: &Path) -> Result<()> {
        let path = archive.to_string_lossy();
        self.ctr(&["images", "import", &path])
            .with_context(|| format!("importing {}", archive.display()))?;
        Ok(())
    }

    fn start_kubelet(&mut self, opts: &NodeOptions<'_>) -> Result<()> {
        let root = Path::new(ROOT);
        let resolv = root.join("resolv.conf");
        // Pods with dnsPolicy Default get no nameserver from the host: nothing outside the
        // namespace is reachable anyway.
        std::fs::write(&resolv, "options ndots:1\n")?;
        let config = root.join("kubelet.json");
        write_json(
            &config,
            &json!({
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "port": 10250,
                "readOnlyPort": 0,
                "healthzBindAddress": "127.0.0.1",
                "healthzPort": 10248,
                "failCgroupV1": false,
                "cgroupDriver": "cgroupfs",
                "cgroupRoot": format!("/{CGROUP}"),
                "failSwapOn": false,
                "oomScoreAdj": 0,
                "containerRuntimeEndpoint": format!("unix://{RUN}/containerd.sock"),
                "authentication": {
                    "anonymous": {"enabled": false},
                    "webhook": {"enabled": true},
                    "x509": {"clientCAFile": opts.certs.ca_cert},
                },
                "authorization": {"mode": "Webhook"},
                "tlsCertFile": opts.certs.kubelet_serving_cert,
                "tlsPrivateKeyFile": opts.certs.kubelet_serving_key,
                "clusterDNS": [DNS_SERVICE_IP.to_string()],
                "clusterDomain": "cluster.local",
                "resolvConf": resolv,
                "podLogsDir": root.join("pod-logs"),
                "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                                 "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
                "imageGCHighThresholdPercent": 100,
                "imageGCLowThresholdPercent": 99,
                "serializeImagePulls": false,
                "maxPods": 110,
                "enforceNodeAllocatable": ["pods"],
            }),
        )?;
        let kubeconfig = kubeconfig_of(opts.state_dir, NODE_USER);
        self.spawn(
            "kubelet",
            &opts.bin_dir.join("kubelet"),
            vec![
                format!("--config={}", config.display()),
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--root-dir={}", root.join("kubelet").display()),
                format!("--node-ip={NODE_IP}"),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-labels=devcluster.substratus.ai/real=true"),
            ],
        )
    }

    fn start_kube_proxy(&mut self, opts: &NodeOptions<'_>) -> Result<()> {
        let config = Path::new(ROOT).join("kube-proxy.json");
        write_json(
            &config,
            &json!({
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "mode": "iptables",
                "clientConnection": {"kubeconfig": kubeconfig_of(opts.state_dir, "system:kube-proxy")},
                "hostnameOverride": NODE_NAME,
                "clusterCIDR": format!("{}/{}", POD_NET.0, POD_NET.1),
                "metricsBindAddress": "127.0.0.1:10249",
                "healthzBindAddress": "127.0.0.1:10256",
                // Replies of a pod reached through a Service on the same bridge come back
                // through the node, where the translation is undone.
                "iptables": {"masqueradeAll": true},
                // The namespace's conntrack table is the host's: leave its sizes alone.
                "conntrack": {"maxPerCore": 0, "min": 0,
                              "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            }),
        )?;
        self.spawn(
            "kube-proxy",
            &opts.bin_dir.join("kube-proxy"),
            vec![format!("--config={}", config.display())],
        )
    }

    /// The CNCF distribution registry on the node's address, storing under [`ROOT`]: where
    /// builds push and the node pulls built images from.
    fn start_registry(&mut self, opts: &NodeOptions<'_>) -> Result<()> {
        let config = Path::new(ROOT).join("registry.yaml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {ROOT}/registry
  delete:
    enabled: true
http:
  addr: 0.0.0.0:{REGISTRY_PORT}
"
            ),
        )?;
        self.spawn(
            "registry",
            &opts.bin_dir.join("registry"),
            vec!["serve".into(), config.to_string_lossy().into_owned()],
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while push_dial().is_err() {
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("the registry did not listen within 20s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn start_dns(&mut self, opts: &NodeOptions<'_>) -> Result<()> {
        let corefile = Path::new(ROOT).join("Corefile");
        std::fs::write(
            &corefile,
            format!(
                ".:53 {{
    bind {NODE_IP}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
",
                kubeconfig = kubeconfig_of(opts.state_dir, DNS_USER).display()
            ),
        )?;
        self.spawn(
            "coredns",
            &opts.bin_dir.join("coredns"),
            vec!["-conf".into(), corefile.to_string_lossy().into_owned()],
        )
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            self.check_alive()?;
            let out = (self.kubectl)()
                .args([
                    "get",
                    "node",
                    NODE_NAME,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .output()?;
            if String::from_utf8_lossy(&out.stdout).trim() == "True" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the real node was not Ready within 120s; see {}",
                    self.logs.display()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops the node: cordons it, deletes its pods (so that their network teardown runs),
    /// stops its processes and removes everything it made.
    pub fn stop(&mut self) {
        let _ = (self.kubectl)()
            .args(["cordon", NODE_NAME])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = (self.kubectl)()
            .args([
                "delete",
                "pods",
                "-A",
                "--field-selector",
                &format!("spec.nodeName={NODE_NAME}"),
                "--grace-period=1",
                "--timeout=30s",
                "--wait=true",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        while let Some((_, mut child)) = self.procs.pop() {
            crate::terminate(&mut child, Duration::from_secs(5));
        }
        self.relays.clear();
        self.network.egress.take();
        let _ = (self.kubectl)()
            .args(["delete", "node", NODE_NAME, "--wait=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(e) = sweep() {
            eprintln!("devcluster: cleaning up the real node: {e:#}");
        }
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.egress.take();
        let _ = self.ns.delete();
    }
}

/// A connection to the node's registry, opened from inside the node's namespace.
pub fn push_dial() -> std::io::Result<std::net::TcpStream> {
    NetNs { name: NETNS.into() }
        .run(|| {
            Ok(std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from((NODE_IP, REGISTRY_PORT)),
                Duration::from_secs(5),
            )?)
        })
        .map_err(std::io::Error::other)
}

/// Pushes an image archive to the node's registry as `<name>:<tag>` (pulled in the cluster
/// as `REGISTRY_HOST/<name>:<tag>`).
pub fn push_to_registry(archive: &Path, name: &str, tag: &str) -> Result<String> {
    crate::registry::Registry {
        host: REGISTRY_HOST.into(),
        dial: push_dial,
    }
    .push_archive(archive, name, tag)
}

/// Gives the node's S3 plugin the credentials of inline volumes ([`CSI_CREDENTIALS`]),
/// readable by root alone.
pub fn write_csi_credentials(endpoint: &str, access_key: &str, secret_key: &str) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(CSI_CREDENTIALS)
        .with_context(|| format!("creating {CSI_CREDENTIALS}"))?;
    for (file, value) in [
        ("endpoint", endpoint),
        ("accessKeyID", access_key),
        ("secretAccessKey", secret_key),
        ("region", "us-east-1"),
    ] {
        let path = Path::new(CSI_CREDENTIALS).join(file);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        std::io::Write::write_all(&mut f, value.as_bytes())?;
    }
    Ok(())
}

/// Runs `ctr` against the node's containerd (namespace `k8s.io`).
pub fn ctr(args: &[&str]) -> Result<String> {
    let out = Command::new("/usr/bin/ctr")
        .arg(format!("--address={RUN}/containerd.sock"))
        .args(["--namespace", "k8s.io"])
        .args(args)
        .output()
        .context("running ctr")?;
    if !out.status.success() {
        bail!(
            "ctr {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
