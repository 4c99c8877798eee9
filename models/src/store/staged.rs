//! A file written beside its final path and renamed into place only once its size and hash
//! match the manifest, so an interrupted or failed fetch never leaves a bad file at that path.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use super::error::{FetchError, io_error};
use super::hashing::CHUNK;
use super::manifest::ModelFile;

const STAGING_SUFFIX: &str = ".partial";

pub struct StagedFile {
    tmp: NamedTempFile,
    hasher: Sha256,
    len: u64,
    dest: PathBuf,
}

impl StagedFile {
    /// Starts `.<name>.<random>.partial` in the destination's directory (same filesystem, so
    /// the final rename is atomic). Dropped without `commit`, the temp file is removed.
    pub fn create(dest: &Path) -> Result<Self, FetchError> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(STAGING_SUFFIX)
            .tempfile_in(dir)
            .map_err(io_error(format!(
                "creating a temp file in {}",
                dir.display()
            )))?;
        Ok(Self {
            tmp,
            hasher: Sha256::new(),
            len: 0,
            dest: dest.to_path_buf(),
        })
    }

    /// Whether a directory entry is one of our temp files.
    pub fn is_staging_name(name: &str) -> bool {
        name.starts_with('.') && name.ends_with(STAGING_SUFFIX)
    }

    /// Appends everything `reader` yields.
    pub fn append(&mut self, reader: &mut dyn Read, bar: &ProgressBar) -> Result<(), FetchError> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(io_error(format!("extracting into {}", self.dest.display()))(e));
                }
            };
            self.hasher.update(&buf[..n]);
            self.tmp
                .as_file_mut()
                .write_all(&buf[..n])
                .map_err(io_error(format!("writing {}", self.tmp.path().display())))?;
            self.len += n as u64;
            bar.inc(n as u64);
        }
    }

    /// Checks size and hash against the manifest, syncs, and renames into place.
    pub fn commit(self, expected: &ModelFile) -> Result<(), FetchError> {
        let actual = hex::encode(self.hasher.finalize());
        if actual != expected.sha256 || self.len != expected.size {
            return Err(FetchError::FileHash {
                path: self.dest,
                expected: expected.sha256,
                actual,
                expected_size: expected.size,
                actual_size: self.len,
            });
        }
        let dest = self.dest;
        // Temp files are created owner-only; installed models are ordinary readable files.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            self.tmp
                .as_file()
                .set_permissions(fs::Permissions::from_mode(0o644))
                .map_err(io_error(format!(
                    "setting permissions on {}",
                    self.tmp.path().display()
                )))?;
        }
        self.tmp
            .as_file()
            .sync_all()
            .map_err(io_error(format!("syncing {}", self.tmp.path().display())))?;
        self.tmp
            .persist(&dest)
            .map_err(|e| io_error(format!("renaming into {}", dest.display()))(e.error))?;
        // Make the rename itself durable.
        if let Some(dir) = dest.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error(format!("syncing {}", dir.display())))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    static CONTENT: &[u8] = b"hello model store";

    fn spec(sha256: &'static str) -> ModelFile {
        ModelFile {
            name: "f.bin",
            parts: &[],
            size: CONTENT.len() as u64,
            sha256,
        }
    }

    fn leak_hex(data: &[u8]) -> &'static str {
        Box::leak(hex::encode(Sha256::digest(data)).into_boxed_str())
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_installs_only_a_matching_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dest = dir.path().join("model").join("f.bin");
        let bar = ProgressBar::hidden();

        let mut staged = StagedFile::create(&dest).expect("create");
        staged.append(&mut &CONTENT[..5], &bar).expect("append");
        staged.append(&mut &CONTENT[5..], &bar).expect("append");
        let tmp_name = names(dest.parent().expect("parent")).remove(0);
        assert!(StagedFile::is_staging_name(&tmp_name), "{tmp_name}");
        assert!(!dest.exists(), "nothing at the final path before commit");
        staged.commit(&spec(leak_hex(CONTENT))).expect("commit");
        assert_eq!(fs::read(&dest).expect("installed"), CONTENT);
        assert_eq!(
            names(dest.parent().expect("parent")),
            vec!["f.bin".to_owned()]
        );
    }

    #[test]
    fn wrong_hash_or_abandoned_staging_leaves_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dest = dir.path().join("f.bin");
        let bar = ProgressBar::hidden();

        let mut staged = StagedFile::create(&dest).expect("create");
        staged.append(&mut &CONTENT[..], &bar).expect("append");
        let err = staged
            .commit(&spec(leak_hex(b"something else")))
            .expect_err("mismatch");
        assert!(matches!(err, FetchError::FileHash { .. }), "{err}");
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));

        let mut staged = StagedFile::create(&dest).expect("create");
        staged.append(&mut &CONTENT[..3], &bar).expect("append");
        drop(staged);
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }
}
