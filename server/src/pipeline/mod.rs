//! The real session pipeline: the engines loaded once at `serve` start and shared by every
//! session, and the [`EngineConnector`] that leases one session's slots on them and bridges
//! its commands and events (see [`bridge`] for threads, queues and epochs).
//!
//! - [`asr`]: input audio -> ASR slot; VAD/transcript events, stamped with audio arrival.
//! - [`llm`]: `LlmStart` -> a turn on the session's engine conversation (prefix cache).
//! - [`tts`]: text -> the session's TTS stream; reply epochs mapped onto stream epochs.

pub mod asr;
pub mod bridge;
pub mod diar;
pub mod llm;
pub mod tts;

use std::sync::Arc;

use antiphon_models::asr::{AsrEngine, AsrEngineConfig};
use antiphon_models::diar::engine::{DiarEngine, DiarEngineConfig};
use antiphon_models::engine::wake::Wake;
use antiphon_models::llm::{
    EngineConfig as LlmEngineConfig, LlmEngine, LoadOptions, SamplingParams, StepModel,
};
use antiphon_models::store::ModelStore;
use antiphon_models::tts::TtsEngine;
use antiphon_models::tts::lexicon::Lexicon;
use antiphon_models::tts::load::{engine_config_for_voice, spawn_engine_with_config};
use antiphon_models::vad::endpoint::{EndpointConfig, TurnEnd};
use anyhow::{Context as _, bail};
use tokio::sync::{Notify, mpsc};

use crate::config::{Config, TurnMode};
use crate::device::Placement;
use crate::session::engine::Engines;
use crate::session::{EngineConnector, EngineLink};

use bridge::{Bridge, COMMAND_QUEUE, EVENT_QUEUE};

/// The ASR model this build runs.
const ASR_MODEL: &str = "moonshine-base-en";

/// Sampling for spoken replies. Small chat models loop under greedy decoding (docs/LLM.md):
/// a mild temperature with nucleus sampling and a repetition penalty keeps them talking
/// sensibly. The seed is offset by the reply epoch, so a session's replies are reproducible.
fn reply_sampling(max_tokens: u32) -> SamplingParams {
    SamplingParams {
        temperature: 0.6,
        top_p: 0.9,
        repeat_penalty: 1.2,
        max_tokens: max_tokens as usize,
        seed: 7,
        ..SamplingParams::default()
    }
}

/// The TTS voice a `[tts] model` id speaks with by default.
/// The chat model on the resolved device.
fn load_llm(
    store: &ModelStore,
    known: antiphon_models::llm::KnownModel,
    placement: &Placement,
) -> anyhow::Result<Arc<dyn StepModel>> {
    match placement {
        Placement::Cpu => Ok(Arc::new(antiphon_models::llm::load_known(
            store,
            known,
            LoadOptions::default(),
        )?)),
        #[cfg(feature = "cuda")]
        Placement::Cuda(gpu) => {
            let path = store.file(known.id, known.file)?;
            let opts = antiphon_models::llm::gpu::GpuOptions::default();
            Ok(Arc::new(antiphon_models::llm::gpu::GpuLm::load(
                gpu.clone(),
                &path,
                &opts,
            )?))
        }
    }
}

fn tts_voice(model: &str) -> anyhow::Result<&'static str> {
    Ok(match model {
        "piper-joe" => "joe",
        "kokoro-82m" => "af_heart",
        other => bail!("unsupported [tts] model {other:?} (piper-joe or kokoro-82m)"),
    })
}

/// The engines of one server, shared by all its sessions.
pub struct Pipeline {
    asr: Option<Arc<AsrEngine>>,
    endpoint: EndpointConfig,
    llm: Option<Arc<LlmEngine>>,
    instructions: Option<String>,
    sampling: SamplingParams,
    /// The TTS engines (the default one first) and the default voice.
    tts: Option<(Arc<[Arc<TtsEngine>]>, String)>,
    /// Speaker labels for user turns (`[session] speaker_labels`, needs the ASR's VAD).
    diar: Option<Arc<DiarEngine>>,
}

impl Pipeline {
    /// Loads every enabled engine from the model store (seconds: call before serving).
    pub fn load(config: &Config, placement: &Placement) -> anyhow::Result<Pipeline> {
        let store = ModelStore::from_env()?;
        let s = &config.session;
        let endpoint = EndpointConfig {
            threshold: s.vad_threshold,
            prefix_padding_ms: s.prefix_padding_ms,
            silence_duration_ms: s.silence_duration_ms,
            turn_end: match s.turn_detection {
                TurnMode::SemanticVad => TurnEnd::Semantic(s.eagerness),
                TurnMode::ServerVad | TurnMode::Manual => TurnEnd::Timer,
            },
        };
        let asr = if config.asr.enabled {
            if config.asr.model != ASR_MODEL {
                bail!(
                    "unsupported [asr] model {:?} ({ASR_MODEL})",
                    config.asr.model
                );
            }
            let started = std::time::Instant::now();
            let engine = AsrEngine::start(
                &store,
                AsrEngineConfig {
                    slots: config.asr.slots,
                    threads: config.asr.threads,
                    endpoint,
                    ..AsrEngineConfig::default()
                },
            )
            .context("starting the ASR engine")?;
            tracing::info!(
                model = ASR_MODEL,
                ms = started.elapsed().as_millis() as u64,
                "ASR engine ready"
            );
            Some(Arc::new(engine))
        } else {
            None
        };
        let llm = if config.llm.enabled {
            let known =
                antiphon_models::llm::known_model(&config.llm.model).with_context(|| {
                    format!(
                        "unknown [llm] model {:?} (smollm2 or qwen)",
                        config.llm.model
                    )
                })?;
            let started = std::time::Instant::now();
            let model = load_llm(&store, known, placement)
                .with_context(|| format!("loading the LLM {} on {placement}", known.id))?;
            let engine = LlmEngine::start(
                model,
                LlmEngineConfig {
                    max_batch: config.llm.slots.max(1),
                    max_sessions: config.server.max_sessions.get().max(1),
                    ..LlmEngineConfig::default()
                },
            )
            .context("starting the LLM engine")?;
            tracing::info!(
                model = known.id,
                ms = started.elapsed().as_millis() as u64,
                "LLM engine ready"
            );
            Some(Arc::new(engine))
        } else {
            None
        };
        let tts = if config.tts.enabled {
            let voice = tts_voice(&config.tts.model)?;
            let lexicon = Arc::new(Lexicon::load(&store).context("loading the TTS lexicon")?);
            let mut engines = Vec::new();
            for model in std::iter::once(&config.tts.model).chain(&config.tts.extra_models) {
                let model_voice = tts_voice(model)?;
                let started = std::time::Instant::now();
                let mut engine_config = engine_config_for_voice(model_voice);
                engine_config.chunker.first_max_words = config.tts.first_chunk_words.max(1);
                engine_config.chunker.first_max_words_contended =
                    config.tts.first_chunk_words_contended.max(1);
                let engine = spawn_engine_with_config(
                    &store,
                    lexicon.clone(),
                    model_voice,
                    config.tts.threads,
                    engine_config,
                )
                .with_context(|| format!("starting the TTS engine for {model}"))?;
                tracing::info!(
                    model = model.as_str(),
                    voices = engine.voices().len(),
                    ms = started.elapsed().as_millis() as u64,
                    "TTS engine ready"
                );
                engines.push(Arc::new(engine));
            }
            Some((Arc::from(engines), voice.to_string()))
        } else {
            None
        };
        let diar = if s.speaker_labels && asr.is_some() {
            let started = std::time::Instant::now();
            let diar_config = DiarEngineConfig {
                slots: config.server.max_sessions.get().max(1),
                ..DiarEngineConfig::default()
            };
            let engine = match placement {
                Placement::Cpu => DiarEngine::start(&store, diar_config),
                // The fbank front end on the GPU, on a stream of its own (the LLM records
                // graphs on its stream).
                #[cfg(feature = "cuda")]
                Placement::Cuda(gpu) => {
                    let own = antiphon_kernels::cuda::Gpu::open(gpu.info.ordinal).map_err(|e| {
                        anyhow::anyhow!("opening {} for the fbank front end: {e}", gpu.info)
                    })?;
                    DiarEngine::start_with_gpu(&store, diar_config, Arc::new(own))
                }
            }
            .context("starting the speaker-embedding engine (speaker_labels)")?;
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "speaker-embedding engine ready"
            );
            Some(Arc::new(engine))
        } else {
            None
        };
        let instructions = Some(s.instructions.clone()).filter(|i| !i.is_empty());
        Ok(Pipeline {
            diar,
            asr,
            endpoint,
            llm,
            instructions,
            sampling: reply_sampling(config.llm.max_tokens),
            tts,
        })
    }
}

impl EngineConnector for Pipeline {
    fn engines(&self) -> Engines {
        Engines {
            asr: self.asr.is_some(),
            llm: self.llm.is_some(),
            tts: self.tts.is_some(),
        }
    }

    fn voices(&self) -> Vec<String> {
        self.tts
            .iter()
            .flat_map(|(engines, _)| engines.iter())
            .flat_map(|e| e.voices().iter().cloned())
            .collect()
    }

    fn connect(&self, session_id: &str) -> Result<EngineLink, String> {
        // The bridge is a task on the caller's runtime (admission runs on it).
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "engines connect only from inside the server's runtime".to_string())?;
        // Every engine wakes this session's bridge when it delivers to it.
        let notify = Arc::new(Notify::new());
        let wake = {
            let notify = notify.clone();
            Some(Wake::new(move || notify.notify_one()))
        };
        // Every lease is taken (or refused) here, before the WebSocket upgrade.
        let asr = match &self.asr {
            Some(engine) => {
                let session = engine
                    .open_waking(self.endpoint, wake.clone())
                    .map_err(|e| format!("speech recognition: {e}"))?;
                let adapter =
                    asr::AsrAdapter::new(engine.clone(), self.endpoint, session, wake.clone());
                match &self.diar {
                    Some(diar) => {
                        let slot = diar
                            .open_waking(wake.clone())
                            .map_err(|e| format!("speaker labels: {e}"))?;
                        Some(adapter.with_speaker_tagger(diar::SpeakerTagger::new(slot)))
                    }
                    None => Some(adapter),
                }
            }
            None => None,
        };
        let llm = match &self.llm {
            Some(engine) => {
                let session = engine
                    .session(self.instructions.as_deref())
                    .map_err(|e| format!("language model: {e}"))?;
                // Cache the system prompt while the caller is still speaking, so the first
                // turn prefills only its own tokens. Best effort: a failure shows up at the turn.
                if let Err(e) = session.warm() {
                    tracing::debug!("LLM warm-up not queued: {e}");
                }
                Some(llm::LlmAdapter::new(
                    engine.clone(),
                    session,
                    self.instructions.clone(),
                    self.sampling.clone(),
                    wake.clone(),
                ))
            }
            None => None,
        };
        let tts = match &self.tts {
            Some((engines, voice)) => {
                let stream = engines[0]
                    .open_stream_waking(voice, wake.clone())
                    .map_err(|e| format!("speech synthesis: {e}"))?;
                Some(tts::TtsAdapter::new(
                    engines.clone(),
                    stream,
                    voice.clone(),
                    wake.clone(),
                ))
            }
            None => None,
        };
        // With an LLM to ask, semantic pause judgements weigh its sentence-end probability.
        let asr = match (asr, &llm) {
            (Some(a), Some(_)) => Some(a.with_text_verdicts()),
            (asr, _) => asr,
        };
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (event_tx, events) = mpsc::channel(EVENT_QUEUE);
        let bridge = Bridge {
            commands: command_rx,
            events: event_tx,
            asr,
            llm,
            tts,
        };
        let span = tracing::debug_span!("engine_bridge", session = session_id);
        runtime.spawn(tracing::Instrument::instrument(bridge.run(notify), span));
        Ok(EngineLink { commands, events })
    }

    fn health(&self) -> Vec<(&'static str, antiphon_models::engine::EngineHealth)> {
        let mut out = Vec::new();
        if let Some(e) = &self.asr {
            out.push(("asr", e.health()));
        }
        if let Some(e) = &self.diar {
            out.push(("speaker", e.health()));
        }
        if let Some(e) = &self.llm {
            out.push(("llm", e.health()));
        }
        if let Some((engines, _)) = &self.tts {
            out.extend(engines.iter().map(|e| ("tts", e.health())));
        }
        out
    }
}
