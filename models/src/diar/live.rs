//! Live speaker labels for a session's speech segments (sans-IO): the session's audio and its
//! VAD's speech start/stop go in, embedding jobs come out, embeddings go back in, and one label
//! (`S1`, `S2`, …) per finished speech segment comes out, stable for the session.
//!
//! Why per segment: a live session reports one transcript per user turn, so that is the unit
//! a label is attached to. Labels are decided once and never revised (they have been sent).
//!
//! Timing, so the label is ready when the transcript is:
//! - Windows are cut *while the user speaks*: the first 0.75 s after speech start, then every
//!   0.75 s a window of the last 1.5 s (never reaching before the speech start). The VAD only
//!   reports the end of speech after its endpointing silence (e.g. 500 ms), and windows keep
//!   being cut during that silence, so by the time speech stops, windows covering nearly all
//!   of it have been embedded.
//! - At speech stop, the segment keeps the windows that are at least half speech (weighted by
//!   that fraction); if none, or the last `hop` of speech is uncovered, one exact window of the
//!   segment's tail is cut. The segment is decided as soon as it is closed and one of its
//!   windows has its embedding; windows still in flight then are ignored.
//!
//! Clustering: a segment's embedding is the weighted sum of its windows' length-normalised
//! embeddings; it joins the most similar speaker (cosine against the sum of that speaker's
//! segment embeddings) at or above `threshold`, else starts a new speaker. Label numbers are
//! never reused or renamed.

use std::collections::VecDeque;

use super::cosine;
use super::embedder::SAMPLE_RATE;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveConfig {
    pub window_s: f32,
    pub hop_s: f32,
    /// Segments with less speech than this get no label.
    pub min_speech_s: f32,
    /// A window counts for its segment only if at least this fraction of it is speech.
    pub min_speech_fraction: f32,
    /// Cosine similarity needed to join an existing speaker.
    pub threshold: f32,
    /// Input audio kept for cutting windows (a speech start reported this late still works).
    pub keep_s: f32,
    /// Windows kept per open segment (the most recent); older ones are let go.
    pub max_windows_per_segment: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            window_s: 1.5,
            hop_s: 0.75,
            min_speech_s: 0.25,
            min_speech_fraction: 0.5,
            threshold: 0.5,
            keep_s: 20.0,
            max_windows_per_segment: 32,
        }
    }
}

/// Audio to embed; hand the result back with [`LiveDiarizer::handle_embedding`].
#[derive(Debug, Clone, PartialEq)]
pub struct WindowJob {
    pub id: u64,
    /// 16 kHz mono samples.
    pub samples: Vec<f32>,
}

/// The decision for one speech segment.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentLabel {
    /// Segment number (0, 1, … in speech-start order).
    pub segment: u64,
    /// Speech extent on the session's sample clock (16 kHz, 0 = first sample pushed).
    pub start_sample: u64,
    pub end_sample: u64,
    /// `None` when the segment had no usable audio (too short, or every embedding failed).
    pub label: Option<String>,
    /// Similarity to the speaker it joined (`None` for a new speaker or no label).
    pub similarity: Option<f32>,
    /// Windows the decision used.
    pub windows: usize,
}

#[derive(Debug)]
struct Window {
    id: u64,
    segment: u64,
    start: u64,
    end: u64,
    embedding: Option<Vec<f32>>,
    failed: bool,
}

#[derive(Debug)]
struct Open {
    segment: u64,
    start: u64,
    next_cut: u64,
}

#[derive(Debug)]
struct Closed {
    segment: u64,
    start: u64,
    end: u64,
    /// (window id, weight)
    windows: Vec<(u64, f32)>,
}

#[derive(Debug)]
pub struct LiveDiarizer {
    cfg: LiveConfig,
    win: u64,
    hop: u64,
    min_speech: u64,
    keep: usize,
    ring: VecDeque<f32>,
    /// Sample index of `ring[0]`.
    ring_start: u64,
    total: u64,
    open: Option<Open>,
    windows: Vec<Window>,
    closed: Vec<Closed>,
    next_window: u64,
    next_segment: u64,
    centroids: Vec<Vec<f32>>,
    jobs: VecDeque<WindowJob>,
    labels: VecDeque<SegmentLabel>,
}

fn samples(seconds: f32) -> u64 {
    (seconds * SAMPLE_RATE as f32).round().max(1.0) as u64
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n == 0.0 {
        v.to_vec()
    } else {
        v.iter().map(|x| x / n).collect()
    }
}

fn overlap(a: (u64, u64), b: (u64, u64)) -> u64 {
    a.1.min(b.1).saturating_sub(a.0.max(b.0))
}

impl LiveDiarizer {
    pub fn new(cfg: LiveConfig) -> Self {
        Self {
            win: samples(cfg.window_s),
            hop: samples(cfg.hop_s),
            min_speech: samples(cfg.min_speech_s),
            keep: samples(cfg.keep_s.max(cfg.window_s)) as usize,
            cfg,
            ring: VecDeque::new(),
            ring_start: 0,
            total: 0,
            open: None,
            windows: Vec::new(),
            closed: Vec::new(),
            next_window: 0,
            next_segment: 0,
            centroids: Vec::new(),
            jobs: VecDeque::new(),
            labels: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &LiveConfig {
        &self.cfg
    }

    /// Speakers heard so far.
    pub fn num_speakers(&self) -> usize {
        self.centroids.len()
    }

    /// Samples pushed so far (the session's clock).
    pub fn clock(&self) -> u64 {
        self.total
    }

    /// Closed segments still waiting for an embedding.
    pub fn pending(&self) -> usize {
        self.closed.len()
    }

    /// The segment being spoken, if any.
    pub fn open_segment(&self) -> Option<u64> {
        self.open.as_ref().map(|o| o.segment)
    }

    /// Whether a closed segment overlapping `[start, end)` (samples) awaits its decision.
    pub fn is_pending(&self, start: u64, end: u64) -> bool {
        self.closed
            .iter()
            .any(|c| overlap((c.start, c.end.max(c.start + 1)), (start, end)) > 0)
    }

    /// Window ids below this are no longer needed (their segment was decided, or they were
    /// let go): the engine may skip them.
    pub fn oldest_needed_window(&self) -> u64 {
        self.windows
            .iter()
            .filter(|w| w.embedding.is_none() && !w.failed)
            .map(|w| w.id)
            .min()
            .unwrap_or(self.next_window)
    }

    /// Appends the session's input audio (16 kHz mono, in order).
    pub fn push_audio(&mut self, samples: &[f32]) {
        self.ring.extend(samples);
        self.total += samples.len() as u64;
        let excess = self.ring.len().saturating_sub(self.keep);
        if excess > 0 {
            self.ring.drain(..excess);
            self.ring_start += excess as u64;
        }
        self.cut_due();
    }

    /// The VAD heard speech start at `start_sample` (may lie in the past).
    pub fn speech_started(&mut self, start_sample: u64) {
        if self.open.is_some() {
            self.speech_stopped(start_sample);
        }
        let start = start_sample.min(self.total);
        self.open = Some(Open {
            segment: self.next_segment,
            start,
            next_cut: start + self.hop,
        });
        self.next_segment += 1;
        self.cut_due();
    }

    /// The VAD ended the speech that started last; its last voiced sample ends at `end_sample`.
    pub fn speech_stopped(&mut self, end_sample: u64) {
        let Some(open) = self.open.take() else {
            return;
        };
        let end = end_sample.min(self.total).max(open.start);
        let span = (open.start, end);
        let mut selected = Vec::new();
        let mut covered = open.start;
        let min_fraction = self.cfg.min_speech_fraction;
        self.windows.retain(|w| {
            if w.segment != open.segment {
                return true;
            }
            let speech = overlap((w.start, w.end), span) as f32;
            let weight = speech / (w.end - w.start).max(1) as f32;
            if weight >= min_fraction {
                selected.push((w.id, weight));
                covered = covered.max(w.end.min(end));
                true
            } else {
                false
            }
        });
        if end - open.start >= self.min_speech && (selected.is_empty() || end - covered >= self.hop)
        {
            let start = open.start.max(end.saturating_sub(self.win));
            if let Some(id) = self.cut(open.segment, start, end) {
                selected.push((id, 1.0));
            }
        }
        self.closed.push(Closed {
            segment: open.segment,
            start: open.start,
            end,
            windows: selected,
        });
        self.decide_ready();
    }

    /// The embedding of job `id` (or why it failed). Unknown and stale ids are ignored.
    pub fn handle_embedding(&mut self, id: u64, embedding: Result<&[f32], ()>) {
        let Some(w) = self.windows.iter_mut().find(|w| w.id == id) else {
            return;
        };
        match embedding {
            Ok(e) => w.embedding = Some(normalised(e)),
            Err(()) => w.failed = true,
        }
        self.decide_ready();
    }

    /// Next window to embed.
    pub fn poll_job(&mut self) -> Option<WindowJob> {
        self.jobs.pop_front()
    }

    /// Next segment decision.
    pub fn poll_label(&mut self) -> Option<SegmentLabel> {
        self.labels.pop_front()
    }

    /// The input clock starts again at 0 (the recogniser took a fresh slot): audio, open and
    /// undecided segments are dropped; the speakers heard so far are kept.
    pub fn reset_audio(&mut self) {
        self.ring.clear();
        self.ring_start = 0;
        self.total = 0;
        self.open = None;
        self.windows.clear();
        self.closed.clear();
        self.jobs.clear();
    }

    fn cut_due(&mut self) {
        while let Some(open) = &self.open {
            if open.next_cut > self.total {
                break;
            }
            let (segment, end) = (open.segment, open.next_cut);
            let start = open.start.max(end.saturating_sub(self.win));
            if let Some(o) = self.open.as_mut() {
                o.next_cut += self.hop;
            }
            self.cut(segment, start, end);
            let mine = self.windows.iter().filter(|w| w.segment == segment).count();
            if mine > self.cfg.max_windows_per_segment
                && let Some(i) = self.windows.iter().position(|w| w.segment == segment)
            {
                self.windows.remove(i);
            }
        }
    }

    /// Queues `[start, end)` for embedding if the audio is still kept.
    fn cut(&mut self, segment: u64, start: u64, end: u64) -> Option<u64> {
        let start = start.max(self.ring_start);
        if end <= start || end > self.total {
            return None;
        }
        let a = (start - self.ring_start) as usize;
        let b = (end - self.ring_start) as usize;
        let id = self.next_window;
        self.next_window += 1;
        self.jobs.push_back(WindowJob {
            id,
            samples: self.ring.range(a..b).copied().collect(),
        });
        self.windows.push(Window {
            id,
            segment,
            start,
            end,
            embedding: None,
            failed: false,
        });
        Some(id)
    }

    fn decide_ready(&mut self) {
        let mut i = 0;
        while i < self.closed.len() {
            let c = &self.closed[i];
            let mut sum: Option<Vec<f32>> = None;
            let mut used = 0;
            let mut unresolved = 0;
            for &(id, weight) in &c.windows {
                match self.windows.iter().find(|w| w.id == id) {
                    Some(Window {
                        embedding: Some(e), ..
                    }) => {
                        used += 1;
                        let s = sum.get_or_insert_with(|| vec![0.0; e.len()]);
                        for (s, x) in s.iter_mut().zip(e) {
                            *s += weight * x;
                        }
                    }
                    Some(Window { failed: false, .. }) => unresolved += 1,
                    _ => {}
                }
            }
            if sum.is_none() && unresolved > 0 {
                i += 1;
                continue;
            }
            let c = self.closed.remove(i);
            let (label, similarity) = match sum {
                Some(s) => self.assign(&normalised(&s)),
                None => (None, None),
            };
            self.windows.retain(|w| w.segment != c.segment);
            self.labels.push_back(SegmentLabel {
                segment: c.segment,
                start_sample: c.start,
                end_sample: c.end,
                label,
                similarity,
                windows: used,
            });
        }
    }

    fn assign(&mut self, e: &[f32]) -> (Option<String>, Option<f32>) {
        let best = self
            .centroids
            .iter()
            .enumerate()
            .map(|(i, c)| (i, cosine(c, e)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let (speaker, similarity) = match best {
            Some((s, sim)) if sim >= self.cfg.threshold => (s, Some(sim)),
            _ => {
                self.centroids.push(vec![0.0; e.len()]);
                (self.centroids.len() - 1, None)
            }
        };
        for (c, x) in self.centroids[speaker].iter_mut().zip(e) {
            *c += x;
        }
        (Some(format!("S{}", speaker + 1)), similarity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = SAMPLE_RATE as u64;

    fn jobs(d: &mut LiveDiarizer) -> Vec<WindowJob> {
        std::iter::from_fn(|| d.poll_job()).collect()
    }

    #[test]
    fn windows_are_cut_while_speaking_and_tail_covered_at_stop() {
        let mut d = LiveDiarizer::new(LiveConfig::default());
        d.push_audio(&vec![0.0; S as usize]);
        // The VAD reports speech from 0.5 s only after 1 s of audio.
        d.speech_started(S / 2);
        assert!(jobs(&mut d).is_empty());
        d.push_audio(&vec![0.1; 2 * S as usize]); // up to 3.0 s
        let lens: Vec<usize> = jobs(&mut d).iter().map(|j| j.samples.len()).collect();
        // Cuts at 1.25 s (0.75 s window), 2.0 s (1.5 s), 2.75 s (1.5 s).
        assert_eq!(lens, vec![12_000, 24_000, 24_000]);
        // Speech ended at 2.6 s: the 2.75 s window is 1.4 of 1.5 s speech; nothing to add.
        d.speech_stopped(2 * S + S * 6 / 10);
        assert!(jobs(&mut d).is_empty());
        assert_eq!(d.pending(), 1);
    }

    #[test]
    fn short_segment_gets_one_exact_window_and_tiny_ones_none() {
        let mut d = LiveDiarizer::new(LiveConfig::default());
        d.push_audio(&vec![0.1; (S / 10) as usize]);
        d.speech_started(S / 10);
        d.push_audio(&vec![0.1; (S * 4 / 10) as usize]);
        d.speech_stopped(S / 2); // 0.4 s: the 0.75 s cut never came
        let j = jobs(&mut d);
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].samples.len(), (S / 2 - S / 10) as usize);
        d.speech_started(S * 6 / 10);
        d.speech_stopped(S * 7 / 10); // 0.1 s
        assert!(jobs(&mut d).is_empty());
        let l = d.poll_label().expect("the tiny segment is decided at once");
        assert_eq!((l.segment, l.label), (1, None));
    }

    /// Speaks `secs` of speech, embedding every job with `e` as soon as it is cut.
    fn segment(d: &mut LiveDiarizer, secs: f32, e: &[f32]) -> SegmentLabel {
        let start = d.clock();
        d.speech_started(start);
        for _ in 0..(secs * 50.0) as usize {
            d.push_audio(&[0.1; 320]);
            for j in jobs(d) {
                d.handle_embedding(j.id, Ok(e));
            }
        }
        let end = d.clock();
        // The endpointing silence, then the stop.
        d.push_audio(&vec![0.0; 8000]);
        for j in jobs(d) {
            d.handle_embedding(j.id, Ok(e));
        }
        d.speech_stopped(end);
        for j in jobs(d) {
            d.handle_embedding(j.id, Ok(e));
        }
        d.poll_label().expect("decided")
    }

    #[test]
    fn speakers_get_stable_labels() {
        let mut d = LiveDiarizer::new(LiveConfig::default());
        let a = [1.0, 0.1, 0.0];
        let b = [0.1, 1.0, 0.1];
        let labels: Vec<String> = [(2.0, a), (1.2, b), (3.5, a), (0.6, b), (0.8, a)]
            .iter()
            .map(|(s, e)| segment(&mut d, *s, e).label.expect("labelled"))
            .collect();
        assert_eq!(labels, ["S1", "S2", "S1", "S2", "S1"]);
        assert_eq!(d.num_speakers(), 2);
        // A reset of the audio clock keeps the speakers.
        d.reset_audio();
        assert_eq!(segment(&mut d, 1.0, &b).label.as_deref(), Some("S2"));
    }

    #[test]
    fn decision_waits_for_the_first_embedding_only() {
        let mut d = LiveDiarizer::new(LiveConfig::default());
        d.speech_started(0);
        d.push_audio(&vec![0.1; 2 * S as usize]);
        d.speech_stopped(2 * S);
        let j = jobs(&mut d);
        // Cuts at 0.75 s and 1.5 s; the last 0.5 s is under a hop, so no tail window.
        assert_eq!(j.len(), 2);
        assert!(d.poll_label().is_none());
        assert_eq!(d.oldest_needed_window(), 0);
        d.handle_embedding(j[0].id, Err(()));
        assert!(d.poll_label().is_none(), "one failed, one still out");
        d.handle_embedding(j[1].id, Ok(&[0.0, 1.0]));
        let l = d.poll_label().expect("decided on the first embedding");
        assert_eq!((l.label.as_deref(), l.windows), (Some("S1"), 1));
        assert_eq!(d.pending(), 0);
        assert_eq!(d.oldest_needed_window(), 2, "nothing outstanding is needed");
        // A segment whose every window failed has no label.
        d.speech_started(2 * S);
        d.push_audio(&vec![0.1; S as usize]);
        d.speech_stopped(3 * S);
        for j in jobs(&mut d) {
            d.handle_embedding(j.id, Err(()));
        }
        assert_eq!(d.poll_label().expect("decided").label, None);
    }
}
