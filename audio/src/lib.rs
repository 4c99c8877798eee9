//! Media plumbing shared by every transport and model: no model code, no sockets, no clocks.
//!
//! Every core here is sans-IO: time is passed in (`std::time::Instant` stamped once where a
//! packet is read), nothing reads a clock, spawns a thread or touches a socket.
//!
//! - [`frame`]: [`AudioFrame`], the unit of audio that travels through a session.
//! - [`g711`]: G.711 mu-law / A-law, bit-exact to the ITU-T G.191 reference quantiser.
//! - [`opus_codec`]: 48 kHz mono Opus in 20 ms frames with PLC and in-band FEC.
//! - [`resample`]: streaming sample-rate conversion between the telephony/model rates.
//! - [`ring`]: lock-free SPSC sample ring with a drop-oldest overflow policy.
//! - [`jitter`]: RTP jitter buffer (reorder, dedupe, loss/late accounting, playout delay).
//! - [`wav`]: WAV files in and out.

pub mod frame;
pub mod g711;
pub mod jitter;
pub mod opus_codec;
pub mod resample;
pub mod ring;
pub mod wav;

pub use frame::{AudioFrame, MediaTime};
