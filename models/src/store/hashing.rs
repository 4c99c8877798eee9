//! sha256 of files, reported on a progress bar as it goes.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

/// Read size for hashing and copying: large enough that syscalls do not dominate.
pub(crate) const CHUNK: usize = 1 << 20;

/// Length and lowercase hex sha256 of the file at `path`.
pub fn sha256_file(path: &Path, bar: &ProgressBar) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
        bar.inc(n as u64);
    }
    Ok((len, hex::encode(hasher.finalize())))
}
