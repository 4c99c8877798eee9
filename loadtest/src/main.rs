//! `antiphon-loadtest`: today only the audio analysis the load generator is built on (issue 7
//! adds the session driver): where speech really ends in each WAV file, which is the origin of
//! every TTFB the load test reports.

use std::path::PathBuf;
use std::process::ExitCode;

use antiphon_audio::wav::read_mono;
use antiphon_loadtest::speech_end::{DEFAULT_FLOOR_DB, speech_extent};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "antiphon-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print where speech starts and ends in each WAV file (JSON, one object per line).
    SpeechEnd {
        files: Vec<PathBuf>,
        /// Frames quieter than the loudest frame by more than this many dB count as silence.
        #[arg(long, default_value_t = DEFAULT_FLOOR_DB)]
        floor_db: f32,
    },
}

fn main() -> ExitCode {
    let Command::SpeechEnd { files, floor_db } = Cli::parse().command;
    let mut failed = false;
    for file in files {
        match read_mono(&file) {
            Ok(audio) => {
                let extent = speech_extent(&audio.samples, audio.sample_rate, floor_db);
                let line = serde_json::json!({
                    "file": file.display().to_string(),
                    "speech_start_ms": extent.map(|e| e.start_ms),
                    "speech_end_ms": extent.map(|e| e.end_ms),
                    "duration_ms": extent.map(|e| e.duration_ms),
                });
                println!("{line}");
            }
            Err(err) => {
                eprintln!("error: {}: {err}", file.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
