//! Where model files live on disk, and how code asks for one.
//!
//! Layout: `<root>/<model-id>/<file>`, root = `$ANTIPHON_MODELS` or `~/.cache/antiphon/models`.
//! Fetching and verification live in the submodules; loading code only calls [`ModelStore::file`].

use std::path::{Path, PathBuf};

/// Environment variable that overrides the store root.
pub const MODELS_DIR_ENV: &str = "ANTIPHON_MODELS";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "model file {model}/{file} is missing from {root}: run `antiphon models fetch --set {set}` \
         (or point ANTIPHON_MODELS at a store that has it)"
    )]
    MissingFile {
        model: String,
        file: String,
        root: PathBuf,
        set: &'static str,
    },
    #[error("cannot determine the model store directory: set ANTIPHON_MODELS or HOME")]
    NoRoot,
}

/// A directory of verified model files.
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
}

impl ModelStore {
    /// A store rooted at `root` (created on fetch, not here).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The store named by `ANTIPHON_MODELS`, else `~/.cache/antiphon/models`.
    pub fn from_env() -> Result<Self, StoreError> {
        if let Some(dir) = std::env::var_os(MODELS_DIR_ENV).filter(|d| !d.is_empty()) {
            return Ok(Self::at(dir));
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or(StoreError::NoRoot)?;
        Ok(Self::at(
            Path::new(&home)
                .join(".cache")
                .join("antiphon")
                .join("models"),
        ))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory holding one model's files.
    pub fn model_dir(&self, model: &str) -> PathBuf {
        self.root.join(model)
    }

    /// Path of a model file that must already be present.
    pub fn file(&self, model: &str, file: &str) -> Result<PathBuf, StoreError> {
        let path = self.model_dir(model).join(file);
        if path.is_file() {
            Ok(path)
        } else {
            Err(StoreError::MissingFile {
                model: model.to_owned(),
                file: file.to_owned(),
                root: self.root.clone(),
                set: set_hint(model),
            })
        }
    }
}

/// The smallest fetch set that provides `model`, for error messages.
fn set_hint(model: &str) -> &'static str {
    // Kept in step with the manifest by the manifest's own test.
    match model {
        "onnxruntime"
        | "silero-vad"
        | "moonshine-base-en"
        | "moonshine-tokenizer"
        | "smollm2-135m"
        | "piper-joe" => "ci",
        _ => "cpu",
    }
}
