//! `antiphon chat "PROMPT"`: stream one reply to stdout from the local engine or an external
//! OpenAI-compatible endpoint.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use antiphon_models::llm::{
    self, ChatBackend, EngineConfig, ExternalConfig, ExternalLlm, LlmEngine, LoadOptions,
    ReplyEvent, SamplingParams,
};
use antiphon_models::store::ModelStore;
use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct ChatArgs {
    /// The user message.
    prompt: String,
    /// Local model: `qwen` (Qwen2.5-Coder-0.5B, default) or `smollm2`.
    #[arg(long, default_value = "qwen")]
    model: String,
    /// System prompt (default: the model's own).
    #[arg(long)]
    system: Option<String>,
    /// Use an OpenAI-compatible endpoint instead (e.g. http://localhost:8000/v1); the API key
    /// comes from ANTIPHON_LLM_API_KEY or OPENAI_API_KEY.
    #[arg(long, requires = "llm_model")]
    llm_url: Option<String>,
    /// Model name sent to the endpoint.
    #[arg(long)]
    llm_model: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
}

pub fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let backend: Box<dyn ChatBackend> = match (&args.llm_url, &args.llm_model) {
        (Some(url), Some(model)) => {
            Box::new(ExternalLlm::new(ExternalConfig::from_env(url, model)))
        }
        _ => {
            let known = llm::known_model(&args.model)
                .with_context(|| format!("unknown model `{}` (use qwen or smollm2)", args.model))?;
            let store = ModelStore::from_env()?;
            let model = llm::load_known(&store, known, LoadOptions::default())
                .with_context(|| format!("loading {}", known.id))?;
            Box::new(LlmEngine::start(Arc::new(model), EngineConfig::default())?)
        }
    };
    let mut session = backend.open_session(args.system.as_deref())?;
    let params = SamplingParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        repeat_penalty: args.repeat_penalty,
        ..Default::default()
    };
    let mut stream = session.send(&args.prompt, &params)?;
    let mut out = std::io::stdout().lock();
    while let Some(ev) = stream.next_event() {
        match ev {
            ReplyEvent::Text { text, .. } => {
                out.write_all(text.as_bytes())?;
                out.flush()?;
            }
            ReplyEvent::Done { reason, .. } => {
                writeln!(out)?;
                tracing::debug!(?reason, "reply finished");
            }
            ReplyEvent::Failed { message, .. } => anyhow::bail!("LLM failed: {message}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
