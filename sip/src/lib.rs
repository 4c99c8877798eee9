//! Sans-IO SIP and RTP for Antiphon's phone transport: no sockets, no clocks, no threads.
//!
//! - [`message`]: strict SIP message parser and serializer (RFC 3261 section 7), with limits.
//! - [`sdp`]: SDP offer/answer for one audio stream: PCMU, PCMA, telephone-event (RFC 3264).
//! - [`transaction`]: server INVITE / non-INVITE transactions and the 2xx retransmission of
//!   the UAS core, with the RFC 3261 UDP timers (A..K) driven by `now` passed in.
//! - [`endpoint`]: the user agent server: dialogs, re-INVITE hold/unhold, CANCEL, BYE,
//!   OPTIONS; feed it datagrams and `now`, poll it for datagrams to send, call events and its
//!   next deadline.
//! - [`rtp`]: RTP and RTCP packets (RFC 3550), the outgoing packetizer, RFC 4733 DTMF events.
//!
//! RTP lives here rather than in `antiphon-audio` so that the fuzz targets link one small
//! pure-Rust crate (the audio crate links libopus); the audio crate keeps the jitter buffer
//! and the codecs, which work on payloads and know nothing of packet headers.

pub mod endpoint;
pub mod message;
pub mod rtp;
pub mod sdp;
pub mod transaction;

pub use endpoint::{CallId, Endpoint, EndpointConfig, EndpointEvent, EndpointStats, Transmit};
pub use message::{Message, ParseError, Request, Response};
