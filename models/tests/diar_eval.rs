//! Diarization on real voices: one LibriVox reader (recorded speech) and four TTS voices
//! (Piper `joe`, Kokoro `af_heart`, `am_adam`, `bm_george`), all resampled to 16 kHz; and a
//! second conversation of four real speakers (the reader plus the three pocketsphinx test
//! speakers of `pocketsphinx-speakers`) with two TTS voices.
//! Needs the store's `campplus`, `librivox-clips`, `pocketsphinx-speakers`, `piper-joe`,
//! `kokoro-82m`, `kokoro-voices` and `misaki-lexicon` files. Run with a fixed thread count:
//! `CANDLE_NUM_THREADS=2 cargo test -p antiphon-models --test diar_eval -- --nocapture`.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use antiphon_audio::resample::resample_clip;
use antiphon_models::diar::der::{Turn, der};
use antiphon_models::diar::pipeline::{diarize, diarize_with_mask};
use antiphon_models::diar::speech::{EnergyVadConfig, regions, silero_mask, speech_mask};
use antiphon_models::diar::{OnlineConfig, SpeakerEmbedder, cosine};
use antiphon_models::store::ModelStore;
use antiphon_models::tts::lexicon::Lexicon;
use antiphon_models::tts::load::spawn_engine_for_voice;
use antiphon_models::vad::SileroVad;

const RATE: u32 = 16_000;

/// One utterance of one speaker, 16 kHz, leading and trailing silence trimmed.
struct Utterance {
    speaker: &'static str,
    samples: Vec<f32>,
}

fn store() -> ModelStore {
    ModelStore::from_env().expect("model store location")
}

fn trim(x: Vec<f32>) -> Vec<f32> {
    let r = regions(&speech_mask(
        &x,
        &EnergyVadConfig {
            hangover_frames: 0,
            ..Default::default()
        },
    ));
    match (r.first(), r.last()) {
        (Some(a), Some(b)) => x[a.0 * 160..(b.1 * 160).min(x.len())].to_vec(),
        _ => panic!("no speech in an utterance"),
    }
}

fn librivox(id: &str) -> Vec<f32> {
    let path = store()
        .file(
            "librivox-clips",
            &format!("sense_and_sensibility_01_austen_64kb-{id}.wav"),
        )
        .expect("LibriVox clip in the store");
    let mut reader = hound::WavReader::open(path).expect("wav");
    assert_eq!(reader.spec().sample_rate, RATE);
    reader
        .samples::<i16>()
        .map(|s| s.expect("sample") as f32 / 32768.0)
        .collect()
}

/// One recording of `pocketsphinx-speakers`: `.raw` is headerless 16 kHz s16le mono PCM.
fn pocketsphinx(file: &str) -> Vec<f32> {
    let path = store()
        .file("pocketsphinx-speakers", file)
        .expect("pocketsphinx recording in the store");
    if file.ends_with(".raw") {
        let bytes = std::fs::read(path).expect("raw recording readable");
        assert!(
            bytes.len().is_multiple_of(2),
            "{file}: odd byte count for 16-bit PCM"
        );
        bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
            .collect()
    } else {
        let mut reader = hound::WavReader::open(path).expect("wav");
        assert_eq!(reader.spec().sample_rate, RATE, "{file}");
        assert_eq!(reader.spec().channels, 1, "{file}");
        reader
            .samples::<i16>()
            .map(|s| s.expect("sample") as f32 / 32768.0)
            .collect()
    }
}

/// The three pocketsphinx test speakers, two recordings each (speaker, file).
const POCKETSPHINX_RECORDINGS: [(&str, &str); 6] = [
    ("goforward", "goforward.raw"),
    ("goforward", "numbers.raw"),
    ("cards", "cards-005.wav"),
    ("cards", "cards-002.wav"),
    ("forever", "forever-input_4_16k.wav"),
    ("forever", "forever-input_2_16k.wav"),
];

fn pocketsphinx_utterances() -> Vec<Utterance> {
    POCKETSPHINX_RECORDINGS
        .iter()
        .map(|&(speaker, file)| Utterance {
            speaker,
            samples: trim(pocketsphinx(file)),
        })
        .collect()
}

/// Utterances in order with `gap_s` of silence before, between and after; the reference turns
/// are their extents.
fn conversation(order: &[&Utterance], gap_s: f32) -> (Vec<f32>, Vec<Turn>) {
    let gap = vec![0.0f32; (gap_s * RATE as f32) as usize];
    let mut audio = gap.clone();
    let mut reference = Vec::new();
    for u in order {
        let start = audio.len() as f64 / RATE as f64;
        audio.extend_from_slice(&u.samples);
        reference.push(Turn::new(
            start,
            audio.len() as f64 / RATE as f64,
            u.speaker,
        ));
        audio.extend_from_slice(&gap);
    }
    (audio, reference)
}

const TTS_LINES: [(&str, &str); 8] = [
    (
        "joe",
        "I think the train leaves at half past nine, so we should hurry up and pack our bags.",
    ),
    (
        "af_heart",
        "Could you tell me where the nearest post office is? I need to send a parcel today.",
    ),
    (
        "am_adam",
        "The weather has been strange this week, warm in the morning and freezing at night.",
    ),
    (
        "bm_george",
        "Our meeting was moved to Thursday afternoon, because the manager is travelling.",
    ),
    (
        "joe",
        "My brother bought a small boat last summer and now he wants to sail around the island.",
    ),
    (
        "af_heart",
        "Please remember to water the plants while I am away, especially the ones by the window.",
    ),
    (
        "bm_george",
        "The library closes early on Sundays, so return those books before four o'clock.",
    ),
    (
        "am_adam",
        "I have never seen so many people waiting for a bus at this hour of the evening.",
    ),
];

/// All utterances, made once per test binary: index 0..3 LibriVox, then the TTS lines in order.
fn utterances() -> &'static [Utterance] {
    static CELL: OnceLock<Vec<Utterance>> = OnceLock::new();
    CELL.get_or_init(|| {
        let mut out: Vec<Utterance> = ["0870", "0890", "0920", "0930"]
            .iter()
            .map(|id| Utterance {
                speaker: "reader",
                samples: trim(librivox(id)),
            })
            .collect();
        let lexicon = Arc::new(Lexicon::load(&store()).expect("misaki lexicon"));
        let piper = spawn_engine_for_voice(&store(), lexicon.clone(), "joe", 2).expect("piper");
        let kokoro = spawn_engine_for_voice(&store(), lexicon, "af_heart", 2).expect("kokoro");
        for (voice, text) in TTS_LINES {
            let engine = if voice == "joe" { &piper } else { &kokoro };
            let mut stream = engine.open_stream(voice).expect("voice");
            stream.push_text(text).expect("queued");
            stream.finish().expect("queued");
            let chunks = stream
                .collect_reply(Duration::from_secs(120))
                .expect("audio");
            let rate = chunks[0].sample_rate;
            let audio: Vec<f32> = chunks
                .iter()
                .flat_map(|c| c.samples.iter().copied())
                .collect();
            out.push(Utterance {
                speaker: voice,
                samples: trim(resample_clip(&audio, rate, RATE).expect("TTS rates are supported")),
            });
        }
        out
    })
}

fn embedder() -> &'static Mutex<SpeakerEmbedder> {
    static CELL: OnceLock<Mutex<SpeakerEmbedder>> = OnceLock::new();
    CELL.get_or_init(|| Mutex::new(SpeakerEmbedder::load(&store()).expect("CAM++ loads")))
}

/// 2 s from the middle of an utterance.
fn middle(x: &[f32]) -> &[f32] {
    let n = 2 * RATE as usize;
    let start = x.len().saturating_sub(n) / 2;
    &x[start..(start + n).min(x.len())]
}

#[test]
fn same_speaker_segments_are_closer_than_different_speakers() {
    let utts = utterances();
    // Two different utterances of each of the five speakers.
    let pick: [(usize, usize); 5] = [(0, 1), (4, 8), (5, 9), (6, 11), (7, 10)];
    let mut emb = embedder().lock().expect("embedder lock");
    let mut e = Vec::new();
    for &(a, b) in &pick {
        let v = emb
            .embed(&[middle(&utts[a].samples), middle(&utts[b].samples)])
            .expect("embed");
        e.push(v);
    }
    for (i, &(a, b)) in pick.iter().enumerate() {
        assert_eq!(utts[a].speaker, utts[b].speaker);
        let same = cosine(&e[i][0], &e[i][1]);
        let mut worst_other = f32::MIN;
        for other in e
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, o)| o)
        {
            worst_other = worst_other
                .max(cosine(&e[i][0], other))
                .max(cosine(&e[i][1], other));
        }
        eprintln!(
            "{:>9}: same {same:.3}, most similar other {worst_other:.3}",
            utts[a].speaker
        );
        assert!(
            same > worst_other,
            "{}: same {same} <= other {worst_other}",
            utts[a].speaker
        );
    }
}

#[test]
fn conversation_der_is_within_twenty_percent() {
    let utts = utterances();
    // Turn order: speakers alternate, each voice returns later in the conversation.
    let order = [0, 4, 5, 1, 6, 7, 8, 2, 9, 10, 3, 11];
    let gap = vec![0.0f32; (0.4 * RATE as f32) as usize];
    let mut audio = gap.clone();
    let mut reference = Vec::new();
    for &i in &order {
        let start = audio.len() as f64 / RATE as f64;
        audio.extend_from_slice(&utts[i].samples);
        reference.push(Turn::new(
            start,
            audio.len() as f64 / RATE as f64,
            utts[i].speaker,
        ));
        audio.extend_from_slice(&gap);
    }
    let mut emb = embedder().lock().expect("embedder lock");
    let t0 = Instant::now();
    let result = diarize(
        &mut emb,
        &audio,
        &EnergyVadConfig::default(),
        OnlineConfig::default(),
    )
    .expect("diarize");
    let elapsed = t0.elapsed().as_secs_f64();
    let hyp: Vec<Turn> = result
        .segments
        .iter()
        .map(|s| Turn::new(s.start_s as f64, s.end_s as f64, &s.label))
        .collect();
    let report = der(&reference, &hyp, 0.25);
    let audio_s = audio.len() as f64 / RATE as f64;
    // Label latency: for each reference speech frame, audio time until its first label exists.
    let mut waits = Vec::new();
    for t in &reference {
        let mut f = t.start_s;
        while f < t.end_s {
            if let Some(c) = result
                .changes
                .iter()
                .find(|c| (c.start_s as f64) <= f && f < c.end_s as f64)
            {
                waits.push(c.end_s as f64 - f);
            }
            f += 0.01;
        }
    }
    waits.sort_by(f64::total_cmp);
    let relabels = result.changes.iter().filter(|c| c.relabelled).count();
    eprintln!(
        "audio {audio_s:.1} s, {} turns, 5 speakers -> {} found; DER {:.1} % (miss {:.2} s, FA {:.2} s, confusion {:.2} s of {:.1} s scored); \
         first-label wait median {:.2} s, p95 {:.2} s; {} windows, {relabels} re-labels; {:.1} s compute (RTF {:.3})",
        reference.len(),
        result.num_speakers,
        100.0 * report.der(),
        report.missed_s,
        report.false_alarm_s,
        report.confusion_s,
        report.scored_s,
        waits.get(waits.len() / 2).copied().unwrap_or(f64::NAN),
        waits
            .get(waits.len() * 95 / 100)
            .copied()
            .unwrap_or(f64::NAN),
        result.changes.len() - relabels,
        elapsed,
        elapsed / audio_s,
    );
    for s in &result.segments {
        eprintln!("  {:7.2} {:7.2} {}", s.start_s, s.end_s, s.label);
    }
    for t in &reference {
        eprintln!("  ref {:7.2} {:7.2} {}", t.start_s, t.end_s, t.speaker);
    }
    assert!(report.der() <= 0.20, "DER {:.3}", report.der());

    // The same conversation with Silero VAD's speech mask instead of the energy mask.
    let mut vad = SileroVad::load(&store(), 1).expect("Silero VAD loads");
    let mask = silero_mask(&mut vad, &audio, 0.5, &EnergyVadConfig::default()).expect("vad");
    let result =
        diarize_with_mask(&mut emb, &audio, &mask, OnlineConfig::default()).expect("diarize");
    let hyp: Vec<Turn> = result
        .segments
        .iter()
        .map(|s| Turn::new(s.start_s as f64, s.end_s as f64, &s.label))
        .collect();
    let silero = der(&reference, &hyp, 0.25);
    eprintln!(
        "with Silero VAD: DER {:.1} % (miss {:.2} s, FA {:.2} s, confusion {:.2} s), {} speakers",
        100.0 * silero.der(),
        silero.missed_s,
        silero.false_alarm_s,
        silero.confusion_s,
        result.num_speakers
    );
    assert!(silero.der() <= 0.20, "DER with Silero {:.3}", silero.der());
}

/// The live path as a session runs it: the ASR's own VAD (Silero + the `server_vad`
/// endpointer, 500 ms silence) reports speech start/stop, [`LiveDiarizer`] cuts windows while
/// the user speaks and labels each turn once. Compute is simulated on one embedding thread:
/// each window's measured CAM++ time starts when the window is cut (or when the previous one
/// is done) and its result arrives at that audio time. Turns are 1 s apart (past the 500 ms
/// endpointing silence, so each is its own segment).
#[test]
fn live_turn_labels_der_and_latency() {
    let utts = utterances();
    let order = [0, 4, 5, 1, 6, 7, 8, 2, 9, 10, 3, 11].map(|i| &utts[i]);
    live_eval("reader + 4 TTS voices", &order);
}

/// The live path on four real speakers and two TTS voices (the order of
/// `real_speakers_conversation_der_is_within_twenty_percent`, 1 s pauses).
#[test]
fn live_real_speakers_turn_labels_der() {
    let utts = utterances();
    let ps = pocketsphinx_utterances();
    let order = [
        &utts[0], &ps[0], &ps[2], &utts[4], &ps[4], &ps[1], &utts[1], &ps[3], &utts[5], &ps[5],
        &utts[8], &utts[2], &utts[9],
    ];
    live_eval("4 real speakers + 2 TTS voices", &order);
}

fn live_eval(name: &str, order: &[&Utterance]) {
    use antiphon_models::diar::live::{LiveConfig, LiveDiarizer, SegmentLabel};
    use antiphon_models::vad::endpoint::{EndpointConfig, EndpointEvent, Endpointer};
    use antiphon_models::vad::silero::{FRAME_SAMPLES, SileroState};

    let (audio, reference) = conversation(order, 1.0);
    let mut vad = SileroVad::load(&store(), 1).expect("Silero VAD loads");
    let mut vad_state = SileroState::default();
    let mut endpointer = Endpointer::new(EndpointConfig::default()).expect("valid endpoint");
    let mut live = LiveDiarizer::new(LiveConfig::default());
    let mut emb = embedder().lock().expect("embedder lock");
    let secs = |samples: u64| samples as f64 / RATE as f64;

    // (finish time, job id, embedding) of windows being computed.
    type InFlight = Vec<(f64, u64, Result<Vec<f32>, ()>)>;
    let mut inflight: InFlight = Vec::new();
    let mut server_free = 0.0f64;
    let mut compute = Vec::new();
    let mut stops: Vec<(u64, f64)> = Vec::new();
    let mut decided: Vec<(SegmentLabel, f64)> = Vec::new();
    let mut t = 0.0;
    let deliver = |live: &mut LiveDiarizer,
                   inflight: &mut InFlight,
                   decided: &mut Vec<(SegmentLabel, f64)>,
                   until: f64| {
        inflight.sort_by(|a, b| a.0.total_cmp(&b.0));
        while inflight.first().is_some_and(|j| j.0 <= until) {
            let (at, id, e) = inflight.remove(0);
            live.handle_embedding(id, e.as_deref().map_err(|_| ()));
            decided.extend(std::iter::from_fn(|| live.poll_label()).map(|l| (l, at)));
        }
    };
    for (i, chunk) in audio.chunks(FRAME_SAMPLES).enumerate() {
        let start = (i * FRAME_SAMPLES) as u64;
        t = secs(start + chunk.len() as u64);
        deliver(&mut live, &mut inflight, &mut decided, t);
        live.push_audio(chunk);
        let mut frame = [0.0f32; FRAME_SAMPLES];
        frame[..chunk.len()].copy_from_slice(chunk);
        let p = vad
            .step(&mut [(&mut vad_state, &frame[..])])
            .expect("vad step")[0];
        match endpointer.push(p, start, FRAME_SAMPLES as u64) {
            Some(EndpointEvent::SpeechStarted { speech_start, .. }) => {
                live.speech_started(speech_start)
            }
            Some(EndpointEvent::SpeechStopped { speech_end, .. }) => {
                if let Some(s) = live.open_segment() {
                    stops.push((s, t));
                }
                live.speech_stopped(speech_end);
            }
            None => {}
        }
        decided.extend(std::iter::from_fn(|| live.poll_label()).map(|l| (l, t)));
        while let Some(job) = live.poll_job() {
            let t0 = Instant::now();
            let e = emb.embed(&[&job.samples]).map(|mut v| v.remove(0));
            let dt = t0.elapsed().as_secs_f64();
            compute.push(dt);
            let finish = t.max(server_free) + dt;
            server_free = finish;
            inflight.push((finish, job.id, e.map_err(|_| ())));
        }
    }
    deliver(&mut live, &mut inflight, &mut decided, f64::INFINITY);
    assert!(
        live.open_segment().is_none(),
        "the conversation ends in silence"
    );

    let hyp: Vec<Turn> = decided
        .iter()
        .filter_map(|(l, _)| {
            let label = l.label.as_deref()?;
            Some(Turn::new(secs(l.start_sample), secs(l.end_sample), label))
        })
        .collect();
    let report = der(&reference, &hyp, 0.25);
    // Latency per reference turn: from its start, and from the VAD's speech stop, to the
    // decision of the segment that covers most of it.
    let mut after_stop = Vec::new();
    let mut after_start = Vec::new();
    for r in &reference {
        let best = decided.iter().max_by(|a, b| {
            let o = |l: &SegmentLabel| {
                (secs(l.end_sample).min(r.end_s) - secs(l.start_sample).max(r.start_s)).max(0.0)
            };
            o(&a.0).total_cmp(&o(&b.0))
        });
        if let Some((l, at)) = best
            && let Some((_, stop)) = stops.iter().find(|(s, _)| *s == l.segment)
        {
            after_stop.push(at - stop);
            after_start.push(at - r.start_s);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    compute.sort_by(f64::total_cmp);
    eprintln!(
        "live, {name}: {:.1} s audio, {} turns -> {} segments, {} speakers; DER {:.1} % (miss {:.2} s, FA {:.2} s, confusion {:.2} s); \
         label after speech stop: median {:.0} ms, max {:.0} ms; after turn start: median {:.2} s, max {:.2} s; \
         {} windows, CAM++ median {:.0} ms",
        t,
        reference.len(),
        decided.len(),
        live.num_speakers(),
        100.0 * report.der(),
        report.missed_s,
        report.false_alarm_s,
        report.confusion_s,
        1000.0 * median(&mut after_stop.clone()),
        1000.0 * max(&after_stop),
        median(&mut after_start.clone()),
        max(&after_start),
        compute.len(),
        1000.0 * median(&mut compute),
    );
    for (l, at) in &decided {
        eprintln!(
            "  {:7.2} {:7.2} {:?} decided at {at:.2} s ({} windows, sim {:?})",
            secs(l.start_sample),
            secs(l.end_sample),
            l.label,
            l.windows,
            l.similarity
        );
    }
    assert_eq!(after_stop.len(), reference.len(), "every turn got a label");
    assert!(
        report.der() <= 0.20,
        "live DER ({name}) {:.3}",
        report.der()
    );
}

/// Four real speakers (LibriVox reader; the pocketsphinx `goforward`, `cards` and `forever`
/// speakers) and two TTS voices (Piper `joe`, Kokoro `af_heart`), each returning later.
#[test]
fn real_speakers_conversation_der_is_within_twenty_percent() {
    let utts = utterances();
    let ps = pocketsphinx_utterances();
    for u in &ps {
        eprintln!(
            "{:>9}: {:.2} s after trimming",
            u.speaker,
            u.samples.len() as f64 / RATE as f64
        );
    }

    // Recordings of one speaker are closer to each other than to any other speaker's.
    let mut emb = embedder().lock().expect("embedder lock");
    let pairs: [(&Utterance, &Utterance); 4] = [
        (&utts[0], &utts[1]),
        (&ps[0], &ps[1]),
        (&ps[2], &ps[3]),
        (&ps[4], &ps[5]),
    ];
    let mut e = Vec::new();
    for (a, b) in pairs {
        assert_eq!(a.speaker, b.speaker);
        e.push(emb.embed(&[&a.samples, &b.samples]).expect("embed"));
    }
    for (i, (a, _)) in pairs.iter().enumerate() {
        let same = cosine(&e[i][0], &e[i][1]);
        let worst_other = e
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, o)| o)
            .map(|o| cosine(&e[i][0], o).max(cosine(&e[i][1], o)))
            .fold(f32::MIN, f32::max);
        eprintln!(
            "{:>9}: same {same:.3}, most similar other {worst_other:.3}",
            a.speaker
        );
        assert!(
            same > worst_other,
            "{}: same {same} <= other {worst_other}",
            a.speaker
        );
    }

    // utts: 0..3 reader, 4 joe, 5 af_heart, 8 joe, 9 af_heart.
    let order = [
        &utts[0], &ps[0], &ps[2], &utts[4], &ps[4], &ps[1], &utts[1], &ps[3], &utts[5], &ps[5],
        &utts[8], &utts[2], &utts[9],
    ];
    let (audio, reference) = conversation(&order, 0.4);
    let audio_s = audio.len() as f64 / RATE as f64;
    let mut vad = SileroVad::load(&store(), 1).expect("Silero VAD loads");
    let masks = [
        ("energy", speech_mask(&audio, &EnergyVadConfig::default())),
        (
            "Silero",
            silero_mask(&mut vad, &audio, 0.5, &EnergyVadConfig::default()).expect("vad"),
        ),
    ];
    for (name, mask) in masks {
        let t0 = Instant::now();
        let result =
            diarize_with_mask(&mut emb, &audio, &mask, OnlineConfig::default()).expect("diarize");
        let elapsed = t0.elapsed().as_secs_f64();
        let hyp: Vec<Turn> = result
            .segments
            .iter()
            .map(|s| Turn::new(s.start_s as f64, s.end_s as f64, &s.label))
            .collect();
        let report = der(&reference, &hyp, 0.25);
        eprintln!(
            "real speakers, {name} mask: audio {audio_s:.1} s, {} turns, 6 speakers (4 real) -> {} found; \
             DER {:.1} % (miss {:.2} s, FA {:.2} s, confusion {:.2} s of {:.1} s scored); {elapsed:.1} s compute",
            reference.len(),
            result.num_speakers,
            100.0 * report.der(),
            report.missed_s,
            report.false_alarm_s,
            report.confusion_s,
            report.scored_s,
        );
        for s in &result.segments {
            eprintln!("  {:7.2} {:7.2} {}", s.start_s, s.end_s, s.label);
        }
        for t in &reference {
            eprintln!("  ref {:7.2} {:7.2} {}", t.start_s, t.end_s, t.speaker);
        }
        assert!(
            report.der() <= 0.20,
            "real speakers, {name} mask: DER {:.3}",
            report.der()
        );
    }
}
