//! `kubectl notebook [NAME] [-d DIR]`: open a Notebook, built from DIR when it has a
//! Dockerfile, with files synced back to DIR.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Parser;
use substratus_cli::client::{Cluster, ClusterArgs};
use substratus_cli::commands::{self, NotebookArgs, OnExit, parse_duration};
use substratus_cli::manifest::Kind;
use substratus_cli::objects;

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-notebook",
    version,
    about = "Open a Substratus Notebook"
)]
struct Cli {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// An existing Notebook to open.
    name: Option<String>,
    /// Directory: its notebook.yaml (or -f), built when it has a Dockerfile, synced back.
    #[arg(short = 'd', long)]
    dir: Option<PathBuf>,
    /// Manifest (default: DIR/notebook.yaml).
    #[arg(short = 'f', long = "filename")]
    file: Option<String>,
    /// Leave the Notebook running on exit instead of suspending it.
    #[arg(long)]
    no_suspend: bool,
    #[arg(long)]
    no_open_browser: bool,
    /// Do not copy files changed in the notebook back to DIR.
    #[arg(long)]
    no_sync: bool,
    #[arg(short = 't', long, default_value = "20m", value_parser = parse_duration)]
    timeout: std::time::Duration,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let cluster = Cluster::connect(&cli.cluster).await?;
    let dir = cli.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let args = NotebookArgs {
        file: cli.file.clone().or_else(|| {
            let f = dir.join("notebook.yaml");
            f.is_file().then(|| f.display().to_string())
        }),
        dir,
        no_open_browser: cli.no_open_browser,
        no_sync: cli.no_sync || cli.dir.is_none(),
        on_exit: if cli.no_suspend {
            OnExit::Keep
        } else {
            OnExit::Suspend
        },
        port: 8888,
        timeout: cli.timeout,
    };
    match (&cli.name, &cli.dir, &cli.file) {
        (Some(name), None, None) => {
            // Resume an existing Notebook.
            let ns = cluster.namespace_for(None)?;
            let api = objects::api(&cluster.client, Kind::Notebook, &ns);
            objects::suspend(&api, name, false).await?;
            commands::open_notebook(&cluster, &api, &ns, name, &args).await
        }
        (None, None, None) => bail!("name a Notebook, or give -d DIR or -f MANIFEST"),
        _ => commands::notebook(&cluster, &args).await,
    }
}
