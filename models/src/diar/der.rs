//! Diarization error rate with an optimal speaker mapping, scored on a 10 ms grid.
//!
//! DER = (missed speech + false alarm + speaker confusion) / scored reference speech. Frames
//! within `collar_s` of a reference segment boundary are not scored (the usual 0.25 s collar).
//! Reference and hypothesis labels are mapped one-to-one to maximise matched time (exact, by
//! dynamic programming over subsets of reference speakers).

use std::collections::BTreeMap;

const STEP_S: f64 = 0.01;

/// A labelled time span in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub start_s: f64,
    pub end_s: f64,
    pub speaker: String,
}

impl Turn {
    pub fn new(start_s: f64, end_s: f64, speaker: &str) -> Self {
        Self {
            start_s,
            end_s,
            speaker: speaker.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DerReport {
    pub scored_s: f64,
    pub missed_s: f64,
    pub false_alarm_s: f64,
    pub confusion_s: f64,
}

impl DerReport {
    pub fn der(&self) -> f64 {
        if self.scored_s == 0.0 {
            0.0
        } else {
            (self.missed_s + self.false_alarm_s + self.confusion_s) / self.scored_s
        }
    }
}

fn index_speakers(turns: &[Turn]) -> BTreeMap<String, usize> {
    let mut map = BTreeMap::new();
    for t in turns {
        let n = map.len();
        map.entry(t.speaker.clone()).or_insert(n);
    }
    map
}

/// Speaker sets per 10 ms frame.
fn grid(turns: &[Turn], ids: &BTreeMap<String, usize>, frames: usize) -> Vec<Vec<usize>> {
    let mut g = vec![Vec::new(); frames];
    for t in turns {
        let a = (t.start_s / STEP_S).round().max(0.0) as usize;
        let b = ((t.end_s / STEP_S).round() as usize).min(frames);
        for cell in g.iter_mut().take(b).skip(a) {
            let id = ids[&t.speaker];
            if !cell.contains(&id) {
                cell.push(id);
            }
        }
    }
    g
}

/// Best one-to-one mapping total: `overlap[h][r]` frames; DP over subsets of reference speakers.
fn best_mapping(overlap: &[Vec<usize>], n_ref: usize) -> usize {
    // The table has 2^n_ref entries: past 16 reference speakers, the later ones stay unmapped
    // and their time counts as confusion (DER is overstated, never understated).
    let n_ref = n_ref.min(16);
    let mut dp = vec![0usize; 1 << n_ref];
    for row in overlap {
        let prev = dp.clone();
        for (mask, &base) in prev.iter().enumerate() {
            for (r, &o) in row.iter().enumerate().take(n_ref) {
                if mask & (1 << r) == 0 {
                    let m = mask | (1 << r);
                    dp[m] = dp[m].max(base + o);
                }
            }
        }
    }
    dp.into_iter().max().unwrap_or(0)
}

pub fn der(reference: &[Turn], hypothesis: &[Turn], collar_s: f64) -> DerReport {
    let end = reference
        .iter()
        .chain(hypothesis)
        .map(|t| t.end_s)
        .fold(0.0, f64::max);
    let frames = (end / STEP_S).ceil() as usize + 1;
    let rid = index_speakers(reference);
    let hid = index_speakers(hypothesis);
    let r = grid(reference, &rid, frames);
    let h = grid(hypothesis, &hid, frames);
    let mut scored = vec![true; frames];
    let c = (collar_s / STEP_S).round() as i64;
    for t in reference {
        for edge in [t.start_s, t.end_s] {
            let e = (edge / STEP_S).round() as i64;
            for f in (e - c).max(0)..(e + c).min(frames as i64) {
                scored[f as usize] = false;
            }
        }
    }
    let mut overlap = vec![vec![0usize; rid.len()]; hid.len()];
    let (mut total, mut miss, mut fa, mut matched_max) = (0usize, 0usize, 0usize, 0usize);
    for f in (0..frames).filter(|&f| scored[f]) {
        total += r[f].len();
        miss += r[f].len().saturating_sub(h[f].len());
        fa += h[f].len().saturating_sub(r[f].len());
        matched_max += r[f].len().min(h[f].len());
        for &hs in &h[f] {
            for &rs in &r[f] {
                overlap[hs][rs] += 1;
            }
        }
    }
    let matched = best_mapping(&overlap, rid.len());
    DerReport {
        scored_s: total as f64 * STEP_S,
        missed_s: miss as f64 * STEP_S,
        false_alarm_s: fa as f64 * STEP_S,
        confusion_s: matched_max.saturating_sub(matched) as f64 * STEP_S,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn renamed_labels_score_zero() {
        let reference = [
            Turn::new(0.0, 2.0, "a"),
            Turn::new(2.5, 4.0, "b"),
            Turn::new(4.0, 6.0, "a"),
        ];
        let hyp = [
            Turn::new(0.0, 2.0, "S2"),
            Turn::new(2.5, 4.0, "S1"),
            Turn::new(4.0, 6.0, "S2"),
        ];
        assert!(close(der(&reference, &hyp, 0.0).der(), 0.0));
    }

    #[test]
    fn miss_false_alarm_and_confusion_are_counted() {
        let reference = [Turn::new(0.0, 4.0, "a"), Turn::new(4.0, 8.0, "b")];
        // One label for everything: b's 4 s are confused; nothing missed.
        let one = der(&reference, &[Turn::new(0.0, 8.0, "S1")], 0.0);
        assert!(
            close(one.confusion_s, 4.0) && close(one.missed_s, 0.0),
            "{one:?}"
        );
        assert!(close(one.der(), 0.5));
        // Nothing said: all missed.
        assert!(close(der(&reference, &[], 0.0).der(), 1.0));
        // Speech where there was none: 2 s false alarm over 8 s.
        let extra = [
            Turn::new(0.0, 4.0, "x"),
            Turn::new(4.0, 8.0, "y"),
            Turn::new(8.0, 10.0, "y"),
        ];
        let r = der(&reference, &extra, 0.0);
        assert!(close(r.false_alarm_s, 2.0) && close(r.der(), 0.25), "{r:?}");
    }

    #[test]
    fn the_collar_forgives_boundary_errors() {
        let reference = [Turn::new(0.0, 4.0, "a"), Turn::new(4.0, 8.0, "b")];
        let hyp = [Turn::new(0.0, 4.2, "S1"), Turn::new(4.2, 8.0, "S2")];
        assert!(der(&reference, &hyp, 0.0).der() > 0.02);
        let r = der(&reference, &hyp, 0.25);
        assert!(close(r.der(), 0.0), "{r:?}");
        // Collars remove 0.25 s either side of 0, 4 and 8 s: 8 - 0.25 - 0.5 - 0.25 = 7 s.
        assert!(close(r.scored_s, 7.0), "{r:?}");
    }

    #[test]
    fn the_mapping_is_optimal_not_greedy() {
        // Greedy by first hypothesis label would map S1 -> a (3 s) and lose S2 -> a (4 s).
        let reference = [Turn::new(0.0, 4.0, "a"), Turn::new(4.0, 7.0, "b")];
        let hyp = [Turn::new(0.0, 4.0, "S2"), Turn::new(4.0, 7.0, "S1")];
        assert!(close(der(&reference, &hyp, 0.0).der(), 0.0));
        let three = [
            Turn::new(0.0, 1.0, "S1"),
            Turn::new(1.0, 4.0, "S2"),
            Turn::new(4.0, 7.0, "S1"),
        ];
        let r = der(&reference, &three, 0.0);
        assert!(close(r.confusion_s, 1.0), "{r:?}");
    }
}
