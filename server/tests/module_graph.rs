//! The shape of the code, held by a test: no import cycles between the server's top-level
//! modules (nor between the model store's), the session core knows no transport and no HTTP,
//! and no transport imports the HTTP module. Test code (`#[cfg(test)]` modules, `tests.rs`
//! files) is not counted: tests may use any codec to build their inputs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Production code of a file: everything before its `#[cfg(test)]` module (our habit: tests
/// sit at the bottom of a file or in a `tests.rs` of their own).
fn production_code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).expect("readable source file");
    let end = text.find("#[cfg(test)]\nmod ").unwrap_or(text.len());
    text[..end].to_string()
}

/// Every `prefix NAME` in `code`, where NAME is an identifier.
fn referenced(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            names.insert(name);
        }
    }
    names
}

/// Module -> the sibling modules it imports, for the modules directly under `root`.
/// `prefix` is how a sibling is named from inside (`crate::` at a crate root, `super::` one
/// level down); `nested` counts files in subfolders as their top module's.
fn graph(root: &Path, prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(root).expect("under root");
        let first = rel.components().next().expect("a component");
        let module = Path::new(first.as_os_str())
            .file_stem()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        if matches!(module.as_str(), "main" | "lib" | "mod") {
            continue;
        }
        // Inside a module folder, `super::` means the module itself, not a sibling.
        let code = production_code(&file);
        let deps = if prefix == "super::" && rel.components().count() > 1 {
            BTreeSet::new()
        } else {
            referenced(&code, prefix)
        };
        let entry = edges.entry(module.clone()).or_default();
        entry.extend(deps.into_iter().filter(|d| *d != module));
    }
    let known: BTreeSet<String> = edges.keys().cloned().collect();
    for deps in edges.values_mut() {
        deps.retain(|d| known.contains(d));
    }
    edges
}

/// One cycle, if the graph has any.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

fn server_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn server_modules_import_each_other_without_cycles() {
    let edges = graph(&server_src(), "crate::");
    assert!(edges.contains_key("session") && edges.contains_key("http"));
    if let Some(cycle) = find_cycle(&edges) {
        panic!("import cycle in server/src: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_session_core_knows_no_transport_and_no_http() {
    let edges = graph(&server_src(), "crate::");
    let outside = [
        "http", "app", "realtime", "twilio", "sip", "webrtc", "pipeline", "commands",
    ];
    let bad: Vec<&String> = edges["session"]
        .iter()
        .filter(|d| outside.contains(&d.as_str()))
        .collect();
    assert!(bad.is_empty(), "session imports {bad:?}");
    for transport in ["realtime", "twilio", "sip", "webrtc"] {
        assert!(
            !edges[transport].contains("http"),
            "{transport} imports the http module"
        );
    }
}

#[test]
fn model_store_modules_import_each_other_without_cycles() {
    let store = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/src/store");
    let edges = graph(&store, "super::");
    assert!(edges.contains_key("fetch") && edges.contains_key("archive"));
    if let Some(cycle) = find_cycle(&edges) {
        panic!("import cycle in models/src/store: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_checker_sees_a_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.insert("a".into(), ["b".to_string()].into());
    edges.insert("b".into(), ["a".to_string()].into());
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".to_string(), "b".into(), "a".into()])
    );
    assert_eq!(
        referenced("use crate::x::Y; crate::zz()", "crate::"),
        ["x".to_string(), "zz".into()].into()
    );
}
