//! LLM side of a session's bridge: one engine conversation per session, kept in step with the
//! turn machine's conversation so the engine's prefix cache serves every turn.
//!
//! The turn machine sends the whole conversation with each `LlmStart`; the engine keeps its
//! own history and takes only the new user turn. The adapter mirrors what the engine holds
//! and [`plan`]s each turn: when the new conversation is the mirror plus new user messages
//! (with the last reply possibly cut short by a barge-in: `truncate_reply` to what was heard),
//! only the user turn is sent and the cached prefix is reused. Anything else (instructions
//! changed, items deleted or inserted) opens a fresh engine conversation whose system prompt
//! carries the conversation so far as text: correct, just not cached.

use antiphon_models::engine::wake::Wake;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use antiphon_models::llm::{EngineSession, LlmEngine, ReplyEvent, ReplyStream, SamplingParams};

use crate::session::conversation::{ChatMessage, ChatRole};
use crate::session::engine::{Engine, EngineEvent, Epoch};

/// What to do with a new `LlmStart`.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// The engine's conversation is a prefix: keep the first `keep_reply_bytes` of its last
    /// reply (when that is shorter than the reply), then send `user`.
    Continue {
        keep_reply_bytes: Option<usize>,
        user: String,
    },
    /// Start a new engine conversation with `system`, then send `user`.
    Reset {
        system: Option<String>,
        user: String,
    },
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn same(a: &ChatMessage, b: &ChatMessage) -> bool {
    a.role == b.role && squash(&a.content) == squash(&b.content)
}

/// Bytes of `full` that `heard` covers, ignoring whitespace differences (the TTS transcript
/// is the LLM text cut into trimmed chunks). `None` if `heard` is not a prefix of `full`.
pub fn spoken_bytes(full: &str, heard: &str) -> Option<usize> {
    let mut rest = full.char_indices().peekable();
    let mut end = 0;
    for h in heard.chars().filter(|c| !c.is_whitespace()) {
        loop {
            let (i, c) = rest.next()?;
            if c.is_whitespace() {
                continue;
            }
            if c != h {
                return None;
            }
            end = i + c.len_utf8();
            break;
        }
    }
    Some(end)
}

fn role_name(role: ChatRole) -> &'static str {
    match role {
        ChatRole::System => "System",
        ChatRole::User => "User",
        ChatRole::Assistant => "Assistant",
        ChatRole::Tool => "Tool",
    }
}

/// Decides how to run `messages` (system first if any) on an engine conversation that holds
/// `system_held` + `history` + (the reply `last_reply`, if one was made since).
pub fn plan(
    system_held: Option<Option<&str>>,
    history: &[ChatMessage],
    last_reply: Option<&str>,
    messages: &[ChatMessage],
) -> Plan {
    let (system, rest) = split_system(messages);
    let join = |ms: &[ChatMessage]| {
        ms.iter()
            .map(|m| m.content.trim())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let reset = || {
        // The new turn is the trailing run of user (and tool) messages; the rest is history.
        let (head, tail) = rest.split_at(turn_start(rest));
        let system = if head.is_empty() {
            system.map(str::to_string)
        } else {
            let mut s = system.unwrap_or("").to_string();
            s.push_str("\n\nThe conversation so far:");
            for m in head {
                s.push_str(&format!("\n{}: {}", role_name(m.role), m.content.trim()));
            }
            Some(s)
        };
        Plan::Reset {
            system,
            user: join(tail),
        }
    };
    if system_held != Some(system)
        || rest.len() < history.len()
        || !rest.iter().zip(history).all(|(a, b)| same(a, b))
    {
        return reset();
    }
    let mut new = &rest[history.len()..];
    let keep_reply_bytes = match (last_reply, new.first()) {
        (None, _) => None,
        (Some(full), Some(m)) if m.role == ChatRole::Assistant => {
            new = &new[1..];
            match spoken_bytes(full, &m.content) {
                Some(n) => Some(n),
                None => return reset(),
            }
        }
        // Nothing of the last reply was heard (the turn machine leaves empty items out).
        (Some(_), _) => Some(0),
    };
    if new
        .iter()
        .any(|m| !matches!(m.role, ChatRole::User | ChatRole::Tool))
    {
        return reset();
    }
    Plan::Continue {
        keep_reply_bytes,
        user: join(new),
    }
}

/// Where the new turn of `messages` starts: its trailing run of user (and tool) messages.
fn turn_start(messages: &[ChatMessage]) -> usize {
    messages
        .iter()
        .rposition(|m| matches!(m.role, ChatRole::Assistant | ChatRole::System))
        .map_or(0, |i| i + 1)
}

fn split_system(messages: &[ChatMessage]) -> (Option<&str>, &[ChatMessage]) {
    match messages.split_first() {
        Some((first, rest)) if first.role == ChatRole::System => {
            (Some(first.content.as_str()), rest)
        }
        _ => (None, messages),
    }
}

pub struct LlmAdapter {
    engine: Arc<LlmEngine>,
    session: Option<EngineSession>,
    /// Instructions the engine conversation was opened with (as the turn machine sent them).
    system: Option<String>,
    /// Non-system messages the engine conversation holds, as the turn machine sent them.
    history: Vec<ChatMessage>,
    /// The last reply (request id, text received) once it is no longer streaming.
    last_reply: Option<(u64, String)>,
    reply: Option<(Epoch, ReplyStream)>,
    /// The latest turn: its epoch, engine request and how many trailing user messages of
    /// `history` it sent (what a withdrawal takes back).
    turn: Option<(Epoch, u64, usize)>,
    params: SamplingParams,
    /// Called by the engine when it delivers a reply event (set on every conversation).
    wake: Option<Wake>,
    /// The sentence-end probability asked for the pause after this speech end (ms).
    sentence_end: Option<(u64, Receiver<Option<f32>>)>,
    /// Answers for the recogniser's pause judgements: (speech end ms, P(sentence end)).
    verdicts: Vec<(u64, Option<f32>)>,
}

impl LlmAdapter {
    /// `session` was opened with `system` (the session's default instructions).
    pub fn new(
        engine: Arc<LlmEngine>,
        session: EngineSession,
        system: Option<String>,
        params: SamplingParams,
        wake: Option<Wake>,
    ) -> Self {
        let mut session = session;
        if let Some(w) = &wake {
            session.set_wake(w.clone());
        }
        LlmAdapter {
            wake,
            engine,
            session: Some(session),
            system,
            history: Vec::new(),
            last_reply: None,
            reply: None,
            turn: None,
            params,
            sentence_end: None,
            verdicts: Vec::new(),
        }
    }

    /// The caller paused after `words` (the pause after `speech_end_ms`): ask the engine how
    /// likely a sentence ends there; the answer comes out of [`Self::take_verdicts`]. No
    /// answer (`None`) while a reply runs or without an engine conversation, so the
    /// recogniser does not wait for one.
    pub fn judge_pause(&mut self, speech_end_ms: u64, words: &str) {
        let asked = match (&self.reply, self.session.as_ref()) {
            (None, Some(session)) => session.sentence_end(words).map_err(|e| e.to_string()),
            _ => Err("a reply is running or no engine conversation is open".to_string()),
        };
        match asked {
            Ok(rx) => self.sentence_end = Some((speech_end_ms, rx)),
            Err(why) => {
                tracing::debug!(%why, "no sentence-end score for this pause");
                self.verdicts.push((speech_end_ms, None));
            }
        }
    }

    /// Sentence-end answers that arrived, in order.
    pub fn take_verdicts(&mut self) -> Vec<(u64, Option<f32>)> {
        if let Some((end, rx)) = &self.sentence_end {
            match rx.try_recv() {
                Ok(p) => {
                    self.verdicts.push((*end, p));
                    self.sentence_end = None;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => {
                    self.verdicts.push((*end, None));
                    self.sentence_end = None;
                }
            }
        }
        std::mem::take(&mut self.verdicts)
    }

    /// A new engine conversation that wakes us.
    fn open(&self, system: Option<&str>) -> Result<EngineSession, antiphon_models::llm::LlmError> {
        let mut s = self.engine.session(system)?;
        if let Some(w) = &self.wake {
            s.set_wake(w.clone());
        }
        Ok(s)
    }

    /// The reply stops streaming: remember what it said for the next turn's plan.
    fn settle(&mut self) {
        if let Some((_, r)) = self.reply.take() {
            self.last_reply = Some((r.request_id(), r.text_so_far().to_string()));
        }
    }

    /// The instructions changed before a turn: if the next turn would open a fresh engine
    /// conversation anyway, open it now and warm it, so the turn prefills only its own tokens.
    /// Best effort: any failure is left for the turn to meet.
    pub fn prepare(&mut self, messages: &[ChatMessage]) {
        if self.reply.is_some() {
            return;
        }
        let held = self.session.as_ref().map(|_| self.system.as_deref());
        let last = self.last_reply.as_ref().map(|(_, t)| t.as_str());
        // Only when everything is history: pending user messages belong to the turn itself.
        let Plan::Reset { system, user } = plan(held, &self.history, last, messages) else {
            return;
        };
        if !user.is_empty() {
            return;
        }
        self.session = None;
        match self.open(system.as_deref()) {
            Ok(s) => {
                if let Err(e) = s.warm() {
                    tracing::debug!("LLM warm-up not queued: {e}");
                }
                self.session = Some(s);
                let (system, rest) = split_system(messages);
                self.system = system.map(str::to_string);
                self.history = rest.to_vec();
                self.last_reply = None;
            }
            Err(e) => tracing::debug!("LLM conversation not prepared: {e}"),
        }
    }

    pub fn start(
        &mut self,
        epoch: Epoch,
        messages: &[ChatMessage],
        max_tokens: Option<u32>,
    ) -> Result<(), String> {
        if let Some((_, r)) = self.reply.as_mut() {
            r.cancel();
        }
        self.settle();
        let held = self.session.as_ref().map(|_| self.system.as_deref());
        let last = self.last_reply.as_ref().map(|(_, t)| t.as_str());
        let user = match plan(held, &self.history, last, messages) {
            Plan::Continue {
                keep_reply_bytes,
                user,
            } => {
                tracing::debug!(
                    ?keep_reply_bytes,
                    last_reply_bytes = self.last_reply.as_ref().map(|(_, t)| t.len()),
                    "LLM turn continues the cached conversation"
                );
                if let (Some(keep), Some((request, text)), Some(session)) =
                    (keep_reply_bytes, &self.last_reply, self.session.as_mut())
                    && keep < text.len()
                {
                    use antiphon_models::llm::ChatSession as _;
                    session
                        .truncate_reply(*request, keep)
                        .map_err(|e| e.to_string())?;
                }
                user
            }
            Plan::Reset { system, user } => {
                tracing::debug!("LLM conversation diverged from the cached one; starting afresh");
                // Free our engine session before taking a new one.
                self.session = None;
                self.session = Some(self.open(system.as_deref()).map_err(|e| e.to_string())?);
                user
            }
        };
        let (system, rest) = split_system(messages);
        self.system = system.map(str::to_string);
        self.history = rest.to_vec();
        self.last_reply = None;
        let mut params = self.params.clone();
        if let Some(n) = max_tokens {
            params.max_tokens = params.max_tokens.min(n as usize);
        }
        params.seed = params.seed.wrapping_add(epoch);
        let session = self
            .session
            .as_mut()
            .ok_or_else(|| "no LLM session".to_string())?;
        let stream = session.turn(&user, &params).map_err(|e| e.to_string())?;
        let users = rest.len() - turn_start(rest);
        self.turn = Some((epoch, stream.request_id(), users));
        self.reply = Some((epoch, stream));
        Ok(())
    }

    /// The caller's words so far: let the engine prefill them as the opening of the next user
    /// turn. Only while no reply runs (the engine would ignore it anyway) and the last reply
    /// has settled; a turn that does not continue this conversation simply does not use it.
    pub fn lookahead(&mut self, text: &str) {
        if self.reply.is_some() {
            return;
        }
        if let Some(session) = self.session.as_ref()
            && let Err(e) = session.lookahead(text)
        {
            tracing::debug!("LLM lookahead not queued: {e}");
        }
    }

    /// Takes the turn of `epoch` back out of the engine conversation and of the mirror, so the
    /// next turn continues from the cached conversation before it (a speculative reply that
    /// the caller's next words overtook).
    pub fn withdraw(&mut self, epoch: Epoch) {
        let Some((turn_epoch, request, users)) = self.turn else {
            return;
        };
        if turn_epoch != epoch {
            return;
        }
        self.turn = None;
        if self.reply.as_ref().is_some_and(|(e, _)| *e == epoch) {
            // Dropped, not settled: its text must not become the next plan's last reply.
            self.reply = None;
        }
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if let Err(e) = session.withdraw_turn(request) {
            tracing::debug!("LLM turn not withdrawn: {e}");
            // The engine conversation is gone; the next turn's plan starts afresh.
            self.session = None;
        }
        let keep = self.history.len().saturating_sub(users);
        self.history.truncate(keep);
        self.last_reply = None;
    }

    pub fn cancel(&mut self, epoch: Epoch) {
        if let Some((e, r)) = self.reply.as_mut()
            && *e == epoch
        {
            r.cancel();
            self.settle();
        }
    }

    /// Moves every ready reply event to `out`; true if there was any.
    pub fn poll(&mut self, out: &mut Vec<(Instant, EngineEvent)>) -> bool {
        let mut any = false;
        while let Some((epoch, r)) = self.reply.as_mut() {
            let epoch = *epoch;
            let event = match r.next_event_timeout(Duration::ZERO) {
                Ok(Some(e)) => e,
                Ok(None) => {
                    self.settle();
                    break;
                }
                Err(_) => break,
            };
            any = true;
            let now = Instant::now();
            match event {
                ReplyEvent::Text { text, .. } => {
                    out.push((now, EngineEvent::LlmToken { epoch, text }))
                }
                ReplyEvent::Done {
                    reason,
                    prefilled,
                    generated,
                    ..
                } => {
                    tracing::debug!(?reason, prefilled, generated, "LLM reply done");
                    out.push((now, EngineEvent::LlmDone { epoch }));
                    self.settle();
                }
                ReplyEvent::Failed { message, .. } => {
                    out.push((
                        now,
                        EngineEvent::Failed {
                            engine: Engine::Llm,
                            epoch: Some(epoch),
                            message,
                        },
                    ));
                    self.settle();
                }
            }
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: ChatRole, content: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.to_string(),
        }
    }

    #[test]
    fn spoken_bytes_ignores_chunk_whitespace() {
        let full = "Sure, I can help.  What time works?";
        assert_eq!(spoken_bytes(full, ""), Some(0));
        assert_eq!(spoken_bytes(full, "Sure,"), Some(5));
        assert_eq!(spoken_bytes(full, "Sure, I can help. What"), Some(23));
        assert_eq!(spoken_bytes(full, "Sure,I can"), Some(11));
        assert_eq!(spoken_bytes(full, full), Some(full.len()));
        assert_eq!(spoken_bytes(full, "Sure, you"), None);
        assert_eq!(
            spoken_bytes("héllo wörld", "héllo wö"),
            Some("héllo wö".len())
        );
    }

    #[test]
    fn first_turn_continues_on_the_session_opened_at_connect() {
        use ChatRole::*;
        let msgs = [m(System, "Be brief."), m(User, "hello there")];
        assert_eq!(
            plan(Some(Some("Be brief.")), &[], None, &msgs),
            Plan::Continue {
                keep_reply_bytes: None,
                user: "hello there".into()
            }
        );
    }

    #[test]
    fn next_turn_reuses_the_cache_and_truncates_a_cut_reply() {
        use ChatRole::*;
        let history = [m(User, "hello there")];
        let reply = "Hi! How can I help you today?";
        // Whole reply heard.
        let msgs = [
            m(System, "Be brief."),
            m(User, "hello there"),
            m(Assistant, "Hi! How can I help you today?"),
            m(User, "book a table"),
        ];
        assert_eq!(
            plan(Some(Some("Be brief.")), &history, Some(reply), &msgs),
            Plan::Continue {
                keep_reply_bytes: Some(reply.len()),
                user: "book a table".into()
            }
        );
        // Barge-in after "Hi! How can".
        let mut cut = msgs.clone();
        cut[2] = m(Assistant, "Hi! How can");
        assert_eq!(
            plan(Some(Some("Be brief.")), &history, Some(reply), &cut),
            Plan::Continue {
                keep_reply_bytes: Some(11),
                user: "book a table".into()
            }
        );
        // Nothing heard: the turn machine leaves the empty item out.
        let none = [msgs[0].clone(), msgs[1].clone(), msgs[3].clone()];
        assert_eq!(
            plan(Some(Some("Be brief.")), &history, Some(reply), &none),
            Plan::Continue {
                keep_reply_bytes: Some(0),
                user: "book a table".into()
            }
        );
    }

    #[test]
    fn divergent_conversations_start_afresh_with_the_history_as_text() {
        use ChatRole::*;
        let history = [m(User, "hello there")];
        let msgs = [
            m(System, "Be very brief."),
            m(User, "hello there"),
            m(Assistant, "Hi!"),
            m(User, "bye"),
            m(User, "now"),
        ];
        let Plan::Reset { system, user } =
            plan(Some(Some("Be brief.")), &history, Some("Hi!"), &msgs)
        else {
            panic!("instructions changed: must reset");
        };
        assert_eq!(user, "bye\nnow");
        let system = system.unwrap();
        assert!(system.starts_with("Be very brief."));
        assert!(
            system.contains("User: hello there\nAssistant: Hi!"),
            "{system}"
        );
        // An edited earlier message, or a reply that is not what the engine said.
        let mut edited = msgs.clone();
        edited[0] = m(System, "Be brief.");
        edited[2] = m(Assistant, "Hello!");
        assert!(matches!(
            plan(Some(Some("Be brief.")), &history, Some("Hi!"), &edited),
            Plan::Reset { .. }
        ));
        // No engine conversation yet.
        assert!(matches!(
            plan(None, &[], None, &msgs[..2]),
            Plan::Reset { .. }
        ));
    }
}
