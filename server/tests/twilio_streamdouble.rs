//! A phone call through `/v1/twilio`, placed by a third-party Twilio Media Streams simulator
//! (PyPI `streamdouble`, in the venv `tests/twilio/setup-venv.sh` makes) against a real
//! `antiphon serve` with the CI models (Moonshine, SmolLM2, Piper).
//!
//! - One spoken turn: a LibriVox clip resampled to 8 kHz, then silence streamed until the reply
//!   comes (as Twilio streams a quiet caller); the server's transcript of the caller (its log)
//!   is compared with the clip's text, the reply must be real speech, and TTFB is computed from
//!   the simulator's frame trace: the instant the frame holding the clip's true end of speech
//!   was sent -> the first reply `media` received.
//! - Barge-in: the caller speaks again over a long reply; the server must send `clear`, and
//!   truncate the reply exactly where the marks the simulator echoed say playback had got to.

mod common;

use common::{ServerOptions, TestServer};

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use antiphon_audio::resample::resample_clip;
use antiphon_audio::wav;
use antiphon_loadtest::speech_end::{DEFAULT_FLOOR_DB, speech_extent};
use antiphon_models::asr::wer::wer;
use antiphon_models::store::ModelStore;
use base64::Engine as _;
use serde_json::Value;
use tokio::process::Command;

const KEY: &str = "antiphon-demo-key";
/// 7.1 s, 22 words: "and mister john dashwood had then leisure to consider how much ...".
const CLIP: &str = "sense_and_sensibility_01_austen_64kb-0870";

/// Tests share two CPU cores with the engines: one server at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The simulator's executable; a clear failure (never a silent pass) when it is missing.
fn streamdouble() -> PathBuf {
    let path = std::env::var_os("ANTIPHON_STREAMDOUBLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/twilio-venv/bin/streamdouble")
        });
    assert!(
        path.is_file(),
        "the Twilio simulator is not installed at {}: run tests/twilio/setup-venv.sh \
         (scripts/test.sh does) to create the venv with streamdouble==0.3.0, or point \
         ANTIPHON_STREAMDOUBLE at a streamdouble executable",
        path.display()
    );
    path
}

/// Starts the server with the Twilio bridge logging at info; its log is collected.
async fn start_server(config_text: &str) -> TestServer {
    TestServer::start(ServerOptions {
        config: config_text,
        log_filter: "warn,antiphon_server::twilio=info,antiphon_server::session::turn=info",
        capture_log: true,
        ..ServerOptions::default()
    })
    .await
}

struct Clip {
    text: String,
    /// The true end of speech, ms from the clip's first sample.
    speech_end_ms: u64,
}

/// Writes the clip as an 8 kHz mono WAV (what a phone line carries) into `dir`.
fn write_clip_8k(dir: &Path) -> Clip {
    let store = ModelStore::from_env().expect("model store");
    let clips = store.root().join("librivox-clips");
    // Another clip of the store for benchmarking (e.g. the 3.0 s one the Realtime figures use).
    let clip = std::env::var("ANTIPHON_TWILIO_CLIP").unwrap_or_else(|_| CLIP.to_string());
    let audio = wav::read_mono(clips.join(format!("{clip}.wav"))).expect("clip wav");
    let text = std::fs::read_to_string(clips.join(format!("{clip}.txt"))).expect("clip txt");
    let samples = resample_clip(&audio.samples, audio.sample_rate, 8000).expect("resample");
    let extent = speech_extent(&samples, 8000, DEFAULT_FLOOR_DB).expect("speech in the clip");
    wav::write_mono16(dir.join("speech8k.wav"), &samples, 8000).expect("write wav");
    Clip {
        text,
        speech_end_ms: extent.end_ms,
    }
}

struct CallResult {
    exit: i32,
    report: Value,
    trace: Vec<Value>,
}

/// Runs a scenario file with the simulator against the server.
async fn run_scenario(server: &TestServer, dir: &Path, scenario: &str) -> CallResult {
    let file = dir.join("scenario.yaml");
    std::fs::write(&file, scenario).expect("write scenario");
    let trace = dir.join("trace.jsonl");
    let out = tokio::time::timeout(
        Duration::from_secs(240),
        Command::new(streamdouble())
            .arg("scenario")
            .arg(&file)
            .arg(format!("ws://127.0.0.1:{}/v1/twilio", server.port))
            .args(["--param", &format!("api_key={KEY}")])
            .args(["--response-timeout", "60", "--quiet-period", "2"])
            .args(["--max-drain", "120", "--json", "--trace-payloads"])
            .arg("--out")
            .arg(dir.join("reply.wav"))
            .arg("--trace")
            .arg(&trace)
            .stderr(Stdio::inherit())
            .output(),
    )
    .await
    .expect("the simulated call ends in time")
    .expect("run streamdouble");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("streamdouble: {stdout}");
    let report: Value = serde_json::from_str(&stdout).expect("streamdouble --json report");
    let trace = std::fs::read_to_string(&trace)
        .expect("trace written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("trace line is JSON"))
        .collect();
    CallResult {
        exit: out.status.code().unwrap_or(-1),
        report,
        trace,
    }
}

/// `key=value` of the last log line containing `message`.
fn logged_field(lines: &[String], message: &str, key: &str) -> Option<String> {
    lines
        .iter()
        .rev()
        .find(|l| l.contains(message))
        .and_then(|l| {
            let (_, rest) = l.split_once(&format!("{key}="))?;
            Some(if key == "transcript" {
                rest.trim().to_string()
            } else {
                rest.split_whitespace().next()?.to_string()
            })
        })
}

fn is(r: &Value, dir: &str, event: &str) -> bool {
    r["dir"] == dir && r["event"] == event
}

fn raw_len(r: &Value) -> usize {
    base64::engine::general_purpose::STANDARD
        .decode(r["payload"].as_str().expect("--trace-payloads"))
        .expect("base64 payload")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_call_gets_a_spoken_reply_and_ttfb_is_measured() {
    let _serial = SERIAL.lock().await;
    let sd = streamdouble();
    eprintln!("using {}", sd.display());
    let dir = tempfile::tempdir().expect("temp dir");
    let clip = write_clip_8k(dir.path());
    let server = start_server("[llm]\nmodel = \"smollm2-135m\"\nmax_tokens = 40\n").await;
    let call = run_scenario(
        &server,
        dir.path(),
        "name: one spoken turn\nsteps:\n  - say: speech8k.wav\n  - wait_for: {event: audio, timeout: 60}\n  - wait_for: {event: quiet, timeout: 60}\n  - dtmf: \"5\"\n  - expect: audio\n  - expect: no_violations\n",
    )
    .await;
    assert_eq!(call.exit, 0, "streamdouble verdict: {}", call.report);

    // The caller was understood.
    let lines = server.log_lines();
    let heard = logged_field(&lines, "caller said", "transcript").expect("a caller transcript");
    let user_wer = wer(&clip.text, &heard);
    eprintln!(
        "caller said {:?}; server heard {heard:?}; WER {:.1} %",
        clip.text.trim(),
        user_wer * 100.0
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("DTMF") && l.contains("digit=5")),
        "the key press reached the server"
    );

    // The reply is real audio.
    let reply = wav::read_mono(dir.path().join("reply.wav")).expect("reply.wav");
    assert_eq!(reply.sample_rate, 8000);
    let secs = reply.samples.len() as f64 / 8000.0;
    let rms =
        (reply.samples.iter().map(|s| s * s).sum::<f32>() / reply.samples.len() as f32).sqrt();
    eprintln!("reply: {secs:.2} s, RMS {rms:.4}");
    assert!(secs > 0.5, "reply of {secs} s");
    assert!(rms > 0.01, "reply is silent (RMS {rms})");
    let marks_echoed = call.trace.iter().filter(|r| is(r, "out", "mark")).count();
    assert!(marks_echoed > 0, "marks were sent and echoed");

    // TTFB from the trace: stream time of the speech end -> the frame that carried it.
    let end = clip.speech_end_ms;
    let frame_ts = end / 20 * 20;
    let sent = call
        .trace
        .iter()
        .find(|r| {
            is(r, "out", "media")
                && r["timestamp_ms"]
                    .as_str()
                    .and_then(|t| t.parse::<u64>().ok())
                    == Some(frame_ts)
        })
        .expect("the frame holding the speech end was sent");
    let t_end = sent["t"].as_f64().unwrap() + (end - frame_ts) as f64 / 1000.0;
    let first_reply = call
        .trace
        .iter()
        .find(|r| is(r, "in", "media"))
        .expect("reply media");
    let t_reply = first_reply["t"].as_f64().unwrap();
    assert!(
        t_reply > t_end,
        "reply audio arrived before the caller finished"
    );
    let ttfb_ms = (t_reply - t_end) * 1000.0;
    let stage = |key: &str| logged_field(&lines, "first reply audio sent", key);
    eprintln!(
        "TWILIO TTFB (true end of speech sent -> first reply media received): {ttfb_ms:.0} ms; \
         server trace: first_audio_sent {:?} ms, llm_first_token {:?} ms, tts_first_audio {:?} ms",
        stage("first_audio_sent_ms"),
        stage("llm_first_token_ms"),
        stage("tts_first_audio_ms"),
    );
    // Checked last, so a misheard clip still reports its TTFB.
    assert!(
        user_wer <= 0.15,
        "caller transcript WER {user_wer}: {heard:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_clears_playout_and_truncates_to_the_echoed_marks() {
    let _serial = SERIAL.lock().await;
    streamdouble();
    let dir = tempfile::tempdir().expect("temp dir");
    write_clip_8k(dir.path());
    let server = start_server(
        "[llm]\nmodel = \"smollm2-135m\"\nmax_tokens = 150\n[session]\ninstructions = \
         \"You are a storyteller. Whatever the user says, tell a long story about it.\"\n",
    )
    .await;
    let call = run_scenario(
        &server,
        dir.path(),
        "name: barge-in\nsteps:\n  - say: speech8k.wav\n  - wait_for: {event: audio, timeout: 60}\n  - wait: 2.5\n  - say: speech8k.wav\n  - expect: clear\n",
    )
    .await;
    assert_eq!(call.exit, 0, "streamdouble verdict: {}", call.report);

    // What the caller had heard at the clear, by the simulator's own mark echoes.
    let mut sent_bytes = 0usize;
    let mut mark_at = std::collections::HashMap::new();
    let mut heard_bytes = 0usize;
    let mut previous_heard = 0usize;
    for r in &call.trace {
        if is(r, "in", "media") {
            sent_bytes += raw_len(r);
        } else if is(r, "in", "mark") {
            mark_at.insert(r["mark"].as_str().unwrap().to_string(), sent_bytes);
        } else if is(r, "out", "mark") {
            previous_heard = heard_bytes;
            heard_bytes = mark_at[r["mark"].as_str().unwrap()];
        } else if is(r, "in", "clear") {
            break;
        }
    }
    assert!(
        sent_bytes > heard_bytes,
        "audio was still queued at the clear"
    );
    let lines = server.log_lines();
    let heard_ms: u64 = logged_field(&lines, "barge-in", "heard_ms")
        .expect("the server logged the barge-in")
        .parse()
        .unwrap();
    let truncated_ms: u64 = logged_field(&lines, "reply truncated", "audio_end_ms")
        .expect("the session truncated the reply")
        .parse()
        .unwrap();
    eprintln!(
        "barge-in: simulator echoed marks up to {} ms of {} ms sent; server truncated at {heard_ms} ms",
        heard_bytes / 8,
        sent_bytes / 8
    );
    // An echo in flight when the server sent `clear` is the only allowed difference.
    assert!(
        heard_ms as usize == heard_bytes / 8 || heard_ms as usize == previous_heard / 8,
        "server heard {heard_ms} ms, marks say {} ms",
        heard_bytes / 8
    );
    // The session cuts the reply itself at the speech (wall time since its first audio); the
    // transport's cut by marks may only shorten that, never extend it.
    assert!(
        truncated_ms <= heard_ms,
        "the session kept {truncated_ms} ms, the caller heard {heard_ms} ms"
    );
    assert!(
        !lines.iter().any(|l| l.contains("session error")),
        "no session errors: {lines:?}"
    );
}
