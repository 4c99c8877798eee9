//! Speaker-embedding cost: fbank of a 1.5 s window, and CAM++ on one window and on a batch of
//! eight (a slot table's step). Real weights and a real LibriVox clip from the model store.
//! `CANDLE_NUM_THREADS=1 cargo bench -p antiphon-models --bench diar`

use antiphon_kernels::fbank::{Fbank, FbankConfig};
use antiphon_models::diar::SpeakerEmbedder;
use antiphon_models::store::ModelStore;
use criterion::{Criterion, criterion_group, criterion_main};

fn clip() -> Vec<f32> {
    let store = ModelStore::from_env().expect("store");
    let path = store
        .file(
            "librivox-clips",
            "sense_and_sensibility_01_austen_64kb-0870.wav",
        )
        .expect("LibriVox clip in the store");
    let mut r = hound::WavReader::open(path).expect("wav");
    r.samples::<i16>()
        .map(|s| s.expect("sample") as f32 / 32768.0)
        .collect()
}

fn bench(c: &mut Criterion) {
    let audio = clip();
    let window = &audio[16_000..16_000 + 24_000];
    let mut fbank = Fbank::new(FbankConfig::default()).expect("config");
    c.bench_function("fbank 1.5 s", |b| b.iter(|| fbank.compute(window)));
    let mut emb = SpeakerEmbedder::load(&ModelStore::from_env().expect("store")).expect("CAM++");
    c.bench_function("campplus 1.5 s x1", |b| {
        b.iter(|| emb.embed(&[window]).expect("embed"))
    });
    let batch: Vec<&[f32]> = (0..8)
        .map(|i| &audio[i * 8000..i * 8000 + 24_000])
        .collect();
    c.bench_function("campplus 1.5 s x8", |b| {
        b.iter(|| emb.embed(&batch).expect("embed"))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
