//! Speaker labels end to end: `antiphon serve` (default `speaker_labels = true`) with the CI
//! models, and a two-speaker conversation streamed into `/v1/realtime` at real-time pace in
//! 20 ms pcm16 frames: a LibriVox reader (recorded human speech) and Piper's `joe` (TTS)
//! take turns, separated by silence. Each turn's `input_audio_transcription.completed` must
//! carry a `speaker` label, the same for the same voice and different between the voices.
//!
//! Needs the model store with the CI models, `librivox-clips/` and `campplus`. Prints the
//! server's label timing (ready after the VAD's speech stop, and how long a final waited).

mod common;

use common::realtime::{connect, pcm16};
use common::{ServerOptions, TestServer, strip_ansi};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use antiphon_audio::resample::resample_clip;
use antiphon_audio::wav;
use antiphon_models::store::ModelStore;
use antiphon_models::tts::lexicon::Lexicon;
use antiphon_models::tts::load::spawn_engine_for_voice;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const RATE: u32 = 24_000;
const FRAME: usize = 480; // 20 ms at 24 kHz

async fn start_server() -> TestServer {
    TestServer::start(ServerOptions {
        log_filter: "warn,antiphon::diar=info",
        capture_log: true,
        ..ServerOptions::default()
    })
    .await
}

fn reader_clip(name: &str) -> Vec<f32> {
    let store = ModelStore::from_env().expect("model store");
    let dir: PathBuf = store.root().join("librivox-clips");
    let audio = wav::read_mono(dir.join(format!("{name}.wav"))).expect("clip wav");
    resample_clip(&audio.samples, audio.sample_rate, RATE).expect("resample")
}

fn tts_lines(lines: &[&str]) -> Vec<Vec<f32>> {
    let store = ModelStore::from_env().expect("model store");
    let lexicon = Arc::new(Lexicon::load(&store).expect("lexicon"));
    let engine = spawn_engine_for_voice(&store, lexicon, "joe", 1).expect("piper joe");
    lines
        .iter()
        .map(|text| {
            let mut stream = engine.open_stream("joe").expect("voice");
            stream.push_text(text).expect("queued");
            stream.finish().expect("queued");
            let chunks = stream
                .collect_reply(Duration::from_secs(60))
                .expect("audio");
            let rate = chunks[0].sample_rate;
            let audio: Vec<f32> = chunks.iter().flat_map(|c| c.samples.clone()).collect();
            resample_clip(&audio, rate, RATE).expect("resample")
        })
        .collect()
}

/// `key=value` field of a tracing line, as a number.
fn field(line: &str, key: &str) -> Option<f64> {
    let line = strip_ansi(line);
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line[at..]
        .split(|c: char| c.is_whitespace())
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_voices_get_two_stable_speaker_labels() {
    let joe = tts_lines(&[
        "I think the train leaves at half past nine, so we should hurry up and pack our bags.",
        "My brother bought a small boat last summer and wants to sail around the island.",
    ]);
    let turns: Vec<(&str, Vec<f32>)> = vec![
        (
            "reader",
            reader_clip("sense_and_sensibility_01_austen_64kb-0880"),
        ),
        ("joe", joe[0].clone()),
        (
            "reader",
            reader_clip("sense_and_sensibility_01_austen_64kb-0930"),
        ),
        ("joe", joe[1].clone()),
    ];
    let gap = vec![0.0f32; RATE as usize * 3 / 2];
    let mut audio = gap.clone();
    for (_, t) in &turns {
        audio.extend_from_slice(t);
        audio.extend_from_slice(&gap);
    }
    audio.extend_from_slice(&gap);

    let server = start_server().await;
    let ws = connect(server.port, false).await;
    let (mut tx, mut rx) = ws.split();
    // Transcripts only: no replies, so the labels are all this test waits for.
    let update = json!({"type": "session.update", "session": {
        "type": "realtime",
        "audio": {"input": {
            "transcription": {"model": "moonshine-base-en"},
            "turn_detection": {"type": "server_vad", "create_response": false}
        }}
    }});
    tx.send(Message::Text(update.to_string().into()))
        .await
        .expect("send");
    let mic = tokio::spawn(async move {
        let mut next = tokio::time::Instant::now();
        for frame in audio.chunks(FRAME) {
            let msg = json!({"type": "input_audio_buffer.append", "audio": pcm16(frame)});
            if tx
                .send(Message::Text(msg.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
            next += Duration::from_millis(20);
            tokio::time::sleep_until(next).await;
        }
        // Keep the socket open until the test is done reading.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut completed: Vec<Value> = Vec::new();
    let mut stopped_at: Option<Instant> = None;
    let mut stop_to_completed_ms = Vec::new();
    while completed.len() < turns.len() {
        let msg = tokio::time::timeout_at(deadline, rx.next())
            .await
            .unwrap_or_else(|_| panic!("only {} transcripts before the deadline", completed.len()))
            .expect("stream open")
            .expect("no ws error");
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
        assert_ne!(v["type"], "error", "{v}");
        match v["type"].as_str() {
            Some("input_audio_buffer.speech_stopped") => stopped_at = Some(Instant::now()),
            Some("conversation.item.input_audio_transcription.completed") => {
                if let Some(s) = stopped_at.take() {
                    stop_to_completed_ms.push(s.elapsed().as_secs_f64() * 1000.0);
                }
                eprintln!("completed: {v}");
                completed.push(v);
            }
            _ => {}
        }
    }
    mic.abort();

    let speakers: Vec<&str> = completed
        .iter()
        .map(|v| {
            v["speaker"]
                .as_str()
                .unwrap_or_else(|| panic!("no speaker on {v}"))
        })
        .collect();
    let log = server.log_lines();
    let ready: Vec<f64> = log
        .iter()
        .filter(|l| l.contains("speaker label"))
        .filter_map(|l| field(l, "ready_after_stop_ms"))
        .collect();
    let held: Vec<f64> = log
        .iter()
        .filter(|l| l.contains("transcript final released"))
        .filter_map(|l| field(l, "held_ms"))
        .collect();
    eprintln!(
        "speakers {speakers:?} for {:?}; label ready after speech stop (ms) {ready:?}; \
         final held for its label (ms) {held:?}; client speech_stopped -> completed (ms) {stop_to_completed_ms:?}",
        turns.iter().map(|(s, _)| *s).collect::<Vec<_>>()
    );
    assert_eq!(speakers[0], speakers[2], "the reader keeps its label");
    assert_eq!(speakers[1], speakers[3], "joe keeps its label");
    assert_ne!(speakers[0], speakers[1], "two voices, two labels");
    assert_eq!(speakers[0], "S1", "the first voice is S1");
}
