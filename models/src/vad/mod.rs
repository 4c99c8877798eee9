//! Voice activity detection (Silero VAD v6) and the endpointing state machine on top of it.

pub mod endpoint;
pub mod silero;
pub mod smart_turn;
pub mod turn_end;

pub use endpoint::{EndpointConfig, EndpointEvent, Endpointer};
pub use silero::{SileroState, SileroVad, VadError};
pub use turn_end::{Eagerness, TurnEnd};
