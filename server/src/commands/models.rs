//! `antiphon models fetch|list`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Download, verify and install model files.
    Fetch,
    /// List known models and whether they are installed.
    List,
}

pub fn run(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ModelsCommand::Fetch | ModelsCommand::List => {
            anyhow::bail!("model store commands are being written (issue 2)")
        }
    }
}
