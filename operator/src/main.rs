//! `substratus-operator`: runs the Substratus controllers, and prints the CRDs.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "substratus-operator",
    version,
    about = "Runs the Substratus controllers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions of substratus.ai/v1 as YAML.
    Crd,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", substratus_crds::crds_yaml()?),
    }
    Ok(())
}
