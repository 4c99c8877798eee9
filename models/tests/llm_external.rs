//! The OpenAI-compatible backend against a local stand-in server (a std TcpListener that serves
//! a canned SSE stream and hands back what it was sent). Run:
//! `cargo test -p antiphon-models --test llm_external`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use antiphon_models::llm::{
    ChatBackend, ExternalConfig, ExternalLlm, FinishReason, ReplyEvent, SamplingParams,
};
use serde_json::Value;

struct Seen {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Value,
}

/// Serve one connection per entry of `replies` (status, SSE chunks, delay between chunks).
fn serve(replies: Vec<(u16, Vec<String>, Duration)>) -> (String, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (status, chunks, delay) in replies {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            reader.read_line(&mut request_line).expect("request line");
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("header");
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).expect("body");
            let body: Value = serde_json::from_slice(&body).expect("JSON body");
            let _ = tx.send(Seen {
                request_line: request_line.trim_end().to_owned(),
                headers,
                body,
            });
            let mut out = stream;
            let reason = if status == 200 { "OK" } else { "Unauthorized" };
            let ctype = if status == 200 {
                "text/event-stream"
            } else {
                "application/json"
            };
            let _ = write!(
                out,
                "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nConnection: close\r\n\r\n"
            );
            for c in chunks {
                if out.write_all(c.as_bytes()).is_err() {
                    break;
                }
                let _ = out.flush();
                std::thread::sleep(delay);
            }
        }
    });
    (format!("http://{addr}/v1"), rx)
}

fn delta(text: &str) -> String {
    format!(
        "data: {}\n\n",
        serde_json::json!({"choices":[{"index":0,"delta":{"content":text},"finish_reason":null}]})
    )
}

fn config(url: String) -> ExternalConfig {
    ExternalConfig {
        url,
        model: "test-model".into(),
        api_key: Some("sk-test".into()),
        system_default: "Be brief.".into(),
        timeout: Duration::from_secs(20),
        stream_capacity: 16,
    }
}

#[test]
fn streams_deltas_and_keeps_spoken_history() {
    let turn1 = vec![
        ": keep-alive\n\n".to_owned(),
        delta("Paris"),
        delta(" is the"),
        delta(" capital."),
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n".into(),
        "data: [DONE]\n\n".into(),
    ];
    let turn2 = vec![delta("Yes."), "data: [DONE]\n\n".into()];
    let (url, seen) = serve(vec![
        (200, turn1, Duration::from_millis(5)),
        (200, turn2, Duration::ZERO),
    ]);
    let backend = ExternalLlm::new(config(url));
    let mut s = backend.open_session(None).expect("session");
    let params = SamplingParams {
        max_tokens: 50,
        ..Default::default()
    };
    let mut st = s
        .send("What is the capital of France?", &params)
        .expect("send");
    let (text, done) = st.collect_text();
    assert_eq!(text, "Paris is the capital.");
    assert!(matches!(
        done,
        Some(ReplyEvent::Done {
            reason: FinishReason::EndOfTurn,
            generated: 3,
            ..
        })
    ));
    let req = seen.recv_timeout(Duration::from_secs(5)).expect("request");
    assert_eq!(req.request_line, "POST /v1/chat/completions HTTP/1.1");
    assert!(
        req.headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == "Bearer sk-test")
    );
    assert_eq!(req.body["model"], "test-model");
    assert_eq!(req.body["stream"], true);
    assert_eq!(req.body["max_tokens"], 50);
    assert_eq!(
        req.body["messages"],
        serde_json::json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"}
        ])
    );

    // Only "Paris" was played before barge-in: the history keeps just that.
    s.truncate_reply(st.request_id(), 5).expect("truncate");
    let (text2, _) = s.send("Sure?", &params).expect("send").collect_text();
    assert_eq!(text2, "Yes.");
    let req2 = seen
        .recv_timeout(Duration::from_secs(5))
        .expect("request 2");
    assert_eq!(
        req2.body["messages"],
        serde_json::json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris"},
            {"role": "user", "content": "Sure?"}
        ])
    );
}

#[test]
fn cancel_stops_text_and_http_errors_are_reported() {
    let slow: Vec<String> = (0..200).map(|i| delta(&format!("w{i} "))).collect();
    let (url, _seen) = serve(vec![
        (200, slow, Duration::from_millis(20)),
        (401, vec!["{\"error\":\"bad key\"}".into()], Duration::ZERO),
    ]);
    let backend = ExternalLlm::new(config(url));
    let mut s = backend.open_session(Some("sys")).expect("session");
    let mut st = s.send("Talk.", &SamplingParams::default()).expect("send");
    for _ in 0..2 {
        match st.next_event_timeout(Duration::from_secs(10)) {
            Ok(Some(ReplyEvent::Text { .. })) => {}
            other => panic!("{other:?}"),
        }
    }
    st.cancel();
    while let Some(ev) = st.next_event() {
        assert!(
            !matches!(ev, ReplyEvent::Text { .. }),
            "text after cancel: {ev:?}"
        );
    }
    let (_, done) = s
        .send("Again.", &SamplingParams::default())
        .expect("send")
        .collect_text();
    match done {
        Some(ReplyEvent::Failed { message, .. }) => assert!(message.contains("401"), "{message}"),
        other => panic!("expected failure, got {other:?}"),
    }
}
