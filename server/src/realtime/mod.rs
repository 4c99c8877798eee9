//! The OpenAI-Realtime-compatible WebSocket transport: sans-IO codec, conversation, turn state
//! machine, audio format conversion, and the per-session task that ties them to a socket.

pub mod audio_format;
pub mod chunker;
pub mod conversation;
pub mod events;
pub mod protocol;
pub mod session;
pub mod turn;
