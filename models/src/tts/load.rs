//! Starting the engine that serves a voice name, with the store's files.

use std::sync::Arc;

use super::engine::{EngineConfig, TtsEngine};
use super::g2p::G2p;
use super::kokoro::Kokoro;
use super::lexicon::Lexicon;
use super::piper::Piper;
use super::{EngineKind, TtsError};
use crate::store::ModelStore;

/// The engine settings (thread name, chunker) for the engine that speaks `voice`.
pub fn engine_config_for_voice(voice: &str) -> EngineConfig {
    match EngineKind::for_voice(voice) {
        EngineKind::Piper => EngineConfig {
            name: "tts-piper".into(),
            ..EngineConfig::default()
        },
        // Both keep the default first-chunk cap (3 words), which is also below the 4 words
        // Kokoro needed (its compute grows with the audio it makes; docs/TTS.md).
        EngineKind::Kokoro => EngineConfig {
            name: "tts-kokoro".into(),
            ..EngineConfig::default()
        },
    }
}

/// Loads the model that speaks `voice` on its own engine thread with `threads` intra-op threads.
pub fn spawn_engine_for_voice(
    store: &ModelStore,
    lexicon: Arc<Lexicon>,
    voice: &str,
    threads: usize,
) -> Result<TtsEngine, TtsError> {
    spawn_engine_with_config(
        store,
        lexicon,
        voice,
        threads,
        engine_config_for_voice(voice),
    )
}

/// As [`spawn_engine_for_voice`], with the engine settings given (benchmarks compare them).
pub fn spawn_engine_with_config(
    store: &ModelStore,
    lexicon: Arc<Lexicon>,
    voice: &str,
    threads: usize,
    config: EngineConfig,
) -> Result<TtsEngine, TtsError> {
    let g2p = G2p::new(lexicon);
    let store = store.clone();
    match EngineKind::for_voice(voice) {
        EngineKind::Piper => TtsEngine::spawn(config, g2p, move || Piper::joe(&store, threads)),
        EngineKind::Kokoro => {
            // Refuse an unknown voice before loading 90 MB of weights; a name is a file stem.
            if voice.is_empty() || !voice.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(TtsError::UnknownVoice(voice.to_owned()));
            }
            store
                .file(super::kokoro::KOKORO_VOICES_MODEL, &format!("{voice}.bin"))
                .map_err(|_| TtsError::UnknownVoice(voice.to_owned()))?;
            let frames = config.kokoro_frames;
            TtsEngine::spawn(config, g2p, move || {
                let mut kokoro = Kokoro::load(&store, threads)?;
                kokoro.set_frame_limits(frames);
                Ok(kokoro)
            })
        }
    }
}
