//! Load generation against Realtime-compatible endpoints and the analysis it relies on.

pub mod speech_end;
