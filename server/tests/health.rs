//! `/healthz` and `/readyz` on a real server with a real LLM engine: readiness flips to 503
//! while the only LLM lease is taken and back when it is freed; liveness stays 200 (an engine
//! failure is what turns it to 503, see `server/src/health.rs`).

mod common;

use common::realtime::{connect, recv_type};
use common::{ServerOptions, TestServer, http_get};

use std::time::Duration;

use serde_json::Value;

/// Status code and JSON body of one GET.
async fn probe(port: u16, path: &str) -> (u16, Value) {
    let reply = http_get(port, path).await;
    let status: u16 = reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {reply}"));
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

fn engine<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["engines"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("no {name} engine in {report}"))
}

#[tokio::test]
async fn readyz_flips_while_the_only_llm_lease_is_taken() {
    let server = TestServer::start(ServerOptions {
        config: "[server]\nmax_sessions = 1\n[asr]\nenabled = false\n[tts]\nenabled = false\n[llm]\nmodel = \"smollm2-135m\"\n",
        ..ServerOptions::default()
    })
    .await;
    let (status, report) = probe(server.port, "/readyz").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ready"], true);
    let llm = engine(&report, "llm");
    assert_eq!(llm["state"], "running");
    assert_eq!(
        (llm["capacity"].as_u64(), llm["free"].as_u64()),
        (Some(1), Some(1))
    );

    let mut ws = connect(server.port, false).await;
    recv_type(&mut ws, "session.created").await;
    let (status, report) = probe(server.port, "/readyz").await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["ready"], false);
    assert_eq!(engine(&report, "llm")["free"], 0);
    assert_eq!(report["sessions"]["free"], 0);
    // Full is not broken: liveness stays up.
    let (status, report) = probe(server.port, "/healthz").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["status"], "ok");

    drop(ws);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, report) = probe(server.port, "/readyz").await;
        if status == 200 {
            assert_eq!(engine(&report, "llm")["free"], 1);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease was not freed: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_server_without_engines_is_live_and_ready() {
    let server = TestServer::without_engines().await;
    for path in ["/healthz", "/readyz"] {
        let (status, report) = probe(server.port, path).await;
        assert_eq!(status, 200, "{path}: {report}");
        assert_eq!(report["engines"], serde_json::json!([]));
        assert_eq!(report["sessions"]["open"], 0);
    }
}

/// Issue 17: with no `max_sessions` in the config the admission limit is the measured
/// capacity per CPU (1.5, from the loadtest ramp) times this machine's CPUs; the session past
/// it is refused with 503 `server_at_capacity`, and a freed permit admits the next.
#[tokio::test]
async fn the_default_admission_limit_is_the_measured_capacity_per_cpu() {
    use tokio_tungstenite::connect_async;
    use tokio_tungstenite::tungstenite;
    let server = TestServer::without_engines().await;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let limit = ((cpus as f64 * 1.5).floor() as u64).max(1);
    let (_, report) = probe(server.port, "/healthz").await;
    assert_eq!(report["sessions"]["capacity"], limit, "{report}");
    let mut open = Vec::new();
    for _ in 0..limit {
        let mut ws = connect(server.port, false).await;
        recv_type(&mut ws, "session.created").await;
        open.push(ws);
    }
    let request = common::realtime::request(server.port, Some("antiphon-demo-key"), false);
    match connect_async(request).await {
        Err(tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 503);
            let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.contains("server_at_capacity"), "{body}");
        }
        Ok(_) => panic!("session {} admitted past the limit of {limit}", limit + 1),
        Err(e) => panic!("expected a 503, got {e:?}"),
    }
    drop(open.pop());
    let mut next = common::realtime::connect_when_free(server.port).await;
    recv_type(&mut next, "session.created").await;
}
