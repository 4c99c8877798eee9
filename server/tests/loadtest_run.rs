//! The load generator against a real `antiphon serve` (CI models: Moonshine, SmolLM2, Piper):
//! 2 concurrent sessions x 2 spoken turns complete with sane figures, and the JSON report keeps
//! its documented schema (renaming a field fails here; bump `report::SCHEMA` and the docs).

mod common;

use common::{ServerOptions, TestServer};

use std::sync::Arc;
use std::time::Duration;

use antiphon_loadtest::clips::{default_clip_paths, load_clip};
use antiphon_loadtest::driver::Endpoint;
use antiphon_loadtest::report::{Report, SCHEMA};
use antiphon_loadtest::run::{StepConfig, run_fresh_sessions, run_step};
use serde_json::Value;

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_two_turns_against_a_real_server() {
    // The two shortest LibriVox clips keep the run well under a minute of speech.
    let mut clips: Vec<_> = default_clip_paths()
        .expect("librivox-clips in the model store")
        .iter()
        .map(|p| load_clip(p).expect("clip loads"))
        .collect();
    clips.sort_by_key(|c| c.duration_ms);
    clips.truncate(2);
    let server = TestServer::start(ServerOptions::default()).await;
    let port = server.port;
    let config = StepConfig {
        endpoint: Endpoint {
            url: format!("ws://127.0.0.1:{port}/v1/realtime?model=test"),
            key: Some("antiphon-demo-key".into()),
            // Short replies: the caller listens to every reply before speaking again.
            max_output_tokens: Some(16),
            instructions: None,
            transcription_model: Some("moonshine-base-en".into()),
            // The server's default (semantic_vad).
            turn_detection: None,
        },
        clips: clips.into_iter().map(Arc::new).collect(),
        sessions: 2,
        turns: 2,
        stagger: Duration::from_millis(500),
        lead_in: Duration::from_millis(300),
        gap: Duration::from_millis(500),
        turn_timeout: Duration::from_secs(30),
        max_duration: Duration::from_secs(90),
        server_pid: server.pid(),
        churn: Default::default(),
    };
    let step = run_step(&config).await.expect("valid config");
    let report = Report::new(&config, 0, vec![step], None);
    let json = report.to_json();
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&json["steps"][0]["summary"]).unwrap()
    );

    // Sane numbers.
    let step = &report.steps[0];
    assert!(step.errors.is_empty(), "errors: {:?}", step.errors);
    assert_eq!(step.turns.len(), 4, "{:?}", step.turns);
    for t in &step.turns {
        assert!(t.got_audio(), "turn without reply audio: {t:?}");
        let ttfb = t.ttfb_ms.expect("ttfb");
        assert!(ttfb > 0.0 && ttfb < 30_000.0, "TTFB {ttfb} ms: {t:?}");
        // A reply cut at max_output_tokens may be reported as incomplete (as OpenAI does).
        assert!(
            matches!(t.reply_status.as_deref(), Some("completed" | "incomplete")),
            "{t:?}"
        );
        assert!(t.reply_audio_ms > 200.0, "{t:?}");
        let asr = t.asr_final_ms.expect("ASR final");
        assert!(
            asr > 0.0 && asr < ttfb,
            "ASR final {asr} ms vs TTFB {ttfb} ms"
        );
        assert!(!t.transcript.as_deref().unwrap_or("").trim().is_empty());
        let server = t.server_latency.as_ref().expect("antiphon.turn.latency");
        assert_eq!(server.origin.as_deref(), Some("speech_end"));
        assert!(
            server.first_audio_sent_ms.is_some_and(|v| v > 0.0),
            "{server:?}"
        );
    }
    assert_eq!(step.summary.turns_with_audio, 4);
    // The clips' own words (LibriVox `.txt`) against the server's transcripts.
    assert!(step.turns.iter().all(|t| t.reference.is_some()));
    let wer = step.summary.transcript_wer.expect("a transcript WER");
    assert!(wer < 0.25, "transcript WER {wer}");
    assert_eq!(step.summary.ttfb_ms.count, 4);
    let cpu = step.cpu.as_ref().expect("server CPU time from /proc");
    assert!(
        cpu.server_cpu_s > 0.0 && cpu.session_minutes > 0.0,
        "{cpu:?}"
    );

    // The schema, field by field.
    assert_eq!(json["schema"], SCHEMA);
    assert_eq!(
        keys(&json),
        [
            "ramp",
            "schema",
            "settings",
            "started_unix_ms",
            "steps",
            "tool_version",
            "url"
        ]
    );
    assert_eq!(
        keys(&json["settings"]),
        [
            "clips",
            "gap_ms",
            "lead_in_ms",
            "max_duration_s",
            "max_output_tokens",
            "sessions",
            "stagger_ms",
            "transcription_model",
            "turn_detection",
            "turn_timeout_ms",
            "turns"
        ]
    );
    let s = &json["steps"][0];
    assert_eq!(
        keys(s),
        [
            "client_max_send_lag_ms",
            "concurrency",
            "cpu",
            "errors",
            "load_average",
            "summary",
            "turns",
            "wall_s"
        ]
    );
    assert_eq!(
        keys(&s["summary"]),
        [
            "asr_final_ms",
            "barged_in",
            "cut_ins",
            "early_replies",
            "errors",
            "hung_up",
            "reply_audio_ms",
            "server_ms",
            "transcript_wer",
            "ttfb_ms",
            "turns",
            "turns_with_audio",
            "turns_with_underruns",
            "underruns",
            "vad_stopped_ms"
        ]
    );
    assert_eq!(
        keys(&s["summary"]["ttfb_ms"]),
        ["count", "max", "mean", "min", "p50", "p90", "p95", "p99"]
    );
    assert_eq!(
        keys(&s["summary"]["server_ms"]),
        [
            "asr_final_ms",
            "first_audio_sent_ms",
            "first_clause_ms",
            "llm_first_token_ms",
            "speculation_started_ms",
            "tts_first_audio_ms"
        ]
    );
    assert_eq!(
        keys(&s["cpu"]),
        [
            "cpu_s_per_session_minute",
            "server_cpu_s",
            "server_pid",
            "session_minutes"
        ]
    );
    assert_eq!(
        keys(&s["turns"][0]),
        [
            "asr_final_ms",
            "clip",
            "clip_speech_end_ms",
            "cut_in",
            "early_replies",
            "ending",
            "error",
            "reference",
            "reply_audio_ms",
            "reply_done_ms",
            "reply_status",
            "response_id",
            "server_latency",
            "session",
            "started_ms",
            "transcript",
            "ttfb_ms",
            "turn",
            "underrun_ms",
            "underruns",
            "vad_stopped_ms"
        ]
    );
    assert_eq!(
        keys(&s["turns"][0]["server_latency"]),
        [
            "asr_final_ms",
            "first_audio_sent_ms",
            "first_clause_ms",
            "llm_first_token_ms",
            "origin",
            "speculation_started_ms",
            "tts_first_audio_ms"
        ]
    );
    // A report always renders.
    let html = report.to_html();
    assert!(html.contains("<svg") && html.contains("TTFB CDF"));

    // Turns as independent callers: each turn its own session, one after another.
    let admitted = |metrics: &str| {
        common::metric(
            metrics,
            "antiphon_sessions_admitted_total{transport=\"websocket\"}",
        )
    };
    let before = admitted(&common::http_get(port, "/metrics").await);
    let fresh = StepConfig {
        sessions: 1,
        ..config.clone()
    };
    let step = run_fresh_sessions(&fresh).await.expect("valid config");
    assert!(step.errors.is_empty(), "errors: {:?}", step.errors);
    assert_eq!(
        step.turns
            .iter()
            .map(|t| (t.session, t.turn))
            .collect::<Vec<_>>(),
        [(0, 0), (1, 0)],
        "turn k is the only turn of session k"
    );
    assert_ne!(step.turns[0].clip, step.turns[1].clip, "clip k for turn k");
    assert!(step.turns.iter().all(|t| t.got_audio()));
    assert_eq!(step.summary.turns_with_audio, 2);
    let after = admitted(&common::http_get(port, "/metrics").await);
    assert_eq!(
        after - before,
        2,
        "two sessions, connected one after the other"
    );
    drop(server);
}
