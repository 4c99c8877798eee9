//! `antiphon`: the voice-agent server and its tools, one binary with subcommands.

use antiphon_server::commands;

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
    /// Run the voice-agent server (OpenAI Realtime WebSocket at /v1/realtime).
    Serve(commands::serve::ServeArgs),
    /// Speak text into a WAV file (streaming TTS engine, Piper or Kokoro voice).
    Say(commands::say::SayArgs),
    /// Transcribe a WAV file with the streaming recogniser (VAD, endpointing, Moonshine).
    Transcribe(commands::transcribe::TranscribeArgs),
    /// Stream one chat reply to stdout (local GGUF model or an OpenAI-compatible endpoint).
    Chat(commands::chat::ChatArgs),
    /// Label who spoke when in a WAV file (CAM++ embeddings, online clustering; RTTM output).
    Diarize(commands::diarize::DiarizeArgs),
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
        Command::Serve(args) => commands::serve::run(args),
        Command::Say(args) => commands::say::run(args),
        Command::Transcribe(args) => commands::transcribe::run(args),
        Command::Chat(args) => commands::chat::run(args),
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
