//! `antiphon`: the voice-agent server and its tools, one binary with subcommands.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "antiphon", version, about = "Real-time voice-agent media server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch, verify and list model files.
    Models(commands::models::ModelsArgs),
    /// Speak text into a WAV file (streaming TTS engine, Piper or Kokoro voice).
    Say(commands::say::SayArgs),
    /// Label who spoke when in a WAV file (CAM++ embeddings, online clustering; RTTM output).
    Diarize(commands::diarize::DiarizeArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Models(args) => commands::models::run(args),
        Command::Say(args) => commands::say::run(args),
        Command::Diarize(args) => commands::diarize::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
