//! The registry clients (pip, npm) run as subprocesses to download one pinned package each.
//!
//! We never name a registry: pip and npm use whatever index the machine is configured for.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::error::FetchError;
use super::manifest::{Package, Registry};

/// Overrides the pip command (may include arguments, e.g. `python3 -m pip`).
pub const PIP_ENV: &str = "ANTIPHON_PIP";
/// Overrides the npm command.
pub const NPM_ENV: &str = "ANTIPHON_NPM";

/// How many trailing bytes of a failed client's stderr go into the error.
const STDERR_TAIL_BYTES: usize = 2000;

/// A resolved client command line: program plus leading arguments.
#[derive(Debug, Clone)]
pub struct ClientCommand {
    /// "pip" or "npm", for messages.
    pub client: &'static str,
    pub argv: Vec<OsString>,
}

impl ClientCommand {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]);
        cmd
    }

    fn display(&self) -> String {
        self.argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Finds pip: `$ANTIPHON_PIP` if set, else `pip`, else `python3 -m pip`.
pub fn find_pip() -> Result<ClientCommand, FetchError> {
    let candidates = candidates(PIP_ENV, &[&["pip"], &["python3", "-m", "pip"]]);
    find_client(
        "pip",
        candidates,
        "install python3-pip (apt-get install python3-pip) or set ANTIPHON_PIP",
    )
}

/// Finds npm: `$ANTIPHON_NPM` if set, else `npm`.
pub fn find_npm() -> Result<ClientCommand, FetchError> {
    let candidates = candidates(NPM_ENV, &[&["npm"]]);
    find_client(
        "npm",
        candidates,
        "install npm (apt-get install npm) or set ANTIPHON_NPM",
    )
}

/// The env override alone when set (an explicit choice must not silently fall back), else the
/// defaults in order.
fn candidates(env: &str, defaults: &[&[&str]]) -> Vec<Vec<OsString>> {
    match std::env::var(env) {
        Ok(value) if !value.trim().is_empty() => {
            vec![value.split_whitespace().map(OsString::from).collect()]
        }
        _ => defaults
            .iter()
            .map(|argv| argv.iter().map(OsString::from).collect())
            .collect(),
    }
}

fn find_client(
    client: &'static str,
    candidates: Vec<Vec<OsString>>,
    hint: &'static str,
) -> Result<ClientCommand, FetchError> {
    let mut tried = Vec::new();
    for argv in candidates {
        let candidate = ClientCommand { client, argv };
        let works = candidate
            .command()
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if works {
            return Ok(candidate);
        }
        tried.push(candidate.display());
    }
    Err(FetchError::ClientMissing {
        client,
        tried: tried.join(", "),
        hint,
    })
}

/// Arguments that make pip download exactly one archive of `package` into `dest`.
fn pip_args(package: &Package, dest: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "download",
        "--no-deps",
        "--no-input",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    if package.registry == Registry::PypiSdist {
        // pip insists on preparing an sdist's metadata, which installs its build requirements
        // (scikit-build-core, Cython) into an isolated environment; `--no-build-isolation` fails
        // without them. `--no-binary=<name>` (not `:all:`) keeps those requirements on wheels, so
        // it can never fall back to compiling them. Measured: ~8 s for pocketsphinx 5.1.1.
        args.push(format!("--no-binary={}", package.name).into());
    } else {
        // The wheels we pin are for CPython 3.11 on x86_64 Linux (moonshine-cpp's is tagged
        // manylinux2014, the others manylinux_2_28 or pure); pip needs the target spelled out
        // because the local Python may differ.
        for a in [
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "manylinux2014_x86_64",
        ] {
            args.push(a.into());
        }
    }
    args.push("-d".into());
    args.push(dest.into());
    args.push(format!("{}=={}", package.name, package.version).into());
    args
}

/// Downloads `package` into the empty directory `dest` and returns the archive's path.
///
/// `on_poll` is called every 100 ms with the bytes written so far under `dest` (pip downloads
/// into its temp dir, which we point inside `dest`, so this grows while it works).
pub fn download(
    client: &ClientCommand,
    package: &Package,
    dest: &Path,
    mut on_poll: impl FnMut(u64),
) -> Result<PathBuf, FetchError> {
    let io_err = |what: &str, e: std::io::Error| FetchError::Io {
        context: format!("{what} for {package}"),
        source: e,
    };
    let out_dir = dest.join("out");
    let tmp_dir = dest.join("tmp");
    fs::create_dir_all(&out_dir).map_err(|e| io_err("creating download dir", e))?;
    fs::create_dir_all(&tmp_dir).map_err(|e| io_err("creating download dir", e))?;
    let stderr_path = dest.join("client.stderr");
    let stderr_file = fs::File::create(&stderr_path).map_err(|e| io_err("creating log", e))?;

    let mut cmd = client.command();
    match package.registry {
        Registry::PypiWheel | Registry::PypiSdist => {
            cmd.args(pip_args(package, &out_dir));
        }
        Registry::Npm => {
            cmd.args(["pack", "--silent", "--pack-destination"])
                .arg(&out_dir)
                .arg(format!("{}@{}", package.name, package.version))
                .current_dir(&tmp_dir);
        }
    }
    cmd.env("TMPDIR", &tmp_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file);

    let mut child = cmd.spawn().map_err(|e| FetchError::ClientFailed {
        client: client.client,
        command: client.display(),
        package: package.to_string(),
        detail: format!("could not start: {e}"),
    })?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {
                on_poll(dir_size(dest));
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(io_err("waiting for the client", e)),
        }
    };
    if !status.success() {
        let stderr = fs::read(&stderr_path).unwrap_or_default();
        let tail = &stderr[stderr.len().saturating_sub(STDERR_TAIL_BYTES)..];
        return Err(FetchError::ClientFailed {
            client: client.client,
            command: client.display(),
            package: package.to_string(),
            detail: format!(
                "{status}; its stderr ends with:\n{}",
                String::from_utf8_lossy(tail).trim_end()
            ),
        });
    }
    let mut archives = fs::read_dir(&out_dir)
        .map_err(|e| io_err("listing downloads", e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect::<Vec<_>>();
    match archives.len() {
        1 => Ok(archives.remove(0)),
        n => Err(FetchError::ClientFailed {
            client: client.client,
            command: client.display(),
            package: package.to_string(),
            detail: format!("expected exactly one downloaded archive, found {n}"),
        }),
    }
}

/// Total size of the regular files under `dir` (best effort: unreadable entries count as 0).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}
