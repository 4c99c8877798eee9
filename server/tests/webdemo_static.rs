//! Runs the real `antiphon serve` binary from the workspace root and fetches the web demo the way
//! a browser does: `/`, then every `/web-demo/FILE` the page loads. Also checks that the static
//! route serves only plain files directly inside `web-demo/`.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test: a failed unwrap is a failed test"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use common::{BlockingServer, NO_ENGINES, workspace_root};

/// A server without engines: static files need none.
fn start() -> BlockingServer {
    BlockingServer::start(NO_ENGINES, Stdio::null())
}

struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

/// One HTTP/1.1 GET with `Connection: close`; `path` goes on the wire exactly as given.
fn get(port: u16, path: &str) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read reply");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    Reply {
        status,
        content_type,
        body: raw[split + 4..].to_vec(),
    }
}

/// Every `/web-demo/...` URL in `src="..."` / `href="..."` attributes of the page.
fn assets_of(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            let end = rest.find('"').expect("closing quote");
            if rest[..end].starts_with("/web-demo/") {
                out.push(rest[..end].to_string());
            }
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn page_and_assets_are_served_with_their_types() {
    let server = start();
    let index = get(server.port, "/");
    assert_eq!(index.status, 200);
    assert!(index.content_type.starts_with("text/html"));
    let html = String::from_utf8(index.body).expect("utf-8 page");
    let mut assets = assets_of(&html);
    assert!(
        assets.contains(&"/web-demo/app.js".to_string()),
        "{assets:?}"
    );
    assert!(
        assets.contains(&"/web-demo/style.css".to_string()),
        "{assets:?}"
    );
    // app.js loads the worklet module by URL, not through the HTML.
    assets.push("/web-demo/audio-worklet.js".into());
    for path in &assets {
        let r = get(server.port, path);
        assert_eq!(r.status, 200, "{path}");
        let want = if path.ends_with(".js") {
            "text/javascript"
        } else {
            "text/css"
        };
        assert!(
            r.content_type.starts_with(want),
            "{path}: {}",
            r.content_type
        );
        let on_disk = std::fs::read(workspace_root().join(&path[1..])).expect("asset on disk");
        assert_eq!(r.body, on_disk, "{path} served byte-exact");
    }
}

#[test]
fn static_route_serves_only_plain_files_inside_the_dir() {
    let server = start();
    for path in [
        "/web-demo/..%2FCargo.toml",
        "/web-demo/%2E%2E%2FCargo.toml",
        "/web-demo/../Cargo.toml",
        "/web-demo/.hidden.js",
        "/web-demo/missing.js",
        "/web-demo/headless_check.py",
        "/web-demo/sub/app.js",
        "/web-demo/",
    ] {
        let r = get(server.port, path);
        assert_eq!(r.status, 404, "{path} must not be served");
    }
}
