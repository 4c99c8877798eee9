//! The chat API over an OpenAI-compatible streaming chat-completions endpoint.
//!
//! Each reply runs on its own named thread doing one blocking HTTP request (ureq) and parsing
//! the SSE stream; text deltas go to the same bounded [`ReplyStream`] the local engine uses
//! (a slow consumer blocks only that thread, and TCP flow control pushes back on the server).
//! Conversation history is kept here as text; [`ChatSession::truncate_reply`] cuts the last
//! assistant message to what was spoken.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::LlmError;
use super::backend::{ChatBackend, ChatSession, FinishReason, ReplyEvent, ReplyStream};
use super::sampling::SamplingParams;
use super::sse::SseParser;

/// Environment variables read for the API key, in order.
pub const API_KEY_ENVS: [&str; 2] = ["ANTIPHON_LLM_API_KEY", "OPENAI_API_KEY"];

#[derive(Debug, Clone)]
pub struct ExternalConfig {
    /// Base URL (`http://host:port/v1`) or the full `…/chat/completions` URL.
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub system_default: String,
    /// Whole-request timeout.
    pub timeout: Duration,
    pub stream_capacity: usize,
}

impl ExternalConfig {
    /// Config with the API key taken from the environment.
    pub fn from_env(url: &str, model: &str) -> Self {
        let api_key = API_KEY_ENVS
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
        Self {
            url: url.to_owned(),
            model: model.to_owned(),
            api_key,
            system_default: "You are a helpful voice assistant. Answer briefly.".to_owned(),
            timeout: Duration::from_secs(120),
            stream_capacity: 256,
        }
    }

    fn endpoint(&self) -> String {
        let u = self.url.trim_end_matches('/');
        if u.ends_with("/chat/completions") {
            u.to_owned()
        } else {
            format!("{u}/chat/completions")
        }
    }
}

/// An OpenAI-compatible backend.
#[derive(Debug, Clone)]
pub struct ExternalLlm {
    config: Arc<ExternalConfig>,
    agent: ureq::Agent,
    next_id: Arc<AtomicU64>,
}

impl ExternalLlm {
    pub fn new(config: ExternalConfig) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            config: Arc::new(config),
            agent,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// A conversation (typed, not boxed).
    pub fn session(&self, system: Option<&str>) -> ExternalSession {
        let system = system.unwrap_or(&self.config.system_default).to_owned();
        ExternalSession {
            backend: self.clone(),
            messages: Arc::new(Mutex::new(vec![("system".to_owned(), system)])),
            last_request: None,
        }
    }
}

impl ChatBackend for ExternalLlm {
    fn open_session(&self, system: Option<&str>) -> Result<Box<dyn ChatSession>, LlmError> {
        Ok(Box::new(self.session(system)))
    }
}

type History = Arc<Mutex<Vec<(String, String)>>>;

pub struct ExternalSession {
    backend: ExternalLlm,
    messages: History,
    last_request: Option<u64>,
}

impl ChatSession for ExternalSession {
    fn send(&mut self, user: &str, params: &SamplingParams) -> Result<ReplyStream, LlmError> {
        let request = self.backend.next_id.fetch_add(1, Ordering::SeqCst);
        let body = {
            let mut msgs = self
                .messages
                .lock()
                .map_err(|_| LlmError::External("history lock poisoned".into()))?;
            msgs.push(("user".to_owned(), user.to_owned()));
            // The reply is filled in as it streams.
            msgs.push(("assistant".to_owned(), String::new()));
            let list: Vec<Value> = msgs[..msgs.len() - 1]
                .iter()
                .map(|(r, c)| json!({"role": r, "content": c}))
                .collect();
            let mut body = json!({
                "model": self.backend.config.model,
                "messages": list,
                "stream": true,
                "max_tokens": params.max_tokens,
            });
            if params.temperature > 0.0 {
                body["temperature"] = json!(params.temperature);
                body["top_p"] = json!(params.top_p);
            } else {
                body["temperature"] = json!(0.0);
            }
            if !params.stop.is_empty() {
                body["stop"] = json!(params.stop);
            }
            body.to_string()
        };
        let (tx, rx) = mpsc::sync_channel(self.backend.config.stream_capacity.max(1));
        let cancelled = Arc::new(AtomicBool::new(false));
        let job = HttpJob {
            backend: self.backend.clone(),
            request,
            body,
            tx,
            cancelled: cancelled.clone(),
            history: self.messages.clone(),
        };
        std::thread::Builder::new()
            .name(format!("llm-http-{request}"))
            .spawn(move || job.run())
            .map_err(|e| LlmError::External(format!("cannot spawn thread: {e}")))?;
        self.last_request = Some(request);
        Ok(ReplyStream::new(
            request,
            rx,
            Box::new(move || cancelled.store(true, Ordering::SeqCst)),
        ))
    }

    fn truncate_reply(&mut self, request: u64, spoken_bytes: usize) -> Result<(), LlmError> {
        if self.last_request != Some(request) {
            return Ok(());
        }
        let mut msgs = self
            .messages
            .lock()
            .map_err(|_| LlmError::External("history lock poisoned".into()))?;
        if let Some((role, text)) = msgs.last_mut()
            && role == "assistant"
        {
            let mut cut = spoken_bytes.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Ok(())
    }
}

struct HttpJob {
    backend: ExternalLlm,
    request: u64,
    body: String,
    tx: SyncSender<ReplyEvent>,
    cancelled: Arc<AtomicBool>,
    history: History,
}

impl HttpJob {
    fn run(self) {
        let request = self.request;
        let ev = match self.stream() {
            Ok((reason, generated)) => ReplyEvent::Done {
                request,
                reason,
                prefilled: 0,
                generated,
                last_step: 0,
            },
            Err(message) => ReplyEvent::Failed { request, message },
        };
        let _ = self.tx.send(ev);
    }

    fn append_reply(&self, text: &str) {
        if let Ok(mut msgs) = self.history.lock()
            && let Some((role, t)) = msgs.last_mut()
            && role == "assistant"
        {
            t.push_str(text);
        }
    }

    fn stream(&self) -> Result<(FinishReason, usize), String> {
        let cfg = &self.backend.config;
        let mut req = self
            .backend
            .agent
            .post(cfg.endpoint())
            .header("Content-Type", "application/json")
            .header("Accept", "text/event-stream");
        if let Some(key) = &cfg.api_key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        let resp = req.send(self.body.as_str()).map_err(|e| e.to_string())?;
        let status = resp.status();
        let mut reader = resp.into_body().into_reader();
        if !status.is_success() {
            let mut msg = String::new();
            let _ = reader.by_ref().take(2000).read_to_string(&mut msg);
            return Err(format!("HTTP {status}: {msg}"));
        }
        let mut parser = SseParser::default();
        let mut buf = [0u8; 4096];
        let mut generated = 0;
        let mut reason = FinishReason::EndOfTurn;
        loop {
            if self.cancelled.load(Ordering::SeqCst) {
                return Ok((FinishReason::Cancelled, generated));
            }
            let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
            let events = if n == 0 {
                parser.finish().into_iter().collect()
            } else {
                parser.feed(&buf[..n])
            };
            for data in events {
                if data.trim() == "[DONE]" {
                    return Ok((reason, generated));
                }
                let v: Value = serde_json::from_str(&data)
                    .map_err(|e| format!("bad SSE JSON ({e}): {data}"))?;
                if let Some(err) = v.get("error") {
                    return Err(format!("endpoint error: {err}"));
                }
                let choice = &v["choices"][0];
                if let Some(text) = choice["delta"]["content"].as_str()
                    && !text.is_empty()
                {
                    if self.cancelled.load(Ordering::SeqCst) {
                        return Ok((FinishReason::Cancelled, generated));
                    }
                    generated += 1;
                    self.append_reply(text);
                    let ev = ReplyEvent::Text {
                        request: self.request,
                        text: text.to_owned(),
                        step: 0,
                    };
                    if self.tx.send(ev).is_err() {
                        return Ok((FinishReason::Cancelled, generated));
                    }
                }
                match choice["finish_reason"].as_str() {
                    Some("length") => reason = FinishReason::MaxTokens,
                    Some("stop") => reason = FinishReason::EndOfTurn,
                    _ => {}
                }
            }
            if n == 0 {
                return Ok((reason, generated));
            }
        }
    }
}
