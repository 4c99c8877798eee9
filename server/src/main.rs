//! `antiphon`: the voice-agent server and its tools, one binary with subcommands.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "antiphon",
    version,
    about = "Real-time voice-agent media server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch, verify and list model files.
    Models(commands::models::ModelsArgs),
    /// Stream one chat reply to stdout (local GGUF model or an OpenAI-compatible endpoint).
    Chat(commands::chat::ChatArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Models(args) => commands::models::run(args),
        Command::Chat(args) => commands::chat::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
