//! RTP jitter buffer: a sans-IO state machine. Feed it packets with `push(now, ..)`, ask it for
//! output with `pop(now)` until it returns `None`, and wake up again at `next_deadline()`.
//! It never reads a clock.
//!
//! # Behaviour
//! * **Reordering**: packets are kept in sequence-number order; 16-bit sequence numbers and
//!   32-bit timestamps are unwrapped to 64 bits, so 65535 -> 0 is just the next packet.
//! * **Playout schedule**: a packet with RTP timestamp `ts` is released at
//!   `anchor + (ts - anchor_ts) / clock_rate + playout_delay`. The anchor is the earliest
//!   "arrival minus media offset" seen (the fastest network transit), so the delay a packet
//!   waits is `playout_delay` (default 60 ms) on top of the best transit, bounded, and not
//!   inflated by a slow first packet. It creeps later by at most 1 ms per second of media so
//!   a sender clock running slow by up to 1000 ppm does not wear the delay away.
//! * **Loss**: when the next sequence number is absent but a later packet is buffered, the gap
//!   is certain; at the missing packet's own deadline (its timestamp interpolated between its
//!   neighbours) `pop` yields [`JitterOutput::Missing`] so the caller conceals it (Opus FEC from
//!   the next packet, which `peek_next_payload` then exposes, or Opus PLC; G.711 repeat or
//!   silence). While no later packet has arrived nothing is yielded: a silent sender (DTX) and
//!   a stalled network look the same until the next packet arrives.
//! * **Late packets** (arriving after their slot was declared missing) and **duplicates**
//!   (already buffered or already played) are dropped and counted. A packet arriving after its
//!   deadline but before its slot was given up is still played, at once.
//! * **Bounded**: at most `max_packets` are held; beyond that the oldest is dropped (counted in
//!   `overflow_dropped`). A sequence jump of more than `max_packets` (a sender restart) resets
//!   the buffer onto the new stream (`resyncs`).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Settings of one jitter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// RTP clock rate of the payload (8000 for G.711, 48000 for Opus).
    pub clock_rate: u32,
    /// How long after the best-case arrival a packet is released.
    pub playout_delay: Duration,
    /// Most packets held at once (50 = 1 s of 20 ms packets).
    pub max_packets: usize,
}

impl JitterConfig {
    /// Defaults for a payload clock: 60 ms delay, 50 packets.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            playout_delay: Duration::from_millis(60),
            max_packets: 50,
        }
    }
}

/// What `pop` hands out, in sequence order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JitterOutput<P> {
    /// A packet, due now.
    Packet {
        seq: u16,
        timestamp: u32,
        payload: P,
        arrival: Instant,
    },
    /// The packet with this sequence number is lost: conceal one packet's worth of audio.
    Missing {
        seq: u16,
        /// Interpolated from the neighbouring packets.
        timestamp: u32,
    },
}

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Buffered,
    /// Already buffered or already played: dropped.
    Duplicate,
    /// Its slot was already declared missing: dropped.
    Late,
    /// It started a new stream (sequence jump); everything buffered was discarded.
    Resynced,
}

/// Counters since the buffer was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub received: u64,
    pub played: u64,
    /// `Missing` outputs yielded.
    pub lost: u64,
    pub late: u64,
    pub duplicates: u64,
    pub overflow_dropped: u64,
    pub resyncs: u64,
}

struct Entry<P> {
    ts: i64,
    payload: P,
    arrival: Instant,
}

/// Maps a wrapped counter onto the 64-bit line nearest a reference point.
fn unwrap16(reference: i64, value: u16) -> i64 {
    reference + i64::from(value.wrapping_sub(reference as u16) as i16)
}

fn unwrap32(reference: i64, value: u32) -> i64 {
    reference + i64::from(value.wrapping_sub(reference as u32) as i32)
}

/// How many recently given-up sequence numbers are remembered to tell late from duplicate.
const MISSING_MEMORY: usize = 128;

/// The jitter buffer for one RTP stream. `P` is the payload type (bytes, usually).
pub struct JitterBuffer<P> {
    config: JitterConfig,
    packets: BTreeMap<i64, Entry<P>>,
    /// Instant corresponding to media offset `anchor_ts` at the best transit seen.
    anchor: Option<(Instant, i64)>,
    /// Highest sequence number seen and its timestamp: the unwrapping references.
    highest: Option<(i64, i64)>,
    /// Next sequence number to hand out.
    next_seq: i64,
    /// Sequence number and timestamp of the last output.
    last_out: Option<(i64, i64)>,
    missing: VecDeque<i64>,
    stats: JitterStats,
}

impl<P> JitterBuffer<P> {
    pub fn new(config: JitterConfig) -> Self {
        Self {
            config,
            packets: BTreeMap::new(),
            anchor: None,
            highest: None,
            next_seq: 0,
            last_out: None,
            missing: VecDeque::new(),
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    pub fn config(&self) -> JitterConfig {
        self.config
    }

    /// Packets currently held.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    fn media_duration(&self, ts_delta: i64) -> Duration {
        let rate = u64::from(self.config.clock_rate.max(1));
        let d = ts_delta.max(0) as u64;
        Duration::from_secs(d / rate) + Duration::from_nanos((d % rate) * 1_000_000_000 / rate)
    }

    /// When a packet with (unwrapped) timestamp `ts` is due.
    fn deadline(&self, ts: i64) -> Option<Instant> {
        let (anchor, anchor_ts) = self.anchor?;
        let base = if ts >= anchor_ts {
            anchor + self.media_duration(ts - anchor_ts)
        } else {
            anchor
                .checked_sub(self.media_duration(anchor_ts - ts))
                .unwrap_or(anchor)
        };
        Some(base + self.config.playout_delay)
    }

    fn start_stream(&mut self, now: Instant, seq: i64, ts: i64) {
        self.packets.clear();
        self.anchor = Some((now, ts));
        self.highest = Some((seq, ts));
        self.next_seq = seq;
        self.last_out = None;
        self.missing.clear();
    }

    /// Moves the anchor to the fastest transit seen, creeping later slowly (drift).
    fn update_anchor(&mut self, now: Instant, ts: i64) {
        let Some((anchor, anchor_ts)) = self.anchor else {
            return;
        };
        // Where the anchor would be if this packet had had the best transit.
        let implied = if ts >= anchor_ts {
            now.checked_sub(self.media_duration(ts - anchor_ts))
        } else {
            Some(now + self.media_duration(anchor_ts - ts))
        };
        let Some(implied) = implied else { return };
        if implied < anchor {
            self.anchor = Some((implied, anchor_ts));
        } else if ts > anchor_ts {
            // Allow 1 ms of creep per second of media since the last re-base, then re-base on
            // this packet so the next creep is measured from here.
            let elapsed = self.media_duration(ts - anchor_ts);
            let moved = anchor + (implied - anchor).min(elapsed / 1000);
            self.anchor = Some((moved + elapsed, ts));
        }
    }

    /// Takes in a packet read from the network at `now`.
    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, payload: P) -> PushOutcome {
        self.stats.received += 1;
        let Some((high_seq, high_ts)) = self.highest else {
            let (s, t) = (i64::from(seq), i64::from(timestamp));
            self.start_stream(now, s, t);
            self.packets.insert(
                s,
                Entry {
                    ts: t,
                    payload,
                    arrival: now,
                },
            );
            return PushOutcome::Buffered;
        };
        let s = unwrap16(high_seq, seq);
        let t = unwrap32(high_ts, timestamp);
        let window = self.config.max_packets.max(1) as i64;
        if s > high_seq + window || s < self.next_seq - 2 * window {
            // Far from anything expected: the sender restarted or jumped, or the network was
            // gone for longer than the buffer spans. Start over on this packet.
            self.stats.overflow_dropped += self.packets.len() as u64;
            self.stats.resyncs += 1;
            self.start_stream(now, s, t);
            self.packets.insert(
                s,
                Entry {
                    ts: t,
                    payload,
                    arrival: now,
                },
            );
            return PushOutcome::Resynced;
        }
        if s < self.next_seq {
            if self.last_out.is_none() && self.next_seq - s < window {
                // Nothing played yet: an earlier packet overtaken at the very start still
                // belongs in front.
                self.next_seq = s;
            } else if let Some(i) = self.missing.iter().position(|&m| m == s) {
                self.missing.remove(i);
                self.stats.late += 1;
                return PushOutcome::Late;
            } else {
                self.stats.duplicates += 1;
                return PushOutcome::Duplicate;
            }
        }
        if self.packets.contains_key(&s) {
            self.stats.duplicates += 1;
            return PushOutcome::Duplicate;
        }
        if s > high_seq {
            self.highest = Some((s, t));
        }
        self.update_anchor(now, t);
        self.packets.insert(
            s,
            Entry {
                ts: t,
                payload,
                arrival: now,
            },
        );
        while self.packets.len() > self.config.max_packets.max(1) {
            if let Some((&oldest, _)) = self.packets.first_key_value() {
                self.packets.remove(&oldest);
                self.stats.overflow_dropped += 1;
                self.next_seq = self.next_seq.max(oldest + 1);
            }
        }
        PushOutcome::Buffered
    }

    /// The next output and when it is due: the buffered packet at `next_seq`, or an
    /// interpolated timestamp for it when it is missing and a later packet proves the gap.
    fn next_due(&self) -> Option<(Instant, i64)> {
        if let Some(e) = self.packets.get(&self.next_seq) {
            return Some((self.deadline(e.ts)?, e.ts));
        }
        let (&later_seq, later) = self.packets.first_key_value()?;
        let ts = match self.last_out {
            Some((prev_seq, prev_ts)) if later_seq > prev_seq => {
                prev_ts + (later.ts - prev_ts) * (self.next_seq - prev_seq) / (later_seq - prev_seq)
            }
            _ => later.ts,
        };
        Some((self.deadline(ts)?, ts))
    }

    /// When `pop` will next have something, if anything is buffered.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_due().map(|(d, _)| d)
    }

    /// The payload of the packet `pop` will yield next, if it is already here. Right after
    /// `pop` returned `Missing`, this is the packet following the lost one: hand it to
    /// `OpusDecoder::decode_fec` to rebuild the lost frame from its in-band FEC.
    pub fn peek_next_payload(&self) -> Option<&P> {
        self.packets.get(&self.next_seq).map(|e| &e.payload)
    }

    /// Yields the next packet or loss notice if it is due at `now`. Call until `None`.
    pub fn pop(&mut self, now: Instant) -> Option<JitterOutput<P>> {
        let (due, ts) = self.next_due()?;
        if now < due {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.last_out = Some((seq, ts));
        if let Some(e) = self.packets.remove(&seq) {
            self.stats.played += 1;
            Some(JitterOutput::Packet {
                seq: seq as u16,
                timestamp: e.ts as u32,
                payload: e.payload,
                arrival: e.arrival,
            })
        } else {
            self.stats.lost += 1;
            if self.missing.len() == MISSING_MEMORY {
                self.missing.pop_front();
            }
            self.missing.push_back(seq);
            Some(JitterOutput::Missing {
                seq: seq as u16,
                timestamp: ts as u32,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One millisecond of virtual time per step: push what arrives, then drain what is due.
    fn run(
        jb: &mut JitterBuffer<u16>,
        t0: Instant,
        arrivals: &[(u64, u16, u32)],
        end_ms: u64,
    ) -> Vec<(u64, JitterOutput<u16>)> {
        let mut out = Vec::new();
        for ms in 0..=end_ms {
            let now = t0 + Duration::from_millis(ms);
            for &(_, seq, ts) in arrivals.iter().filter(|a| a.0 == ms) {
                jb.push(now, seq, ts, seq);
            }
            while let Some(o) = jb.pop(now) {
                out.push((ms, o));
            }
        }
        out
    }

    fn seqs(out: &[(u64, JitterOutput<u16>)]) -> Vec<(u16, bool)> {
        out.iter()
            .map(|(_, o)| match o {
                JitterOutput::Packet { seq, payload, .. } => {
                    assert_eq!(seq, payload);
                    (*seq, true)
                }
                JitterOutput::Missing { seq, .. } => (*seq, false),
            })
            .collect()
    }

    fn g711() -> JitterBuffer<u16> {
        JitterBuffer::new(JitterConfig::new(8000))
    }

    #[test]
    fn in_order_packets_play_exactly_the_playout_delay_after_arrival() {
        let t0 = Instant::now();
        let mut jb = g711();
        let arrivals: Vec<_> = (0..10u16)
            .map(|i| (20 * u64::from(i), i, 160 * u32::from(i)))
            .collect();
        jb.push(t0, 0, 0, 0);
        assert_eq!(jb.next_deadline(), Some(t0 + Duration::from_millis(60)));
        assert!(jb.pop(t0 + Duration::from_millis(59)).is_none());
        let mut jb = g711();
        let out = run(&mut jb, t0, &arrivals, 400);
        assert_eq!(out.len(), 10);
        for (i, (ms, o)) in out.iter().enumerate() {
            assert_eq!(*ms, 20 * i as u64 + 60);
            match o {
                JitterOutput::Packet {
                    arrival, timestamp, ..
                } => {
                    assert_eq!(*arrival, t0 + Duration::from_millis(20 * i as u64));
                    assert_eq!(*timestamp, 160 * i as u32);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(jb.stats().played, 10);
        assert!(jb.is_empty() && jb.next_deadline().is_none());
    }

    #[test]
    fn reorders_across_sequence_and_timestamp_wraparound() {
        let t0 = Instant::now();
        let mut jb = g711();
        let ts0 = u32::MAX - 320;
        let pkt = |k: u16| {
            (
                65533u16.wrapping_add(k),
                ts0.wrapping_add(160 * u32::from(k)),
            )
        };
        // Arrival order 0, 2, 1, 4, 3, 5 (sequence 65533, 65535, 65534, 1, 0, 2).
        let order = [0u16, 2, 1, 4, 3, 5];
        let arrivals: Vec<_> = order
            .iter()
            .enumerate()
            .map(|(i, &k)| (20 * i as u64 + 5, pkt(k).0, pkt(k).1))
            .collect();
        let out = run(&mut jb, t0, &arrivals, 400);
        assert_eq!(
            seqs(&out),
            vec![
                (65533, true),
                (65534, true),
                (65535, true),
                (0, true),
                (1, true),
                (2, true)
            ]
        );
        let stamps: Vec<u32> = out
            .iter()
            .filter_map(|(_, o)| match o {
                JitterOutput::Packet { timestamp, .. } => Some(*timestamp),
                _ => None,
            })
            .collect();
        assert_eq!(
            stamps,
            (0..6)
                .map(|k| ts0.wrapping_add(160 * k))
                .collect::<Vec<_>>()
        );
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn duplicates_are_dropped_before_and_after_playout() {
        let t0 = Instant::now();
        let mut jb = g711();
        assert_eq!(jb.push(t0, 7, 0, 7), PushOutcome::Buffered);
        assert_eq!(jb.push(t0, 7, 0, 7), PushOutcome::Duplicate);
        assert!(matches!(
            jb.pop(t0 + Duration::from_millis(60)),
            Some(JitterOutput::Packet { seq: 7, .. })
        ));
        assert_eq!(
            jb.push(t0 + Duration::from_millis(70), 7, 0, 7),
            PushOutcome::Duplicate
        );
        assert_eq!(jb.stats().duplicates, 2);
        assert!(jb.pop(t0 + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn a_gap_yields_missing_at_its_deadline_and_the_straggler_is_late() {
        let t0 = Instant::now();
        let mut jb = g711();
        // Packet 2 is lost in the network and shows up at 150 ms.
        let arrivals = [
            (0, 0, 0),
            (20, 1, 160),
            (60, 3, 480),
            (80, 4, 640),
            (150, 2, 320),
        ];
        let mut out = run(&mut jb, t0, &arrivals[..4], 100);
        // Right after the Missing: the packet following the lost one is here for FEC.
        assert!(matches!(
            out.last(),
            Some((100, JitterOutput::Missing { seq: 2, .. }))
        ));
        assert_eq!(jb.peek_next_payload(), Some(&3));
        out.extend(run_from(&mut jb, t0, &arrivals, 100, 300));
        assert_eq!(
            seqs(&out),
            vec![(0, true), (1, true), (2, false), (3, true), (4, true)]
        );
        let (ms, missing) = &out[2];
        assert_eq!(
            *ms, 100,
            "missing slot is given up at its own deadline (40 + 60 ms)"
        );
        assert_eq!(
            *missing,
            JitterOutput::Missing {
                seq: 2,
                timestamp: 320
            }
        );
        let stats = jb.stats();
        assert_eq!(
            (stats.lost, stats.late, stats.played, stats.received),
            (1, 1, 4, 5)
        );
    }

    fn run_from(
        jb: &mut JitterBuffer<u16>,
        t0: Instant,
        arrivals: &[(u64, u16, u32)],
        from_ms: u64,
        end_ms: u64,
    ) -> Vec<(u64, JitterOutput<u16>)> {
        let mut out = Vec::new();
        for ms in from_ms..=end_ms {
            let now = t0 + Duration::from_millis(ms);
            for &(_, seq, ts) in arrivals.iter().filter(|a| a.0 == ms && ms > from_ms) {
                jb.push(now, seq, ts, seq);
            }
            while let Some(o) = jb.pop(now) {
                out.push((ms, o));
            }
        }
        out
    }

    #[test]
    fn a_late_packet_not_yet_given_up_plays_at_once() {
        let t0 = Instant::now();
        let mut jb = g711();
        // Packet 1 is due at 80 ms but arrives at 200 ms; nothing proved it lost before then.
        let out = run(&mut jb, t0, &[(0, 0, 0), (200, 1, 160)], 300);
        assert_eq!(seqs(&out), vec![(0, true), (1, true)]);
        assert_eq!(out[1].0, 200);
    }

    #[test]
    fn a_slow_first_packet_does_not_inflate_the_delay() {
        let t0 = Instant::now();
        let mut jb = g711();
        let at = |ms| t0 + Duration::from_millis(ms);
        jb.push(at(40), 0, 0, 0); // 40 ms transit
        assert_eq!(jb.next_deadline(), Some(at(100)));
        jb.push(at(45), 1, 160, 1); // 25 ms transit: the schedule moves 15 ms earlier
        assert_eq!(jb.next_deadline(), Some(at(85)));
        assert!(jb.pop(at(84)).is_none());
        assert!(matches!(
            jb.pop(at(85)),
            Some(JitterOutput::Packet { seq: 0, .. })
        ));
        assert_eq!(jb.next_deadline(), Some(at(105)));
    }

    #[test]
    fn the_buffer_is_bounded_and_drops_its_oldest() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig {
            max_packets: 4,
            ..JitterConfig::new(8000)
        });
        for i in 0..10u16 {
            jb.push(t0, i, 160 * u32::from(i), i);
        }
        assert_eq!(jb.len(), 4);
        assert_eq!(jb.stats().overflow_dropped, 6);
        let mut played = Vec::new();
        while let Some(o) = jb.pop(t0 + Duration::from_secs(10)) {
            played.push(o);
        }
        assert_eq!(
            seqs(&played.into_iter().map(|o| (0, o)).collect::<Vec<_>>()),
            vec![(6, true), (7, true), (8, true), (9, true)]
        );
    }

    #[test]
    fn a_sequence_jump_resyncs_onto_the_new_stream() {
        let t0 = Instant::now();
        let mut jb = g711();
        jb.push(t0, 0, 0, 0);
        jb.push(t0, 1, 160, 1);
        let later = t0 + Duration::from_millis(20);
        assert_eq!(
            jb.push(later, 20_000, 999_999, 20_000),
            PushOutcome::Resynced
        );
        assert_eq!(jb.stats().resyncs, 1);
        assert_eq!(jb.next_deadline(), Some(later + Duration::from_millis(60)));
        assert!(matches!(
            jb.pop(later + Duration::from_millis(60)),
            Some(JitterOutput::Packet {
                seq: 20_000,
                timestamp: 999_999,
                ..
            })
        ));
    }

    /// A long stream through a rough network (deterministic pseudo-random jitter of 0..80 ms,
    /// 5 % loss, 3 % duplicates, sequence numbers wrapping): output must be strictly in
    /// sequence with every number accounted for exactly once, and the counters must add up.
    #[test]
    fn rough_network_keeps_order_and_the_books_balance() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::new(48_000));
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next_random = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let first_seq = 65_000u16;
        let mut arrivals = Vec::new();
        let mut sent_lost = 0;
        for k in 0..1000u64 {
            let seq = first_seq.wrapping_add(k as u16);
            let ts = (k as u32).wrapping_mul(960).wrapping_add(u32::MAX - 96_000);
            let r = next_random();
            if r % 100 < 5 && k > 0 && k < 999 {
                sent_lost += 1;
                continue;
            }
            let at = 20 * k + 5 + (r >> 8) % 80;
            arrivals.push((at, seq, ts));
            if (r >> 20) % 100 < 3 {
                arrivals.push((at + (r >> 30) % 40, seq, ts));
            }
        }
        let end = 20 * 1000 + 500;
        let out = run(&mut jb, t0, &arrivals, end);
        // Strictly consecutive sequence numbers from the first to the last.
        for (i, (_, o)) in out.iter().enumerate() {
            let seq = match o {
                JitterOutput::Packet { seq, .. } | JitterOutput::Missing { seq, .. } => *seq,
            };
            assert_eq!(seq, first_seq.wrapping_add(i as u16), "output {i}");
        }
        assert_eq!(out.len(), 1000);
        let s = jb.stats();
        assert_eq!(s.received as usize, arrivals.len());
        assert_eq!(s.played + s.lost, 1000);
        assert_eq!(
            s.received,
            s.played + s.duplicates + s.late + s.overflow_dropped
        );
        // Network losses are all reported; jitter beyond the delay adds some more.
        assert!(
            s.lost >= sent_lost && s.lost - sent_lost == s.late,
            "{s:?}, sent lost {sent_lost}"
        );
        assert_eq!(s.resyncs, 0);
        assert!(jb.is_empty());
    }
}
