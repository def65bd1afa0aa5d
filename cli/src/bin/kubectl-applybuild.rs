//! `kubectl applybuild -f MANIFEST DIR`: apply an object as an upload build of DIR.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use substratus_cli::client::{Cluster, ClusterArgs};
use substratus_cli::commands;
use substratus_cli::manifest::{self, Kind};

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-applybuild",
    version,
    about = "Apply a Substratus object built from a local directory"
)]
struct Cli {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The object's manifest.
    #[arg(short = 'f', long = "filename", required = true)]
    file: String,
    /// The build context (a directory with a Dockerfile).
    dir: PathBuf,
    /// Take over fields other managers own.
    #[arg(long)]
    force_conflicts: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let cluster = Cluster::connect(&cli.cluster).await?;
    let docs = manifest::read(&cli.file).await?;
    let (kind, obj) = manifest::pick(&docs, &Kind::ALL)
        .with_context(|| format!("{}: no Substratus object", cli.file))?;
    commands::apply_with_upload(
        &cluster,
        kind,
        obj,
        &cli.dir,
        cli.force_conflicts,
        Duration::from_secs(120),
    )
    .await?;
    Ok(())
}
