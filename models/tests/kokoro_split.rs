//! Kokoro cut at its predicted durations (`kokoro::split_at_durations`): the two halves must
//! compute exactly what the whole pinned model computes, and capping the non-speech frames must
//! shorten the audio by exactly those frames. Needs the store's `kokoro-82m` and
//! `kokoro-voices` files.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test: a failed unwrap is a failed test"
)]

use std::collections::HashMap;

use antiphon_models::onnx;
use antiphon_models::store::ModelStore;
use antiphon_models::tts::kokoro::{
    self, AUDIO, DURATIONS, KOKORO_MODEL, KOKORO_ONNX, KOKORO_VOCAB, KOKORO_VOICES_MODEL, Kokoro,
    SPEED, STYLE, TOKENS,
};
use antiphon_models::tts::kokoro_timing::{FRAME_SAMPLES, FrameLimits};
use antiphon_models::tts::{SpeechModel, Urgency};
use ort::session::Session;
use ort::value::Tensor;

/// "Sure," and a clause without final punctuation, in misaki phonemes.
const PHRASES: [&str; 2] = ["ʃˈʊɹ,", "ðə ɹˈɛstəɹˌɑnt ˌɑn mˈAn"];

struct Fixture {
    whole: Session,
    front: Session,
    back: Session,
    vocab: HashMap<char, i64>,
    style: Vec<f32>,
}

fn fixture() -> Fixture {
    let store = ModelStore::from_env().expect("store");
    let env = onnx::environment(&store).expect("onnxruntime");
    let path = store.file(KOKORO_MODEL, KOKORO_ONNX).expect("kokoro model");
    let bytes = std::fs::read(&path).expect("read model");
    let (front, back) = kokoro::split_at_durations(&bytes).expect("the pinned export splits");
    // One thread: the comparison is bit for bit.
    let whole = onnx::session(&env, &path, 1).expect("whole model");
    let front = onnx::session_from_memory(&env, "front", &front, 1).expect("front half");
    let back = onnx::session_from_memory(&env, "back", &back, 1).expect("back half");
    let text = std::fs::read_to_string(store.file(KOKORO_MODEL, KOKORO_VOCAB).unwrap()).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vocab = json["vocab"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.chars().count() == 1)
        .map(|(k, v)| (k.chars().next().unwrap(), v.as_i64().unwrap()))
        .collect();
    let voice = std::fs::read(store.file(KOKORO_VOICES_MODEL, "af_heart.bin").unwrap()).unwrap();
    let style = voice
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Fixture {
        whole,
        front,
        back,
        vocab,
        style,
    }
}

impl Fixture {
    fn inputs(&self, phonemes: &str) -> (Tensor<i64>, Tensor<f32>) {
        let mut ids = vec![0];
        ids.extend(phonemes.chars().map(|c| self.vocab[&c]));
        ids.push(0);
        let row = (ids.len() - 2) * 256;
        let n = ids.len();
        (
            Tensor::from_array(([1usize, n], ids)).unwrap(),
            Tensor::from_array(([1usize, 256], self.style[row..row + 256].to_vec())).unwrap(),
        )
    }
}

impl Fixture {
    /// The front half's frames per token for `tokens`, with the output's shape.
    fn predicted(&mut self, tokens: &Tensor<i64>, style: &Tensor<f32>) -> (Vec<i64>, Vec<i64>) {
        let predicted = self
            .front
            .run(ort::inputs![TOKENS => tokens, STYLE => style, SPEED => speed()])
            .unwrap();
        let (shape, frames) = predicted[DURATIONS].try_extract_tensor::<i64>().unwrap();
        (shape.to_vec(), frames.to_vec())
    }
}

fn speed() -> Tensor<f32> {
    Tensor::from_array(([1usize], vec![1.0f32])).unwrap()
}

#[test]
fn kokoro_split_equals_whole_model() {
    let mut f = fixture();
    for phrase in PHRASES {
        let (tokens, style) = f.inputs(phrase);
        let whole = {
            let outputs = f
                .whole
                .run(ort::inputs![TOKENS => &tokens, STYLE => &style, SPEED => speed()])
                .unwrap();
            outputs[AUDIO]
                .try_extract_tensor::<f32>()
                .unwrap()
                .1
                .to_vec()
        };
        let (shape, frames) = f.predicted(&tokens, &style);
        assert_eq!(shape, vec![1, phrase.chars().count() as i64 + 2]);
        assert!(frames.iter().all(|&d| d >= 1), "{frames:?}");
        let total: i64 = frames.iter().sum();
        let frames = Tensor::from_array(([1usize, frames.len()], frames)).unwrap();
        let split = f
            .back
            .run(ort::inputs![TOKENS => &tokens, STYLE => &style, DURATIONS => frames])
            .unwrap();
        let split = split[AUDIO].try_extract_tensor::<f32>().unwrap().1.to_vec();
        assert_eq!(whole.len(), total as usize * FRAME_SAMPLES, "{phrase}");
        assert!(
            whole == split,
            "{phrase}: the halves differ from the whole model"
        );
    }
}

#[test]
fn first_audio_is_shorter_by_exactly_the_capped_frames() {
    let store = ModelStore::from_env().expect("store");
    let mut kokoro = Kokoro::load(&store, 1).expect("kokoro");
    let mut f = fixture();
    let limits = FrameLimits::default();
    for phrase in PHRASES {
        let (tokens, style) = f.inputs(phrase);
        let (_, frames) = f.predicted(&tokens, &style);
        let n = frames.len();
        let over = |d: i64, cap: i64| (d - cap).max(0);
        let mut saved = over(frames[0], limits.leading_pad) + over(frames[n - 1], limits.final_pad);
        if phrase.ends_with(',') {
            saved += over(frames[n - 2], limits.final_punctuation)
                + over(frames[n - 3], limits.final_phoneme);
        }
        // A later chunk keeps the model's durations; the first chunk of a reply is capped.
        let ahead = kokoro
            .synthesize(phrase, "af_heart", Urgency::Ahead)
            .unwrap();
        let first = kokoro
            .synthesize(phrase, "af_heart", Urgency::FirstAudio)
            .unwrap();
        assert_eq!(
            ahead.len(),
            frames.iter().sum::<i64>() as usize * FRAME_SAMPLES
        );
        assert!(saved > 0, "{phrase}: nothing was capped in {frames:?}");
        assert_eq!(
            ahead.len() - first.len(),
            saved as usize * FRAME_SAMPLES,
            "{phrase}: {frames:?}"
        );
    }
}
