//! The Rust fbank against values from an independent numpy implementation
//! (`kernels/testdata/make_fbank_ref.py`, float64) on 0.5 s of LibriVox speech.

use antiphon_kernels::fbank::{Fbank, FbankConfig};

/// Log-energy tolerance. Rust works in f32; the reference in f64. Absolute error in a log
/// is relative error in the energy (measured worst: 9e-5), so 5e-4 means 0.05 % of each mel energy.
const TOLERANCE: f32 = 5e-4;

#[test]
fn matches_the_numpy_reference_on_real_speech() {
    let text = include_str!("../testdata/fbank_ref.json");
    let reference: serde_json::Value = serde_json::from_str(text).expect("reference JSON");
    let samples: Vec<f32> = reference["samples_i16"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|v| v.as_i64().expect("int sample") as f32 / 32768.0)
        .collect();
    let expected: Vec<Vec<f32>> = reference["fbank"]
        .as_array()
        .expect("fbank rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_f64().expect("value") as f32)
                .collect()
        })
        .collect();
    let mut fbank = Fbank::new(FbankConfig::default()).expect("default config");
    let feats = fbank.compute(&samples);
    assert_eq!(feats.len() / 80, expected.len(), "frame count");
    let mut worst = 0.0f32;
    for (row, exp) in feats.chunks_exact(80).zip(&expected) {
        for (got, want) in row.iter().zip(exp) {
            worst = worst.max((got - want).abs());
        }
    }
    eprintln!(
        "max |rust - numpy| over {} frames: {worst:.2e}",
        expected.len()
    );
    assert!(worst <= TOLERANCE, "max abs log-energy error {worst}");
}
