//! Whether installed files match the manifest: a cheap size check, or a full hash.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::ModelStore;
use super::error::{FetchError, io_error};
use super::hashing::sha256_file;
use super::manifest::{Model, ModelFile};
use super::progress::Progress;

/// Files smaller than this are hashed without a progress bar.
const BAR_THRESHOLD: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Present,
    Missing,
    /// Present but wrong; the reason says how.
    Corrupt(String),
}

/// Checks one installed file: size always, sha256 when `verify_hash`.
pub fn check_file(
    path: &Path,
    file: &ModelFile,
    verify_hash: bool,
    progress: Progress,
) -> Result<FileState, FetchError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(FileState::Missing),
        Err(e) => return Err(io_error(format!("checking {}", path.display()))(e)),
    };
    if !meta.is_file() {
        return Ok(FileState::Corrupt("not a regular file".into()));
    }
    if meta.len() != file.size {
        return Ok(FileState::Corrupt(format!(
            "size {} bytes, expected {}",
            meta.len(),
            file.size
        )));
    }
    if verify_hash {
        let bar = if file.size >= BAR_THRESHOLD {
            progress.bytes_bar(file.size, &format!("verifying {}", file.name))
        } else {
            indicatif::ProgressBar::hidden()
        };
        let (_, actual) =
            sha256_file(path, &bar).map_err(io_error(format!("hashing {}", path.display())))?;
        bar.finish_and_clear();
        if actual != file.sha256 {
            return Ok(FileState::Corrupt(format!(
                "sha256 {actual}, expected {}",
                file.sha256
            )));
        }
    }
    Ok(FileState::Present)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelState {
    Present,
    Missing,
    Corrupt,
}

impl ModelState {
    pub fn name(self) -> &'static str {
        match self {
            ModelState::Present => "present",
            ModelState::Missing => "missing",
            ModelState::Corrupt => "corrupt",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelStatus {
    pub model: &'static Model,
    pub state: ModelState,
    pub files_present: usize,
    pub dir: PathBuf,
    /// One line per file that is not right.
    pub problems: Vec<String>,
}

/// The state of one model: corrupt if any file is wrong, else missing if any is absent.
pub fn model_status(
    store: &ModelStore,
    model: &'static Model,
    verify_hash: bool,
    progress: Progress,
) -> Result<ModelStatus, FetchError> {
    let dir = store.model_dir(model.id);
    let mut files_present = 0;
    let mut problems = Vec::new();
    let mut any_corrupt = false;
    for file in model.files {
        match check_file(&dir.join(file.name), file, verify_hash, progress)? {
            FileState::Present => files_present += 1,
            FileState::Missing => problems.push(format!("{}: missing", file.name)),
            FileState::Corrupt(why) => {
                any_corrupt = true;
                problems.push(format!("{}: {why}", file.name));
            }
        }
    }
    let state = if any_corrupt {
        ModelState::Corrupt
    } else if files_present < model.files.len() {
        ModelState::Missing
    } else {
        ModelState::Present
    };
    Ok(ModelStatus {
        model,
        state,
        files_present,
        dir,
        problems,
    })
}
