//! Throughput of the per-frame audio work. Each benchmark processes one 20 ms frame, so
//! "x real time per core" = 20 ms / median time per iteration.
//!
//! Measurement windows are short on purpose: other builds share this 2-core machine.

use std::hint::black_box;
use std::time::{Duration, Instant};

use antiphon_audio::g711::Law;
use antiphon_audio::opus_codec::{FRAME_SAMPLES, OpusDecoder, OpusEncoder, OpusEncoderConfig};
use antiphon_audio::resample::StreamResampler;
use antiphon_audio::ring;
use criterion::{Criterion, criterion_group, criterion_main};

/// A 20 ms frame of a voiced, speech-like signal at `rate`.
fn speech_frame(rate: u32, frame_index: usize) -> Vec<f32> {
    let n = rate as usize / 50;
    (0..n)
        .map(|i| {
            let t = (frame_index * n + i) as f32 / rate as f32;
            let f0 = 180.0;
            (1..=8)
                .map(|h| (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() / h as f32)
                .sum::<f32>()
                * 0.2
        })
        .collect()
}

fn g711(c: &mut Criterion) {
    let frame = speech_frame(8000, 0);
    for law in [Law::Mu, Law::A] {
        let mut codes = Vec::with_capacity(160);
        c.bench_function(&format!("g711 {law:?}-law encode 20 ms @ 8 kHz"), |b| {
            b.iter(|| {
                codes.clear();
                law.encode(black_box(&frame), &mut codes);
            })
        });
        let mut decoded = Vec::with_capacity(160);
        c.bench_function(&format!("g711 {law:?}-law decode 20 ms @ 8 kHz"), |b| {
            b.iter(|| {
                decoded.clear();
                law.decode(black_box(&codes), &mut decoded);
            })
        });
    }
}

fn opus(c: &mut Criterion) {
    let frames: Vec<Vec<f32>> = (0..50).map(|i| speech_frame(48_000, i)).collect();
    let mut enc = OpusEncoder::new(OpusEncoderConfig::default()).expect("encoder");
    let packets: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| enc.encode(f).expect("encode"))
        .collect();
    let mut i = 0;
    c.bench_function("opus encode 20 ms @ 48 kHz (32 kb/s, FEC on)", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(enc.encode_into(&frames[i]).expect("encode"));
        })
    });
    let mut dec = OpusDecoder::new().expect("decoder");
    let mut out = Vec::with_capacity(FRAME_SAMPLES * 6);
    let mut j = 0;
    c.bench_function("opus decode 20 ms @ 48 kHz", |b| {
        b.iter(|| {
            j = (j + 1) % packets.len();
            out.clear();
            black_box(dec.decode(&packets[j], &mut out).expect("decode"));
        })
    });
    c.bench_function("opus PLC 20 ms @ 48 kHz", |b| {
        b.iter(|| {
            out.clear();
            black_box(dec.conceal(&mut out).expect("plc"));
        })
    });
}

fn resample(c: &mut Criterion) {
    for (from, to) in [
        (48_000, 16_000),
        (8_000, 16_000),
        (22_050, 48_000),
        (16_000, 48_000),
    ] {
        let mut r = StreamResampler::new(from, to).expect("resampler");
        let frame = speech_frame(from, 0);
        let mut out = Vec::with_capacity(to as usize / 10);
        c.bench_function(&format!("resample 20 ms {from} -> {to}"), |b| {
            b.iter(|| {
                out.clear();
                black_box(r.process(black_box(&frame), &mut out).expect("resample"));
            })
        });
    }
}

fn ring_buffer(c: &mut Criterion) {
    let origin = Instant::now();
    let frame = speech_frame(16_000, 0);
    let mut buf = vec![0.0f32; frame.len()];
    let (mut tx, mut rx) = ring::channel(16_000, origin).expect("ring");
    c.bench_function("ring push+pop 20 ms @ 16 kHz (drop-oldest ring)", |b| {
        b.iter(|| {
            tx.push(black_box(&frame), origin);
            black_box(rx.pop(&mut buf));
        })
    });
    // Baseline: ringbuf's SPSC ring (drop-newest only).
    use ringbuf::traits::{Consumer, Producer, Split};
    let (mut p, mut q) = ringbuf::HeapRb::<f32>::new(16_000).split();
    c.bench_function(
        "ring push+pop 20 ms @ 16 kHz (ringbuf HeapRb baseline)",
        |b| {
            b.iter(|| {
                p.push_slice(black_box(&frame));
                black_box(q.pop_slice(&mut buf));
            })
        },
    );
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = g711, opus, resample, ring_buffer
}
criterion_main!(benches);
