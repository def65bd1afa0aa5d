//! `sub`: build, run, serve and open Substratus objects from a directory.

use anyhow::Result;
use clap::{Parser, Subcommand};
use substratus_cli::client::{Cluster, ClusterArgs};
use substratus_cli::commands::{self, NotebookArgs, RunArgs, ServeArgs};

#[derive(Parser, Debug)]
#[command(
    name = "sub",
    version,
    about = "Build, run, serve and open Substratus objects"
)]
struct Cli {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Apply manifests from a file, a directory (*.yaml) or an http(s) URL.
    #[command(visible_alias = "ap")]
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        file: String,
    },
    /// Build a Model or Dataset from DIR and run it until Ready.
    Run(RunArgs),
    /// Open a Notebook for DIR (its Notebook, or one made for its Model, Dataset or Server).
    #[command(visible_alias = "nb")]
    Notebook(NotebookArgs),
    /// Apply DIR's Server and forward localhost:8000 to it.
    #[command(visible_alias = "srv")]
    Serve(ServeArgs),
    /// List objects: all, a kind (models), or one (models/NAME).
    Get { scope: Option<String> },
    /// Delete KIND/NAME.
    #[command(visible_alias = "del")]
    Delete { target: String },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let cluster = Cluster::connect(&cli.cluster).await?;
    match &cli.command {
        Command::Apply { file } => commands::apply(&cluster, file, true).await,
        Command::Run(a) => commands::run(&cluster, a).await,
        Command::Notebook(a) => commands::notebook(&cluster, a).await,
        Command::Serve(a) => commands::serve(&cluster, a).await,
        Command::Get { scope } => commands::get(&cluster, scope.as_deref()).await,
        Command::Delete { target } => commands::delete(&cluster, target).await,
    }
}
