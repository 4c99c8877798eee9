//! Silero VAD v6 on real speech and real background noise, batched across sessions, and the
//! endpointer driven by it.

mod asr_support;

use antiphon_models::store::ModelStore;
use antiphon_models::vad::endpoint::{EndpointConfig, EndpointEvent, Endpointer, samples_to_ms};
use antiphon_models::vad::silero::{FRAME_SAMPLES, SileroState, SileroVad};
use asr_support::librivox_clips;

fn load() -> SileroVad {
    SileroVad::load(&ModelStore::from_env().expect("model store"), 1).expect("silero loads")
}

/// Speech probabilities of every whole frame of `audio`, one session.
fn probabilities(vad: &mut SileroVad, audio: &[f32]) -> Vec<f32> {
    let mut state = SileroState::default();
    audio
        .chunks_exact(FRAME_SAMPLES)
        .map(|frame| vad.step(&mut [(&mut state, frame)]).expect("vad step")[0])
        .collect()
}

/// The room noise before the reader starts (first ~190 ms of a clip, RMS ~ -45 dBFS), tiled.
fn background(clip: &[f32], samples: usize) -> Vec<f32> {
    let lead = &clip[..3000];
    lead.iter().copied().cycle().take(samples).collect()
}

#[test]
fn speech_is_likely_and_background_noise_is_not() {
    let mut vad = load();
    for clip in librivox_clips() {
        let probs = probabilities(&mut vad, &clip.audio);
        // The reader is talking through the middle half of every clip.
        let mid = &probs[probs.len() / 4..probs.len() * 3 / 4];
        let speech = mid.iter().filter(|&&p| p >= 0.5).count() as f32 / mid.len() as f32;
        assert!(
            speech > 0.8,
            "{}: only {speech:.2} of speech frames >= 0.5",
            clip.name
        );
        let noise = probabilities(&mut vad, &background(&clip.audio, 16_000 * 2));
        let max = noise.iter().copied().fold(0.0f32, f32::max);
        assert!(
            max < 0.3,
            "{}: background noise reached {max:.2}",
            clip.name
        );
        let silence = probabilities(&mut vad, &vec![0.0; 16_000]);
        assert!(
            silence.iter().all(|&p| p < 0.1),
            "{}: digital silence {silence:?}",
            clip.name
        );
    }
}

#[test]
fn batched_sessions_match_single_sessions() {
    let mut vad = load();
    let clips = librivox_clips();
    let a = &clips[0].audio;
    let b = background(a, a.len());
    let alone_a = probabilities(&mut vad, a);
    let alone_b = probabilities(&mut vad, &b);
    let (mut sa, mut sb) = (SileroState::default(), SileroState::default());
    for (i, (fa, fb)) in a
        .chunks_exact(FRAME_SAMPLES)
        .zip(b.chunks_exact(FRAME_SAMPLES))
        .enumerate()
    {
        let p = vad
            .step(&mut [(&mut sa, fa), (&mut sb, fb)])
            .expect("batched step");
        assert!(
            (p[0] - alone_a[i]).abs() < 1e-4,
            "frame {i}: {} vs {}",
            p[0],
            alone_a[i]
        );
        assert!(
            (p[1] - alone_b[i]).abs() < 1e-4,
            "frame {i}: {} vs {}",
            p[1],
            alone_b[i]
        );
    }
}

#[test]
fn endpointer_finds_each_utterance_in_real_audio() {
    let mut vad = load();
    let clips = librivox_clips();
    // noise, clip 0, 1.5 s noise, clip 1, 1.5 s noise
    let noise = background(&clips[0].audio, 24_000);
    let mut audio = noise[..8_000].to_vec();
    let first_start = audio.len();
    audio.extend(&clips[0].audio);
    let first_end = audio.len();
    audio.extend(&noise);
    let second_start = audio.len();
    audio.extend(&clips[1].audio);
    let second_end = audio.len();
    audio.extend(&noise);

    let probs = probabilities(&mut vad, &audio);
    let mut ep = Endpointer::new(EndpointConfig::default()).expect("default config is valid");
    let events: Vec<EndpointEvent> = probs
        .iter()
        .enumerate()
        .filter_map(|(i, &p)| ep.push(p, (i * FRAME_SAMPLES) as u64, FRAME_SAMPLES as u64))
        .collect();
    assert_eq!(events.len(), 4, "{events:?}");
    let near = |got: u64, want: usize, slack_ms: u64| {
        let (g, w) = (samples_to_ms(got), samples_to_ms(want as u64));
        assert!(
            g.abs_diff(w) <= slack_ms,
            "at {g} ms, expected about {w} ms"
        );
    };
    for (pair, (start, end)) in events
        .chunks(2)
        .zip([(first_start, first_end), (second_start, second_end)])
    {
        let EndpointEvent::SpeechStarted {
            speech_start,
            audio_start,
        } = pair[0]
        else {
            panic!("expected a start: {pair:?}");
        };
        let EndpointEvent::SpeechStopped {
            speech_end,
            audio_end,
        } = pair[1]
        else {
            panic!("expected a stop: {pair:?}");
        };
        // Each clip opens with ~200 ms of room noise and ends with ~100-300 ms of it.
        near(speech_start, start + 3_200, 250);
        assert_eq!(speech_start - audio_start, 4_800);
        near(speech_end, end - 3_200, 350);
        assert!(audio_end >= speech_end + 8_000 && audio_end < speech_end + 8_000 + 512 * 2);
    }
}
