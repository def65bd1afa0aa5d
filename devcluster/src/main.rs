//! `substratus-devcluster`: start, stop and populate the local simulated cluster.
#![allow(
    unsafe_code,
    reason = "signal handling and process control through libc, which std does not wrap"
)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use substratus_devcluster::{Cluster, Options, Profile, apply_nodes, locate_binaries};

#[derive(Parser)]
#[command(
    name = "substratus-devcluster",
    version,
    about = "A real Kubernetes control plane on 127.0.0.1 with simulated GPU node pools"
)]
struct Cli {
    /// Directory for certificates, kubeconfig, etcd data and logs.
    #[arg(
        long,
        global = true,
        env = "SUBSTRATUS_DEVCLUSTER_DIR",
        default_value = ".cluster"
    )]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the cluster and keep it running until Ctrl-C or SIGTERM (or `down`).
    Up {
        /// Node-pool profiles to create: gcp, aws, azure, kind (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "kind")]
        profile: Vec<String>,
        /// Multiply the node count of every pool.
        #[arg(long, default_value_t = 1)]
        scale: usize,
        /// Add a real node (kubelet, containerd, CNI, kube-proxy, DNS) in its own network
        /// namespace; CPU work runs there, GPU pools stay simulated. Needs root.
        #[arg(long)]
        real_node: bool,
        /// Image archives to load into the real node at start.
        #[arg(long = "node-image")]
        node_images: Vec<PathBuf>,
        /// Host loopback ports the real node and its pods reach at the same port on the
        /// node's address (e.g. the local S3 server's).
        #[arg(long = "node-forward")]
        node_forwards: Vec<u16>,
    },
    /// Say whether a real node can run on this machine, and why not.
    NodeCheck,
    /// Build an image of the local cluster (pause, busybox, operator) as a docker-archive,
    /// cached by content; prints the archive's path.
    ImageBuild {
        /// pause, busybox, kaniko, python or operator.
        name: String,
        /// The operator binary (for `operator`).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// The image tag (for `operator`).
        #[arg(long, default_value = "dev")]
        tag: String,
    },
    /// Load image archives into the running real node.
    ImageLoad { archives: Vec<PathBuf> },
    /// Push an image archive to the real node's registry as NAME:TAG (pulled in the cluster
    /// as registry.substratus.svc.cluster.local:5000/NAME:TAG).
    ImagePush {
        archive: PathBuf,
        name: String,
        tag: String,
    },
    /// Stop a cluster started with `up` in the same state directory.
    Down,
    /// Add the nodes of a profile to the running cluster.
    Nodes {
        #[arg(long)]
        profile: String,
        #[arg(long, default_value_t = 1)]
        scale: usize,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn parse_profiles(names: &[String]) -> Result<Vec<Profile>> {
    names
        .iter()
        .map(|n| {
            Profile::parse(n.trim()).with_context(|| {
                format!("--profile: unknown profile {n:?}; expected gcp, aws, azure or kind")
            })
        })
        .collect()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let state_dir = std::path::absolute(&cli.state_dir)?;
    let pid_file = state_dir.with_extension("pid");
    match cli.command {
        Cmd::Up {
            profile,
            scale,
            real_node,
            node_images,
            node_forwards,
        } => {
            let profiles = parse_profiles(&profile)?;
            let bin_dir = locate_binaries()?;
            // SAFETY: the handler only stores to an atomic.
            unsafe {
                libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
                libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
            }
            let started = Instant::now();
            let cluster = Cluster::start(&Options {
                bin_dir,
                state_dir: state_dir.clone(),
                profiles,
                scale,
                real_node,
                node_images,
            })?;
            let mut relays = Vec::new();
            if let Some(node) = cluster.real_node() {
                eprintln!(
                    "real node {} Ready {:.1}s after its first process started",
                    substratus_devcluster::node::NODE_NAME,
                    node.started_in.as_secs_f64()
                );
                let ns = substratus_devcluster::netns::NetNs {
                    name: substratus_devcluster::node::NETNS.into(),
                };
                for port in node_forwards {
                    relays.push(substratus_devcluster::netns::forward_into(&ns, port)?);
                    eprintln!(
                        "  127.0.0.1:{port} reached from the node at {}:{port}",
                        substratus_devcluster::node::NODE_IP
                    );
                }
            }
            std::fs::write(&pid_file, std::process::id().to_string())?;
            eprintln!(
                "cluster ready in {:.1}s at {}\n  export KUBECONFIG={}",
                started.elapsed().as_secs_f64(),
                cluster.server_url(),
                cluster.kubeconfig().display()
            );
            std::fs::write(state_dir.join("ready"), cluster.server_url())?;
            while !STOP.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
            }
            eprintln!("stopping the cluster");
            let stopping = Instant::now();
            drop(relays);
            drop(cluster);
            eprintln!(
                "cluster stopped in {:.1}s",
                stopping.elapsed().as_secs_f64()
            );
            let _ = std::fs::remove_file(&pid_file);
            let _ = std::fs::remove_file(state_dir.join("ready"));
            Ok(())
        }
        Cmd::Down => {
            let Ok(pid) = std::fs::read_to_string(&pid_file) else {
                eprintln!("no cluster running from {}", state_dir.display());
                return Ok(());
            };
            let pid: libc::pid_t = pid.trim().parse().context("reading the pid file")?;
            // SAFETY: signalling a pid read from our own pid file.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            // A real node first deletes its pods (their volumes and networks torn down).
            let deadline = Instant::now() + Duration::from_secs(120);
            // SAFETY: signal 0 only checks that the process exists.
            while unsafe { libc::kill(pid, 0) } == 0 {
                if Instant::now() > deadline {
                    bail!("the cluster (pid {pid}) did not stop within 120s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = std::fs::remove_file(&pid_file);
            eprintln!("cluster stopped");
            Ok(())
        }
        Cmd::NodeCheck => match substratus_devcluster::node::unavailable(&locate_binaries()?) {
            None => {
                println!("ok");
                Ok(())
            }
            Some(why) => {
                println!("{why}");
                std::process::exit(3)
            }
        },
        Cmd::ImageBuild { name, binary, tag } => {
            use substratus_devcluster::recipes;
            let t0 = Instant::now();
            let built = match name.as_str() {
                "pause" => recipes::pause()?,
                "busybox" => recipes::busybox()?,
                "kaniko" => recipes::kaniko(&locate_binaries()?)?,
                "python" => recipes::python()?,
                "tinylm" => recipes::tinylm()?,
                "notebook" => recipes::notebook()?,
                "operator" => {
                    let binary = binary.context("--binary: the operator binary is required")?;
                    recipes::operator(&binary, &tag)?
                }
                other => {
                    bail!(
                        "unknown image {other:?}; expected pause, busybox, kaniko, python, tinylm, notebook or operator"
                    )
                }
            };
            eprintln!(
                "{} {} ({} bytes{}) in {:.1}s",
                if built.cached { "cached" } else { "built" },
                built.reference,
                built.size,
                if built.cached { ", unchanged" } else { "" },
                t0.elapsed().as_secs_f64()
            );
            println!("{}", built.archive.display());
            Ok(())
        }
        Cmd::ImageLoad { archives } => {
            for a in archives {
                substratus_devcluster::node::ctr(&["images", "import", &a.to_string_lossy()])
                    .with_context(|| format!("loading {}", a.display()))?;
                eprintln!("loaded {}", a.display());
            }
            Ok(())
        }
        Cmd::ImagePush { archive, name, tag } => {
            let digest = substratus_devcluster::node::push_to_registry(&archive, &name, &tag)?;
            eprintln!(
                "pushed {}/{name}:{tag} ({digest})",
                substratus_devcluster::node::REGISTRY_HOST
            );
            Ok(())
        }
        Cmd::Nodes { profile, scale } => {
            let profile = parse_profiles(&[profile])?[0];
            apply_nodes(
                &locate_binaries()?,
                &state_dir.join("kubeconfig"),
                profile,
                scale,
            )
        }
    }
}
