//! Lock-free single-producer single-consumer sample ring, for audio going from a network task
//! to a model worker (or back), with a **drop-oldest** overflow policy.
//!
//! # Overflow policy
//! The ring holds at most `capacity` samples. When the producer pushes into a full ring the
//! *oldest* samples are discarded to make room: a late consumer should hear what was said most
//! recently, not audio from seconds ago. Every discarded sample is counted in an `AtomicU64`
//! readable from either end ([`RingProducer::dropped`], [`RingConsumer::dropped`],
//! [`DropCounter`]). A push longer than the whole ring keeps only its newest `capacity`
//! samples. The producer never blocks and never waits for the consumer.
//!
//! # Why not `ringbuf`
//! `ringbuf`'s split producer cannot pop, so it can only drop the *newest* data (`try_push`
//! fails) or take `&mut` of the whole ring (`push_overwrite`), which a two-thread split cannot
//! do. Asking the consumer to skip ("skip requests") still leaves the producer with nowhere to
//! put the new samples until the consumer runs. So this ring lets the producer advance the read
//! index itself, and makes the consumer validate its reads:
//!
//! * Indices are `u64` stream positions that never wrap: `tail` (next to write, stored only by
//!   the producer) and `head` (next to read, advanced by compare-and-swap from either side).
//!   Slot `i % capacity` holds stream sample `i`. Slots are atomics (`AtomicU32` holding f32
//!   bits, `AtomicU64` arrival stamps), so a read racing a write is never undefined behaviour,
//!   only possibly stale.
//! * Producer, pushing `n` samples at `t = tail`: slots `t..t+n` alias stream positions
//!   `t+n-capacity..`, so first it raises `head` to at least `t + n - capacity` with a CAS loop
//!   (the amount it raised it by is exactly the number of samples dropped), then stores the
//!   slots, then publishes `tail = t + n` with `Release`.
//! * Consumer: loads `head = h` and `tail` (`Acquire`, so slots below `tail` are visible), reads
//!   slots `h..h+k`, then CASes `head` from `h` to `h+k` (`AcqRel`). If the CAS succeeds, `head`
//!   was still `h` when it succeeded, so the producer had not yet claimed any of those positions,
//!   and since the producer only overwrites a slot after observing (via `Acquire`) a `head` past
//!   it, which the consumer's `Release` CAS orders after its reads, every value read belongs to
//!   positions `h..h+k`. If the CAS fails, the producer moved `head` (dropping some of those
//!   samples), the values may be stale, and the consumer retries from the new `head`.
//!
//! Both sides only ever retry a CAS because the other side made progress, so the ring is
//! lock-free; the producer's push is otherwise a bounded number of plain stores.
//!
//! Every sample also carries the arrival instant of the push that delivered it (stored as
//! nanoseconds after an origin instant passed in at construction), so the arrival stamp from
//! the socket survives the hop into the model thread. The stream position doubles as media time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::frame::AudioFrame;

/// Keeps the two hot indices on separate cache lines so the ends do not false-share.
#[repr(align(128))]
struct Padded<T>(T);

struct Shared {
    samples: Box<[AtomicU32]>,
    arrivals: Box<[AtomicU64]>,
    head: Padded<AtomicU64>,
    tail: Padded<AtomicU64>,
    dropped: Arc<AtomicU64>,
    origin: Instant,
}

impl Shared {
    fn capacity(&self) -> u64 {
        self.samples.len() as u64
    }

    fn slot(&self, position: u64) -> usize {
        (position % self.capacity()) as usize
    }

    /// The slot ranges holding `len <= capacity` positions from `position`: up to the end of
    /// the array, then from its start (one division per call, not per sample).
    fn ranges(
        &self,
        position: u64,
        len: usize,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let start = self.slot(position);
        let first = len.min(self.samples.len() - start);
        (start..start + first, 0..len - first)
    }
}

/// Why a ring could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("ring capacity must be at least 1 sample")]
    ZeroCapacity,
}

/// A shareable read-only view of a ring's drop counter (for metrics).
#[derive(Clone)]
pub struct DropCounter(Arc<AtomicU64>);

impl DropCounter {
    /// Samples discarded by the drop-oldest policy since the ring was made.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Makes a ring of `capacity` samples. `origin` is any instant at or before the first arrival
/// stamp (arrival stamps are stored relative to it; earlier stamps read back as `origin`).
pub fn channel(
    capacity: usize,
    origin: Instant,
) -> Result<(RingProducer, RingConsumer), RingError> {
    if capacity == 0 {
        return Err(RingError::ZeroCapacity);
    }
    let shared = Arc::new(Shared {
        samples: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
        arrivals: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
        head: Padded(AtomicU64::new(0)),
        tail: Padded(AtomicU64::new(0)),
        dropped: Arc::new(AtomicU64::new(0)),
        origin,
    });
    Ok((
        RingProducer {
            shared: shared.clone(),
            tail: 0,
        },
        RingConsumer { shared },
    ))
}

/// The writing end (the network task). `push` never blocks.
pub struct RingProducer {
    shared: Arc<Shared>,
    /// Our own copy of `tail`: only this side stores it.
    tail: u64,
}

impl RingProducer {
    /// Appends `samples` that arrived at `arrival`, discarding the oldest samples in the ring
    /// if it would overflow. Returns how many samples this push caused to be dropped.
    pub fn push(&mut self, samples: &[f32], arrival: Instant) -> u64 {
        let s = &*self.shared;
        let capacity = s.capacity();
        let t = self.tail;
        let new_tail = t + samples.len() as u64;
        // Slots for positions `t..new_tail` alias positions `..new_tail - capacity`, which must
        // be released first. A push longer than the ring releases some of its own positions
        // too: those samples are dropped without ever being stored.
        let required_head = new_tail.saturating_sub(capacity);
        let mut dropped = 0u64;
        let mut h = s.head.0.load(Ordering::Acquire);
        while h < required_head {
            match s.head.0.compare_exchange_weak(
                h,
                required_head,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    dropped = required_head - h;
                    break;
                }
                // The consumer advanced `head` (or the CAS failed spuriously): re-check.
                Err(actual) => h = actual,
            }
        }
        let write_from = required_head.max(t);
        let src = &samples[(write_from - t) as usize..];
        let stamp = arrival
            .checked_duration_since(s.origin)
            .unwrap_or(Duration::ZERO)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64;
        let (a, b) = s.ranges(write_from, src.len());
        let (src_a, src_b) = src.split_at(a.len());
        for (range, values) in [(a, src_a), (b, src_b)] {
            for (slot, &v) in s.samples[range.clone()].iter().zip(values) {
                slot.store(v.to_bits(), Ordering::Relaxed);
            }
            for slot in &s.arrivals[range] {
                slot.store(stamp, Ordering::Relaxed);
            }
        }
        self.tail = new_tail;
        s.tail.0.store(self.tail, Ordering::Release);
        if dropped > 0 {
            s.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        dropped
    }

    /// Samples discarded so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// A handle on the drop counter for metrics.
    pub fn drop_counter(&self) -> DropCounter {
        DropCounter(self.shared.dropped.clone())
    }

    /// Total samples ever pushed (the stream position of the next sample).
    pub fn pushed(&self) -> u64 {
        self.tail
    }

    /// Ring capacity in samples.
    pub fn capacity(&self) -> usize {
        self.shared.samples.len()
    }
}

/// What one `pop` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Popped {
    /// Stream position (samples since the ring was made) of the first sample returned. A jump
    /// from the previous pop's end is exactly the number of samples dropped in between.
    pub start: u64,
    /// Number of samples written to the output slice.
    pub len: usize,
    /// Arrival instant of the first and last samples returned.
    pub first_arrival: Instant,
    pub last_arrival: Instant,
}

/// The reading end (the model worker).
pub struct RingConsumer {
    shared: Arc<Shared>,
}

impl RingConsumer {
    /// Moves up to `out.len()` of the oldest samples into `out`. `None` if the ring is empty.
    pub fn pop(&mut self, out: &mut [f32]) -> Option<Popped> {
        if out.is_empty() {
            return None;
        }
        let s = &*self.shared;
        loop {
            let h = s.head.0.load(Ordering::Acquire);
            let t = s.tail.0.load(Ordering::Acquire);
            // An oversized push raises head past the old tail just before publishing the new
            // tail; until then there is nothing to read.
            let available = t.saturating_sub(h);
            if available == 0 {
                return None;
            }
            let k = available.min(out.len() as u64) as usize;
            let (a, b) = s.ranges(h, k);
            let (out_a, out_b) = out[..k].split_at_mut(a.len());
            for (range, dst) in [(a, out_a), (b, out_b)] {
                for (o, slot) in dst.iter_mut().zip(&s.samples[range]) {
                    *o = f32::from_bits(slot.load(Ordering::Relaxed));
                }
            }
            let first = s.arrivals[s.slot(h)].load(Ordering::Relaxed);
            let last = s.arrivals[s.slot(h + k as u64 - 1)].load(Ordering::Relaxed);
            #[cfg(test)]
            tests::race_window();
            if s.head
                .0
                .compare_exchange(h, h + k as u64, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Some(Popped {
                    start: h,
                    len: k,
                    first_arrival: s.origin + Duration::from_nanos(first),
                    last_arrival: s.origin + Duration::from_nanos(last),
                });
            }
            // The producer dropped some of what we read: those values may be stale. Retry.
            #[cfg(test)]
            tests::READ_RETRIES.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Pops up to `max` samples as a frame: media time is the stream position (the producer
    /// pushes a session's continuous audio, so position = samples since the stream started),
    /// arrival is that of the newest sample in it.
    pub fn pop_frame(&mut self, max: usize, sample_rate: u32) -> Option<AudioFrame> {
        let mut buf = vec![0.0; max];
        let p = self.pop(&mut buf)?;
        buf.truncate(p.len);
        Some(AudioFrame::new(buf, sample_rate, p.start, p.last_arrival))
    }

    /// Samples waiting (a snapshot; the producer may add more at any moment).
    pub fn len(&self) -> usize {
        let s = &*self.shared;
        let h = s.head.0.load(Ordering::Acquire);
        let t = s.tail.0.load(Ordering::Acquire);
        t.saturating_sub(h) as usize
    }

    /// True if nothing is waiting (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples discarded so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// A handle on the drop counter for metrics.
    pub fn drop_counter(&self) -> DropCounter {
        DropCounter(self.shared.dropped.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Consumer reads that were invalidated by the producer and retried (stress test only).
    pub(super) static READ_RETRIES: AtomicU64 = AtomicU64::new(0);

    thread_local! {
        static WIDEN_RACE: Cell<bool> = const { Cell::new(false) };
    }

    /// Called by `pop` between reading the slots and claiming them. On a thread that asked
    /// for it, gives up the CPU there so the producer gets to overwrite what was just read:
    /// on a busy two-core machine the race would otherwise almost never be exercised.
    pub(super) fn race_window() {
        if WIDEN_RACE.with(Cell::get) {
            std::thread::yield_now();
        }
    }

    #[test]
    fn fifo_until_full_then_oldest_are_dropped_and_counted() {
        let origin = Instant::now();
        let (mut tx, mut rx) = channel(4, origin).expect("ring");
        assert_eq!(tx.push(&[1.0, 2.0, 3.0], origin), 0);
        assert_eq!(tx.push(&[4.0, 5.0], origin + Duration::from_millis(20)), 1);
        assert_eq!(rx.len(), 4);
        let mut out = [0.0; 8];
        let p = rx.pop(&mut out).expect("data");
        assert_eq!(&out[..p.len], &[2.0, 3.0, 4.0, 5.0]);
        assert_eq!(p.start, 1, "position 0 was dropped");
        assert_eq!(p.first_arrival, origin);
        assert_eq!(p.last_arrival, origin + Duration::from_millis(20));
        assert_eq!(rx.dropped(), 1);
        assert!(rx.pop(&mut out).is_none());
    }

    #[test]
    fn oversized_push_keeps_its_newest_samples() {
        let origin = Instant::now();
        let (mut tx, mut rx) = channel(3, origin).expect("ring");
        tx.push(&[9.0], origin);
        assert_eq!(tx.push(&[1.0, 2.0, 3.0, 4.0, 5.0], origin), 3);
        let counter = tx.drop_counter();
        assert_eq!(counter.get(), 3);
        let frame = rx.pop_frame(10, 16_000).expect("frame");
        assert_eq!(frame.samples, vec![3.0, 4.0, 5.0]);
        assert_eq!(frame.media_time, 3);
        assert!(matches!(channel(0, origin), Err(RingError::ZeroCapacity)));
    }

    /// A producer thread pushes a numbered stream in bursts much faster than the consumer
    /// reads; every sample the consumer sees must be the one at its stream position (no
    /// duplicate, no reorder, no torn value), and the drop counter must equal exactly the
    /// samples that were never delivered. The run lasts until the consumer has had many reads
    /// invalidated by the producer, so the race this design exists for is really exercised.
    #[test]
    fn two_thread_stress_no_duplicates_no_reordering_exact_drops() {
        use std::sync::atomic::AtomicBool;
        const WANTED_RETRIES: u64 = 50;
        // Sample values are positions modulo 2^24, exact as f32 (the ring is far smaller).
        let value = |position: u64| (position % (1 << 24)) as f32;
        let origin = Instant::now();
        let (mut tx, mut rx) = channel(1000, origin).expect("ring");
        let stop = Arc::new(AtomicBool::new(false));
        let producer_stop = stop.clone();
        let producer = std::thread::spawn(move || {
            let mut next = 0u64;
            let mut burst = 1usize;
            let mut pushes = 0u64;
            let mut chunk = Vec::with_capacity(1200);
            // Runs until the consumer has seen enough races (or gives up, see below).
            while !producer_stop.load(Ordering::Relaxed) {
                let n = burst as u64;
                chunk.clear();
                chunk.extend((next..next + n).map(value));
                // Arrival stamps encode the push's first position, to check they travel.
                tx.push(&chunk, origin + Duration::from_nanos(next));
                next += n;
                // Mostly small pushes (1..=97 samples) so the producer keeps overwriting while
                // the consumer reads; every 64th push is larger than the whole ring.
                pushes += 1;
                burst = if pushes.is_multiple_of(64) {
                    1200
                } else {
                    (burst * 7 + 3) % 97 + 1
                };
                if pushes.is_multiple_of(8) {
                    // Let the consumer in on a loaded machine.
                    std::thread::yield_now();
                }
            }
            (tx.pushed(), tx.dropped())
        });
        let mut delivered = 0u64;
        let mut gaps = 0u64;
        let mut expected_next = 0u64;
        // Reading the whole ring at once keeps each read long, so the producer races it.
        let mut out = vec![0.0f32; 1000];
        WIDEN_RACE.with(|w| w.set(true));
        let mut last_arrival = origin;
        // A wall-clock limit for the test itself, so a machine that never interleaves the two
        // threads fails with a message instead of hanging.
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            if READ_RETRIES.load(Ordering::Relaxed) >= WANTED_RETRIES || Instant::now() > give_up {
                stop.store(true, Ordering::Relaxed);
            }
            match rx.pop(&mut out) {
                Some(p) => {
                    assert!(p.start >= expected_next, "went backwards at {}", p.start);
                    gaps += p.start - expected_next;
                    for (i, &v) in out[..p.len].iter().enumerate() {
                        assert_eq!(
                            v,
                            value(p.start + i as u64),
                            "wrong sample at position {}",
                            p.start + i as u64
                        );
                    }
                    assert!(p.first_arrival >= last_arrival && p.last_arrival >= p.first_arrival);
                    assert!(
                        p.last_arrival <= origin + Duration::from_nanos(p.start + p.len as u64 - 1)
                    );
                    last_arrival = p.last_arrival;
                    delivered += p.len as u64;
                    expected_next = p.start + p.len as u64;
                }
                None if producer.is_finished() && rx.is_empty() => break,
                None => std::thread::yield_now(),
            }
        }
        let (total, dropped) = producer.join().expect("producer thread");
        gaps += total - expected_next;
        assert_eq!(delivered + dropped, total);
        assert_eq!(gaps, dropped);
        assert_eq!(rx.dropped(), dropped);
        let retries = READ_RETRIES.load(Ordering::Relaxed);
        assert!(
            dropped > 0 && delivered > 0 && retries >= WANTED_RETRIES,
            "the test should exercise every path: dropped {dropped}, delivered {delivered}, \
             invalidated reads {retries}"
        );
    }
}
