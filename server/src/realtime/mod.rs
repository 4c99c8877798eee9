//! The OpenAI-Realtime-compatible WebSocket transport: sans-IO codec, conversation, turn state
//! machine, audio format conversion, and the per-session task that ties them to a socket.
//!
//! Map (sans-IO unless noted):
//! - [`protocol`]: `decode_client(text, &Limits) -> Result<ClientMessage, ErrorInfo>` and
//!   `encode_server(&ServerEvent, event_id, Dialect) -> Option<String>`; GA and beta names.
//! - [`events`]: dialect-neutral client/server event types, session config, items.
//! - [`conversation`]: items in order, truncate-to-played, `to_chat` for the LLM.
//! - [`turn`]: `TurnManager` (epochs, server_vad/manual turns, echo guard, latency trace);
//!   consumes [`turn::EngineEvent`], emits [`turn::Output`] = server events + [`turn::EngineCommand`]s.
//! - [`audio_format`]: client pcm16 24 kHz / G.711 8 kHz <-> engine f32 (16 kHz into ASR).
//! - [`session`] (tokio): one task per connection; engines plug in through
//!   [`session::EngineConnector`] -> [`session::EngineLink`] (bounded command/event channels).
//!
//! Wiring engines = implement `EngineConnector` (lease slots in `connect`, spawn an adapter
//! that turns `EngineCommand`s into engine calls and engine outputs into `EngineEvent`s) and
//! pass it to `http::AppState::new` in `commands/serve.rs`.

pub mod audio_format;
pub mod conversation;
pub mod events;
pub mod protocol;
pub mod session;
pub mod turn;
