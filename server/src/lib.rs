//! The Antiphon server as a library: the `antiphon` binary's command line lives in `main.rs`;
//! everything else is here, so fuzzers and in-process tests (`Router::oneshot`) can link it.
//!
//! Shape (see docs/ARCHITECTURE.md): [`session`] is the per-call core and knows no transport;
//! [`realtime`], [`twilio`], [`sip`] and [`webrtc`] are thin legs onto it; [`app`] admits
//! sessions; [`http`] only merges the transports' routes; [`pipeline`] connects sessions to
//! the engine threads.

pub mod agent_check;
pub mod app;
pub mod auth;
pub mod commands;
pub mod config;
pub mod device;
pub mod drain;
pub mod health;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod realtime;
pub mod session;
pub mod sip;
pub mod twilio;
pub mod webrtc;
