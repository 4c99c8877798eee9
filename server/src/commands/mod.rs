//! One module per subcommand; each exposes `…Args` (clap) and `run(args) -> Result<ExitCode>`.

pub mod chat;
pub mod diarize;
pub mod models;
pub mod say;
pub mod serve;
pub mod transcribe;
