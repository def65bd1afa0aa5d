//! `sub`: build, run, serve and open Substratus objects from a directory.

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use substratus_cli::client::{Cluster, ClusterArgs};
use substratus_cli::commands::{self, NotebookArgs, RunArgs, ServeArgs};
use substratus_cli::get::{self, GetArgs};

#[derive(Parser, Debug)]
#[command(
    name = "sub",
    version,
    about = "Build, run, serve and open Substratus objects"
)]
struct Cli {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// On an error, print every cause (not only one line).
    #[arg(short = 'v', long, global = true)]
    verbose: bool,
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
    Get(GetArgs),
    /// Delete KIND/NAME.
    #[command(visible_alias = "del")]
    Delete { target: String },
    /// Print a shell completion script: `source <(sub completion bash)`.
    Completion { shell: clap_complete::Shell },
}

/// Exit codes: 0 success; 1 an error (one line on stderr, every cause with `-v`); 2 a usage
/// error (from the argument parser).
fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completion { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "sub", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", substratus_cli::errors::one_line(&e, cli.verbose));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<()> {
    let cluster = Cluster::connect(&cli.cluster).await?;
    match &cli.command {
        Command::Apply { file } => commands::apply(&cluster, file, true).await,
        Command::Run(a) => commands::run(&cluster, a).await,
        Command::Notebook(a) => commands::notebook(&cluster, a).await,
        Command::Serve(a) => commands::serve(&cluster, a).await,
        Command::Get(a) => get::get(&cluster, a).await,
        Command::Delete { target } => commands::delete(&cluster, target).await,
        Command::Completion { .. } => Ok(()),
    }
}
