//! Client events, one per line, through the Realtime decoder and into a session's turn machine
//! (all engines on, none answering): never a panic, and every server event it emits encodes
//! in both dialects.
#![no_main]

use std::time::{Duration, Instant};

use antiphon_server::realtime::protocol::{Dialect, decode_client, encode_server};
use antiphon_server::session::engine::Engines;
use antiphon_server::session::events::{
    AudioFormat, Limits, Modality, SessionConfig, TurnDetection,
};
use antiphon_server::session::turn::{Output, TurnManager, TurnSettings};
use libfuzzer_sys::fuzz_target;

fn session() -> SessionConfig {
    SessionConfig {
        id: "sess_fuzz".into(),
        model: "antiphon".into(),
        instructions: "Be brief.".into(),
        voice: "alloy".into(),
        input_format: AudioFormat::Pcm16,
        output_format: AudioFormat::Pcm16,
        turn_detection: Some(TurnDetection::default()),
        transcription: None,
        output_modalities: vec![Modality::Audio],
        max_output_tokens: Some(64),
    }
}

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 by the protocol's own check.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let engines = Engines {
        asr: true,
        llm: true,
        tts: true,
    };
    let settings = TurnSettings {
        limits: Limits {
            max_message_bytes: 64 << 10,
            max_audio_buffer_bytes: 64 << 10,
        },
        max_items: 16,
        max_conversation_bytes: 4 << 10,
        ..TurnSettings::default()
    };
    let limits = settings.limits;
    let mut turn = TurnManager::new(session(), engines, settings);
    let t0 = Instant::now();
    for (n, line) in text.split('\n').enumerate() {
        let now = t0 + Duration::from_millis(n as u64 * 20);
        if let Ok(message) = decode_client(line, &limits) {
            turn.handle_client(now, message);
        }
        turn.handle_timeout(now);
        while let Some(out) = turn.poll_output() {
            if let Output::Event(event) = out {
                let _ = encode_server(&event, "evt_fuzz", Dialect::Ga);
                let _ = encode_server(&event, "evt_fuzz", Dialect::Beta);
            }
        }
    }
});
