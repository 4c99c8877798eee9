//! One module per subcommand; each exposes `…Args` (clap) and `run(args) -> Result<ExitCode>`.

pub mod chat;
pub mod models;
pub mod serve;
pub mod say;
pub mod transcribe;
pub mod diarize;
