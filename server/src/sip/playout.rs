//! The outgoing side of a call, sans-IO: reply audio queued by the session, released as one
//! 20 ms G.711 frame per clock tick. The call task owns the clock; this only decides what
//! each tick sends.
//!
//! Between replies the line carries G.711 silence rather than nothing: a phone line is never
//! packet-free, carriers hang up calls whose RTP stops (RTP timeout), and NAT bindings stay
//! open. The first frame of each reply carries the RTP marker bit (start of a talkspurt).
//! A reply that runs dry while still streaming is an underrun (counted; silence fills).

use std::collections::VecDeque;

/// Bytes (= samples at 8 kHz) in one 20 ms G.711 frame.
pub const FRAME_BYTES: usize = 160;

/// What one tick sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Reply audio; `marker` starts a talkspurt.
    Speech {
        marker: bool,
    },
    Silence,
}

/// What a barge-in cut short: the item and how much of it the caller heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub item_id: String,
    pub audio_end_ms: u32,
}

pub struct Playout {
    queue: VecDeque<u8>,
    max_bytes: usize,
    silence: u8,
    /// The item whose audio is playing or queued, and the bytes of it already sent.
    item: Option<(String, usize)>,
    /// Audio for an item that a barge-in cut: late deltas of it are dropped.
    cut_item: Option<String>,
    /// The reply is still streaming audio in.
    open: bool,
    talking: bool,
    pub underruns: u64,
    /// Frames of silence sent while a started reply was still streaming in.
    pub underrun_frames: u64,
    pub overflow_bytes: u64,
}

impl Playout {
    /// `max_bytes` bounds the queue (the oldest audio is dropped beyond it, and counted).
    pub fn new(silence: u8, max_bytes: usize) -> Self {
        Playout {
            queue: VecDeque::new(),
            max_bytes,
            silence,
            item: None,
            cut_item: None,
            open: false,
            talking: false,
            underruns: 0,
            underrun_frames: 0,
            overflow_bytes: 0,
        }
    }

    /// Reply audio for `item_id`, in the call's G.711 law.
    pub fn push(&mut self, item_id: &str, audio: &[u8]) {
        if self.cut_item.as_deref() == Some(item_id) {
            return;
        }
        match &self.item {
            Some((id, _)) if id == item_id => {}
            _ => self.item = Some((item_id.to_string(), 0)),
        }
        self.open = true;
        self.queue.extend(audio);
        let excess = self.queue.len().saturating_sub(self.max_bytes);
        if excess > 0 {
            self.queue.drain(..excess);
            self.overflow_bytes += excess as u64;
        }
    }

    /// The reply finished streaming: what is queued plays out, the tail padded with silence.
    pub fn reply_done(&mut self) {
        self.open = false;
    }

    /// Audio is queued or still coming.
    pub fn busy(&self) -> bool {
        !self.queue.is_empty() || self.open
    }

    /// Fills `out` with the next frame.
    pub fn next_frame(&mut self, out: &mut [u8; FRAME_BYTES]) -> Frame {
        let ready = self.queue.len() >= FRAME_BYTES || (!self.open && !self.queue.is_empty());
        if !ready {
            if self.open && self.talking {
                self.underruns += 1;
            }
            if self.open && self.item.as_ref().is_some_and(|(_, sent)| *sent > 0) {
                self.underrun_frames += 1;
            }
            // After an underrun the next speech frame carries a new marker, so the receiver
            // re-anchors its playout instead of treating the late audio as jitter.
            self.talking = false;
            out.fill(self.silence);
            return Frame::Silence;
        }
        let n = self.queue.len().min(FRAME_BYTES);
        for (o, b) in out.iter_mut().zip(self.queue.drain(..n)) {
            *o = b;
        }
        out[n..].fill(self.silence);
        if let Some((_, sent)) = &mut self.item {
            *sent += n;
        }
        let marker = !self.talking;
        self.talking = true;
        Frame::Speech { marker }
    }

    /// The caller started talking: drop everything queued at once. Returns what to truncate
    /// when reply audio was cut (not when it had already finished playing).
    pub fn barge_in(&mut self) -> Option<Truncation> {
        let cut = self.busy();
        self.queue.clear();
        self.open = false;
        self.talking = false;
        let (item_id, sent) = self.item.take()?;
        if !cut {
            return None;
        }
        self.cut_item = Some(item_id.clone());
        Some(Truncation {
            item_id,
            // 8 bytes per ms at 8 kHz G.711.
            audio_end_ms: u32::try_from(sent / 8).unwrap_or(u32::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_markers_padding_and_silence() {
        let mut p = Playout::new(0xff, 1 << 20);
        let mut f = [0u8; FRAME_BYTES];
        assert_eq!(p.next_frame(&mut f), Frame::Silence);
        assert_eq!(f, [0xff; FRAME_BYTES]);
        p.push("item_1", &[1; 400]);
        assert_eq!(p.next_frame(&mut f), Frame::Speech { marker: true });
        assert_eq!(p.next_frame(&mut f), Frame::Speech { marker: false });
        // 80 bytes left while the reply is still streaming: wait, counted as an underrun.
        assert_eq!(p.next_frame(&mut f), Frame::Silence);
        assert_eq!((p.underruns, p.underrun_frames), (1, 1));
        p.reply_done();
        // Done: the tail plays, padded with silence.
        assert_eq!(p.next_frame(&mut f), Frame::Speech { marker: true });
        assert_eq!(&f[..80], &[1; 80]);
        assert_eq!(&f[80..], &[0xff; 80]);
        assert_eq!(p.next_frame(&mut f), Frame::Silence);
        assert_eq!(
            p.underruns, 1,
            "silence after a finished reply is not an underrun"
        );
        assert!(!p.busy());
    }

    #[test]
    fn barge_in_flushes_at_once_and_reports_what_was_heard() {
        let mut p = Playout::new(0xff, 1 << 20);
        let mut f = [0u8; FRAME_BYTES];
        p.push("item_7", &[3; 8000]);
        for _ in 0..5 {
            p.next_frame(&mut f);
        }
        assert_eq!(
            p.barge_in(),
            Some(Truncation {
                item_id: "item_7".into(),
                audio_end_ms: 100
            })
        );
        // The very next frame is silence, and late audio of the cut item is dropped.
        p.push("item_7", &[3; 800]);
        assert_eq!(p.next_frame(&mut f), Frame::Silence);
        assert!(!p.busy());
        // A finished reply is not truncated by later speech.
        p.push("item_8", &[4; 160]);
        p.reply_done();
        p.next_frame(&mut f);
        assert_eq!(p.barge_in(), None);
    }

    #[test]
    fn queue_is_bounded_dropping_the_oldest() {
        let mut p = Playout::new(0xff, 320);
        p.push("a", &[1; 200]);
        p.push("a", &[2; 200]);
        assert_eq!(p.overflow_bytes, 80);
        let mut f = [0u8; FRAME_BYTES];
        p.next_frame(&mut f);
        assert_eq!(&f[..120], &[1; 120]);
        assert_eq!(&f[120..], &[2; 40]);
    }
}
