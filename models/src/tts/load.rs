//! Starting the engine that serves a voice name, with the store's files.

use std::sync::Arc;

use super::engine::{EngineConfig, TtsEngine};
use super::g2p::G2p;
use super::kokoro::Kokoro;
use super::lexicon::Lexicon;
use super::piper::Piper;
use super::{EngineKind, TtsError};
use crate::store::ModelStore;

/// Loads the model that speaks `voice` on its own engine thread with `threads` intra-op threads.
pub fn spawn_engine_for_voice(
    store: &ModelStore,
    lexicon: Arc<Lexicon>,
    voice: &str,
    threads: usize,
) -> Result<TtsEngine, TtsError> {
    let g2p = G2p::new(lexicon);
    let store = store.clone();
    match EngineKind::for_voice(voice) {
        EngineKind::Piper => {
            let config = EngineConfig {
                name: "tts-piper".into(),
                ..EngineConfig::default()
            };
            TtsEngine::spawn(config, g2p, move || Piper::joe(&store, threads))
        }
        EngineKind::Kokoro => {
            // Refuse an unknown voice before loading 90 MB of weights; a name is a file stem.
            if voice.is_empty() || !voice.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(TtsError::UnknownVoice(voice.to_owned()));
            }
            store
                .file(super::kokoro::KOKORO_VOICES_MODEL, &format!("{voice}.bin"))
                .map_err(|_| TtsError::UnknownVoice(voice.to_owned()))?;
            let config = EngineConfig {
                name: "tts-kokoro".into(),
                ..EngineConfig::default()
            };
            TtsEngine::spawn(config, g2p, move || Kokoro::load(&store, threads))
        }
    }
}
