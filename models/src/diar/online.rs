//! Online speaker diarization core (sans-IO): 10 ms frames with a speech decision go in, jobs
//! ("embed these samples") come out, embeddings go back in, and speaker labels `S1`, `S2`, ...
//! come out, stable for the session.
//!
//! - Windows (1.5 s, hop 0.75 s) are cut inside speech regions only, so a window never spans a
//!   pause; a region too short for a full window gets one window of its own length.
//! - Clustering is speaker-count free: a window joins the most similar centroid when the cosine
//!   similarity reaches `threshold`, or starts a new speaker. Centroids are sums of
//!   length-normalised embeddings, updated as windows arrive.
//! - Re-labelling is bounded: after each new window, windows that ended within
//!   `relabel_horizon_s` of it may move to a better centroid; older windows are final.
//! - Each frame takes the label of the covering window whose centre is nearest.

use std::collections::VecDeque;

use super::speech::FRAME_SAMPLES;

/// 10 ms frames per second.
const FRAMES_PER_S: f32 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnlineConfig {
    pub window_s: f32,
    pub hop_s: f32,
    /// Regions shorter than this get no window of their own.
    pub min_window_s: f32,
    /// Cosine similarity needed to join an existing speaker.
    pub threshold: f32,
    /// How long after a window ends its label may still change.
    pub relabel_horizon_s: f32,
}

impl Default for OnlineConfig {
    fn default() -> Self {
        Self {
            window_s: 1.5,
            hop_s: 0.75,
            min_window_s: 0.5,
            threshold: 0.5,
            relabel_horizon_s: 3.0,
        }
    }
}

/// Audio the caller must embed and hand back with [`OnlineDiarizer::handle_embedding`].
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedJob {
    pub id: usize,
    pub start_frame: u64,
    pub end_frame: u64,
    pub samples: Vec<f32>,
}

/// A window's label was set (first time) or changed (within the horizon).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelChange {
    pub window: usize,
    pub start_s: f32,
    pub end_s: f32,
    pub label: String,
    /// The window had a different label before.
    pub relabelled: bool,
}

/// One labelled stretch of speech.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start_s: f32,
    pub end_s: f32,
    pub label: String,
}

#[derive(Debug)]
struct Window {
    start: u64,
    end: u64,
    speaker: Option<usize>,
    embedding: Vec<f32>,
}

#[derive(Debug, Clone)]
struct Region {
    start: u64,
    end: Option<u64>,
}

#[derive(Debug)]
pub struct OnlineDiarizer {
    cfg: OnlineConfig,
    win: u64,
    hop: u64,
    min_win: u64,
    horizon: u64,
    frame: u64,
    /// Audio of the current region's last `win` frames.
    recent: VecDeque<f32>,
    regions: Vec<Region>,
    last_window_end: Option<u64>,
    windows: Vec<Window>,
    centroids: Vec<Vec<f32>>,
    jobs: VecDeque<EmbedJob>,
    changes: VecDeque<LabelChange>,
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n == 0.0 {
        v.to_vec()
    } else {
        v.iter().map(|x| x / n).collect()
    }
}

fn frames(seconds: f32) -> u64 {
    (seconds * FRAMES_PER_S).round().max(1.0) as u64
}

impl OnlineDiarizer {
    pub fn new(cfg: OnlineConfig) -> Self {
        Self {
            win: frames(cfg.window_s),
            hop: frames(cfg.hop_s),
            min_win: frames(cfg.min_window_s),
            horizon: (cfg.relabel_horizon_s * FRAMES_PER_S).round().max(0.0) as u64,
            cfg,
            frame: 0,
            recent: VecDeque::new(),
            regions: Vec::new(),
            last_window_end: None,
            windows: Vec::new(),
            centroids: Vec::new(),
            jobs: VecDeque::new(),
            changes: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &OnlineConfig {
        &self.cfg
    }

    /// Speakers that currently hold at least one window (a speaker whose windows all moved
    /// to others keeps its label number; it is never reused).
    pub fn num_speakers(&self) -> usize {
        let mut used = vec![false; self.centroids.len()];
        for s in self.windows.iter().filter_map(|w| w.speaker) {
            used[s] = true;
        }
        used.into_iter().filter(|&u| u).count()
    }

    /// One 10 ms frame (160 samples at 16 kHz; a shorter last frame is fine) and whether it
    /// is speech.
    pub fn push_frame(&mut self, samples: &[f32], speech: bool) {
        let in_region = self.regions.last().is_some_and(|r| r.end.is_none());
        match (speech, in_region) {
            (true, false) => {
                self.regions.push(Region {
                    start: self.frame,
                    end: None,
                });
                self.recent.clear();
                self.last_window_end = None;
            }
            (false, true) => self.close_region(),
            _ => {}
        }
        if speech {
            self.recent.extend(samples.iter().take(FRAME_SAMPLES));
            let cap = self.win as usize * FRAME_SAMPLES;
            while self.recent.len() > cap {
                self.recent.pop_front();
            }
        }
        self.frame += 1;
        if speech {
            let start = self.regions.last().map_or(0, |r| r.start);
            let due = self
                .last_window_end
                .is_none_or(|e| self.frame - e >= self.hop);
            if self.frame - start >= self.win && due {
                self.cut_window(self.frame - self.win);
            }
        }
    }

    /// Ends the stream: closes an open speech region.
    pub fn finish(&mut self) {
        if self.regions.last().is_some_and(|r| r.end.is_none()) {
            self.close_region();
        }
    }

    fn close_region(&mut self) {
        let Some(region) = self.regions.last_mut() else {
            return;
        };
        region.end = Some(self.frame);
        let start = region.start;
        let len = self.frame - start;
        match self.last_window_end {
            None if len >= self.min_win => self.cut_window(start),
            // Cover a tail the hop left out with one last full window.
            Some(e) if self.frame - e >= self.hop / 2 && len >= self.win => {
                self.cut_window(self.frame - self.win)
            }
            _ => {}
        }
    }

    /// Queues the frames `[start, self.frame)` of the current region as a job.
    fn cut_window(&mut self, start: u64) {
        let n = (self.frame - start) as usize * FRAME_SAMPLES;
        let have = self.recent.len();
        let samples: Vec<f32> = self
            .recent
            .iter()
            .skip(have.saturating_sub(n))
            .copied()
            .collect();
        let id = self.windows.len();
        self.windows.push(Window {
            start,
            end: self.frame,
            speaker: None,
            embedding: Vec::new(),
        });
        self.last_window_end = Some(self.frame);
        self.jobs.push_back(EmbedJob {
            id,
            start_frame: start,
            end_frame: self.frame,
            samples,
        });
    }

    /// Next window to embed.
    pub fn poll_job(&mut self) -> Option<EmbedJob> {
        self.jobs.pop_front()
    }

    /// Next label decision.
    pub fn poll_change(&mut self) -> Option<LabelChange> {
        self.changes.pop_front()
    }

    fn best(&self, e: &[f32]) -> Option<(usize, f32)> {
        self.centroids
            .iter()
            .enumerate()
            .map(|(i, c)| (i, super::cosine(c, e)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    fn add(&mut self, speaker: usize, e: &[f32], sign: f32) {
        for (c, x) in self.centroids[speaker].iter_mut().zip(e) {
            *c += sign * x;
        }
    }

    fn emit(&mut self, window: usize, relabelled: bool) {
        let w = &self.windows[window];
        if let Some(s) = w.speaker {
            self.changes.push_back(LabelChange {
                window,
                start_s: w.start as f32 / FRAMES_PER_S,
                end_s: w.end as f32 / FRAMES_PER_S,
                label: label(s),
                relabelled,
            });
        }
    }

    /// The embedding for job `id`. Unknown ids (e.g. from before a reset) are ignored.
    pub fn handle_embedding(&mut self, id: usize, embedding: &[f32]) {
        let Some(w) = self.windows.get(id) else {
            return;
        };
        if w.speaker.is_some() {
            return;
        }
        let e = normalised(embedding);
        let speaker = match self.best(&e) {
            Some((s, sim)) if sim >= self.cfg.threshold => s,
            _ => {
                self.centroids.push(vec![0.0; e.len()]);
                self.centroids.len() - 1
            }
        };
        self.add(speaker, &e, 1.0);
        let end = self.windows[id].end;
        self.windows[id].speaker = Some(speaker);
        self.windows[id].embedding = e;
        self.emit(id, false);
        // Bounded re-labelling of recent windows against the updated centroids.
        for j in 0..self.windows.len() {
            let w = &self.windows[j];
            let (Some(old), true) = (w.speaker, w.end + self.horizon >= end && j != id) else {
                continue;
            };
            let e = w.embedding.clone();
            // Compare with the own speaker minus this window (leave-one-out), so a window is
            // not held by its own weight in the centroid.
            let own: Vec<f32> = self.centroids[old]
                .iter()
                .zip(&e)
                .map(|(c, x)| c - x)
                .collect();
            let own_sim = super::cosine(&own, &e);
            let candidate = self
                .centroids
                .iter()
                .enumerate()
                .filter(|(s, _)| *s != old)
                .map(|(s, c)| (s, super::cosine(c, &e)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((s, sim)) = candidate
                && sim >= self.cfg.threshold
                && sim > own_sim
            {
                self.add(old, &e, -1.0);
                self.add(s, &e, 1.0);
                self.windows[j].speaker = Some(s);
                self.emit(j, true);
            }
        }
    }

    /// The labelled timeline so far (frames of each region labelled by the nearest-centred
    /// covering window, or the nearest window of the region; adjacent equal labels merged).
    pub fn segments(&self) -> Vec<Segment> {
        let mut out: Vec<Segment> = Vec::new();
        let mut first_window = 0;
        for region in &self.regions {
            let end = region.end.unwrap_or(self.frame);
            while first_window < self.windows.len()
                && self.windows[first_window].end <= region.start
            {
                first_window += 1;
            }
            let inside: Vec<&Window> = self.windows[first_window..]
                .iter()
                .take_while(|w| w.start < end)
                .filter(|w| w.speaker.is_some())
                .collect();
            if inside.is_empty() {
                continue;
            }
            for f in region.start..end {
                let centre = |w: &Window| ((w.start + w.end) as i64 - 2 * f as i64 - 1).abs();
                let covering = inside
                    .iter()
                    .filter(|w| w.start <= f && f < w.end)
                    .min_by_key(|w| centre(w));
                let w = covering.or_else(|| inside.iter().min_by_key(|w| centre(w)));
                // Invariant: `inside` is non-empty and holds only labelled windows.
                let s = label(w.and_then(|w| w.speaker).unwrap_or_default());
                let (t0, t1) = (f as f32 / FRAMES_PER_S, (f + 1) as f32 / FRAMES_PER_S);
                match out.last_mut() {
                    Some(last) if last.label == s && (last.end_s - t0).abs() < 1e-4 => {
                        last.end_s = t1
                    }
                    _ => out.push(Segment {
                        start_s: t0,
                        end_s: t1,
                        label: s,
                    }),
                }
            }
        }
        out
    }
}

fn label(speaker: usize) -> String {
    format!("S{}", speaker + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(d: &mut OnlineDiarizer, speech: &[(usize, bool)]) -> Vec<EmbedJob> {
        for &(n, s) in speech {
            for _ in 0..n {
                d.push_frame(&[0.0; FRAME_SAMPLES], s);
            }
        }
        d.finish();
        std::iter::from_fn(|| d.poll_job()).collect()
    }

    #[test]
    fn windows_stay_inside_speech_regions() {
        let mut d = OnlineDiarizer::new(OnlineConfig::default());
        let jobs = run(
            &mut d,
            &[
                (50, false),
                (300, true),
                (40, false),
                (30, true),
                (60, false),
                (70, true),
            ],
        );
        let spans: Vec<(u64, u64)> = jobs.iter().map(|j| (j.start_frame, j.end_frame)).collect();
        // 3 s region: windows ending at 1.5 s, 2.25 s, 3.0 s; 0.3 s region: none; 0.7 s: one.
        assert_eq!(spans, vec![(50, 200), (125, 275), (200, 350), (480, 550)]);
        assert!(
            jobs.iter()
                .all(|j| j.samples.len() == (j.end_frame - j.start_frame) as usize * FRAME_SAMPLES)
        );
    }

    #[test]
    fn clustering_separates_speakers_and_labels_are_stable() {
        let mut d = OnlineDiarizer::new(OnlineConfig::default());
        let jobs = run(
            &mut d,
            &[
                (300, true),
                (20, false),
                (300, true),
                (20, false),
                (300, true),
            ],
        );
        // Synthetic embeddings: regions 1 and 3 from one direction, region 2 from another.
        for j in &jobs {
            let e = if (320..620).contains(&j.start_frame) {
                [0.1, 1.0, 0.0]
            } else {
                [1.0, 0.1, 0.05]
            };
            d.handle_embedding(j.id, &e);
        }
        let labels: Vec<String> = d.segments().iter().map(|s| s.label.clone()).collect();
        assert_eq!(labels, vec!["S1", "S2", "S1"]);
        assert_eq!(d.num_speakers(), 2);
    }

    /// Four windows: the second first joins S1; once the third starts S2 (ending 0.75 s after
    /// the second), the second is closer to S2 than to the rest of S1.
    fn relabels(horizon_s: f32) -> Vec<LabelChange> {
        let cfg = OnlineConfig {
            relabel_horizon_s: horizon_s,
            ..OnlineConfig::default()
        };
        let mut d = OnlineDiarizer::new(cfg);
        let jobs = run(&mut d, &[(375, true)]);
        assert_eq!(jobs.len(), 4);
        let embeddings = [[1.0, 0.0], [0.6, 0.8], [-0.2, 1.0], [0.0, 1.0]];
        for (j, e) in jobs.iter().zip(embeddings) {
            d.handle_embedding(j.id, &e);
        }
        std::iter::from_fn(|| d.poll_change())
            .filter(|c| c.relabelled)
            .collect()
    }

    #[test]
    fn relabelling_happens_only_within_the_horizon() {
        // Window 1 ends at 2.25 s, window 2 at 3.0 s.
        let moved = relabels(1.0);
        assert_eq!(moved.len(), 1);
        assert_eq!((moved[0].window, moved[0].label.as_str()), (1, "S2"));
        assert!(relabels(0.5).is_empty());
    }
}
