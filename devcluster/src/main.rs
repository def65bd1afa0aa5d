//! `substratus-devcluster`: start, stop and populate the local simulated cluster.

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
        Cmd::Up { profile, scale } => {
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
            })?;
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
            drop(cluster);
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
            let deadline = Instant::now() + Duration::from_secs(30);
            // SAFETY: signal 0 only checks that the process exists.
            while unsafe { libc::kill(pid, 0) } == 0 {
                if Instant::now() > deadline {
                    bail!("the cluster (pid {pid}) did not stop within 30s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = std::fs::remove_file(&pid_file);
            eprintln!("cluster stopped");
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
