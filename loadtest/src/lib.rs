//! Load generation against Realtime-compatible endpoints: N concurrent callers each speak real
//! clips at real-time pace and measure TTFB from the true end of their speech.
//!
//! `clips` loads the speech; `session` is the sans-IO caller (what to send each 20 ms frame,
//! what each server event means for the turn); `driver` wires it to a WebSocket; `run` runs
//! steps and ramps; `soak` runs steps back to back and samples the server for leaks;
//! `summary`/`stats` aggregate into HDR histograms; `report` writes JSON and HTML.

pub mod clips;
pub mod driver;
pub mod paused_set;
pub mod playout;
pub mod record;
pub mod report;
pub mod run;
pub mod session;
pub mod soak;
pub mod speech_end;
pub mod stats;
pub mod summary;
pub mod target;
