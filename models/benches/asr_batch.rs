//! Batching throughput of Moonshine: the LibriVox clips decoded one at a time, in the
//! engine's length groups, and as one padded batch; then 1 vs 8 copies of one utterance.
//! `cargo bench -p antiphon-models --bench asr_batch` (prints medians of REPS runs).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use antiphon_models::asr::wer::WerTally;
use antiphon_models::asr::{DecodeRow, Moonshine};
use antiphon_models::store::ModelStore;

const REPS: usize = 3;

fn clips() -> Vec<(Vec<f32>, String)> {
    let dir: PathBuf = ModelStore::from_env()
        .expect("store")
        .model_dir("librivox-clips");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("librivox-clips in the store")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let mut r = hound::WavReader::open(p).expect("wav");
            let audio = r
                .samples::<i16>()
                .map(|s| f32::from(s.expect("sample")) / 32768.0)
                .collect();
            let text = std::fs::read_to_string(p.with_extension("txt")).expect("txt");
            (audio, text)
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Decodes `groups` (indices into `clips`), returning wall time and WER.
fn run(
    asr: &mut Moonshine,
    clips: &[(Vec<f32>, String)],
    groups: &[Vec<usize>],
) -> (Duration, f64) {
    let mut tally = WerTally::default();
    let started = Instant::now();
    for group in groups {
        let rows: Vec<DecodeRow<'_>> = group
            .iter()
            .map(|&i| DecodeRow {
                audio: &clips[i].0,
                forced: &[],
            })
            .collect();
        let (tokens, _) = asr.transcribe(&rows).expect("decode");
        for (&i, t) in group.iter().zip(tokens) {
            tally.add(&clips[i].1, &asr.detokenize(&t).expect("text"));
        }
    }
    (started.elapsed(), tally.wer())
}

fn main() {
    let threads: usize = std::env::var("ASR_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let mut asr =
        Moonshine::load(&ModelStore::from_env().expect("store"), threads).expect("moonshine");
    let clips = clips();
    let audio_secs: f64 = clips.iter().map(|c| c.0.len() as f64 / 16_000.0).sum();
    let mut by_len: Vec<usize> = (0..clips.len()).collect();
    by_len.sort_by_key(|&i| clips[i].0.len());
    // The engine's grouping: lengths within 1 s of the group's shortest.
    let mut grouped: Vec<Vec<usize>> = Vec::new();
    for &i in &by_len {
        match grouped.last_mut() {
            Some(g) if clips[i].0.len() <= clips[g[0]].0.len() + 16_000 => g.push(i),
            _ => grouped.push(vec![i]),
        }
    }
    let modes: [(&str, Vec<Vec<usize>>); 3] = [
        ("one at a time", by_len.iter().map(|&i| vec![i]).collect()),
        ("length groups", grouped),
        ("one padded batch", vec![by_len.clone()]),
    ];
    run(&mut asr, &clips, &modes[0].1); // warm-up
    println!(
        "{} clips, {audio_secs:.1} s of audio, {threads} threads",
        clips.len()
    );
    for (name, groups) in &modes {
        let mut times = Vec::new();
        let mut wer = 0.0;
        for _ in 0..REPS {
            let (t, w) = run(&mut asr, &clips, groups);
            times.push(t);
            wer = w;
        }
        let t = median(times);
        println!(
            "{name:>17}: {} batches, median {:>6.0} ms, {:.2} utterances/s, RTF {:.3}, WER {:.1}%",
            groups.len(),
            t.as_secs_f64() * 1000.0,
            clips.len() as f64 / t.as_secs_f64(),
            t.as_secs_f64() / audio_secs,
            wer * 100.0
        );
    }
    // Same utterance, batch 1 vs 8.
    let i = by_len[by_len.len() / 2];
    for batch in [1usize, 2, 4, 8] {
        let groups = vec![vec![i; batch]];
        let t = median(
            (0..REPS)
                .map(|_| run(&mut asr, &clips, &groups).0)
                .collect(),
        );
        println!(
            "batch {batch}: median {:>6.0} ms for {batch} x {:.1} s = {:.2} utterances/s",
            t.as_secs_f64() * 1000.0,
            clips[i].0.len() as f64 / 16_000.0,
            batch as f64 / t.as_secs_f64()
        );
    }
}
