//! Underrun detection for reply audio, judged by playout time.
//!
//! A client that starts playing at the first delta and plays every delta back to back at real
//! time starves whenever a delta arrives after everything before it has finished playing. A gap
//! longer than one frame is an underrun (shorter ones are absorbed by any audio device buffer).

use std::time::{Duration, Instant};

use crate::clips::FRAME_MS;

/// Playout clock of one reply. Sans-IO: arrival instants are passed in.
#[derive(Debug, Clone, Default)]
pub struct Playout {
    /// When the audio received so far finishes playing.
    buffered_until: Option<Instant>,
    audio: Duration,
    underruns: u32,
    starved: Duration,
}

impl Playout {
    /// A delta of `duration` arrived at `now`.
    pub fn on_audio(&mut self, now: Instant, duration: Duration) {
        let start = match self.buffered_until {
            None => now,
            Some(until) => {
                if now > until + Duration::from_millis(FRAME_MS) {
                    self.underruns += 1;
                    self.starved += now - until;
                }
                until.max(now)
            }
        };
        self.buffered_until = Some(start + duration);
        self.audio += duration;
    }

    /// When the reply finishes playing (`None` before any audio).
    pub fn ends_at(&self) -> Option<Instant> {
        self.buffered_until
    }

    pub fn audio(&self) -> Duration {
        self.audio
    }

    pub fn underruns(&self) -> u32 {
        self.underruns
    }

    /// Total silence the listener heard inside the reply.
    pub fn starved(&self) -> Duration {
        self.starved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn audio_faster_than_real_time_never_underruns() {
        let t0 = Instant::now();
        let mut p = Playout::default();
        for i in 0..10 {
            p.on_audio(t0 + MS(i * 5), MS(100));
        }
        assert_eq!(p.underruns(), 0);
        assert_eq!(p.audio(), MS(1000));
        assert_eq!(p.ends_at(), Some(t0 + MS(1000)));
    }

    #[test]
    fn a_late_delta_is_one_underrun_with_its_gap() {
        let t0 = Instant::now();
        let mut p = Playout::default();
        p.on_audio(t0, MS(200));
        // Within one frame of the buffer running dry: absorbed.
        p.on_audio(t0 + MS(215), MS(200));
        assert_eq!(p.underruns(), 0);
        // That delta played from its arrival: buffered until 415 ms; one at 500 ms leaves
        // 85 ms of silence.
        p.on_audio(t0 + MS(500), MS(200));
        assert_eq!(p.underruns(), 1);
        assert_eq!(p.starved(), MS(85));
        assert_eq!(p.ends_at(), Some(t0 + MS(700)));
    }
}
