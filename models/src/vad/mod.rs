//! Voice activity detection (Silero VAD v6) and the endpointing state machine on top of it.

pub mod endpoint;
pub mod silero;
pub mod smart_turn;

pub use endpoint::{EndpointConfig, EndpointEvent, Endpointer};
pub use silero::{SileroState, SileroVad, VadError};
