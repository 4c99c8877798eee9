//! The one onnxruntime environment of the process, loaded from the model store.
//!
//! onnxruntime allows exactly one environment per process (`ort` refuses a second), so this
//! module keeps it in a `OnceLock`: the only process-wide state in the crate, forced on us by
//! the runtime. Every engine takes sessions from it.

pub mod cut;
mod wire;

use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};

use crate::store::{ModelStore, StoreError};

/// Model id and file name of the runtime library inside the store.
pub const RUNTIME_MODEL: &str = "onnxruntime";
pub const RUNTIME_LIBRARY: &str = "libonnxruntime.so.1.32.0";

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot load onnxruntime from {path}: {message}")]
    Load { path: String, message: String },
    #[error("cannot create a session for {model}: {message}")]
    Session { model: String, message: String },
}

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The process's onnxruntime environment, loading the library from `store` on first use.
pub fn environment(store: &ModelStore) -> Result<Environment, OnnxError> {
    let library = store.file(RUNTIME_MODEL, RUNTIME_LIBRARY)?;
    let env = ENVIRONMENT.get_or_init(|| {
        ort::init_from(&library)
            .map_err(|e| e.to_string())?
            .with_name("antiphon")
            .build()
            .map_err(|e| e.to_string())
    });
    env.clone().map_err(|message| OnnxError::Load {
        path: library.display().to_string(),
        message,
    })
}

/// Opens a model file with the options every engine shares (see [`builder`]).
pub fn session(env: &Environment, model: &Path, threads: usize) -> Result<Session, OnnxError> {
    let err = |message: String| OnnxError::Session {
        model: model.display().to_string(),
        message,
    };
    builder(env, threads)
        .map_err(err)?
        .commit_from_file(model)
        .map_err(|e| err(e.to_string()))
}

/// Opens a model held in memory (`name` labels errors) with the same options as [`session`].
pub fn session_from_memory(
    env: &Environment,
    name: &str,
    model: &[u8],
    threads: usize,
) -> Result<Session, OnnxError> {
    let err = |message: String| OnnxError::Session {
        model: name.to_owned(),
        message,
    };
    builder(env, threads)
        .map_err(err)?
        .commit_from_memory(model)
        .map_err(|e| err(e.to_string()))
}

/// Full graph optimisation, a fixed number of intra-op threads and no spinning: engines own
/// their threads and must not burn the cores of a small box while idle.
fn builder(env: &Environment, threads: usize) -> Result<SessionBuilder, String> {
    Session::builder(env)
        .map_err(|e| e.to_string())?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| e.to_string())?
        .with_intra_threads(threads.max(1))
        .map_err(|e| e.to_string())?
        .with_inter_threads(1)
        .map_err(|e| e.to_string())?
        .with_intra_op_spinning(false)
        .map_err(|e| e.to_string())
}
