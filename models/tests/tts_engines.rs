//! Real Piper and Kokoro engines from the model store: synthesis, streaming, joins, cancel.
//! Needs the store's `piper-joe`, `kokoro-82m`, `kokoro-voices` and `misaki-lexicon` files.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use antiphon_models::store::ModelStore;
use antiphon_models::tts::g2p::G2p;
use antiphon_models::tts::lexicon::Lexicon;
use antiphon_models::tts::load::spawn_engine_for_voice;
use antiphon_models::tts::{TtsChunk, TtsEngine, TtsError, TtsEvent};

const THREADS: usize = 2;
const WAIT: Duration = Duration::from_secs(60);

fn store() -> ModelStore {
    ModelStore::from_env().expect("model store location")
}

fn lexicon() -> Arc<Lexicon> {
    static LEXICON: OnceLock<Arc<Lexicon>> = OnceLock::new();
    LEXICON
        .get_or_init(|| Arc::new(Lexicon::load(&store()).expect("misaki lexicon in the store")))
        .clone()
}

fn engine(voice: &str) -> TtsEngine {
    spawn_engine_for_voice(&store(), lexicon(), voice, THREADS).expect("engine loads")
}

fn speak(engine: &TtsEngine, voice: &str, text: &str) -> Vec<TtsChunk> {
    let mut stream = engine.open_stream(voice).expect("voice exists");
    stream.push_text(text).expect("queued");
    stream.finish().expect("queued");
    stream.collect_reply(WAIT).expect("audio")
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

#[test]
fn lexicon_covers_everyday_words() {
    let lex = lexicon();
    assert!(lex.len() > 150_000, "gold + silver entries: {}", lex.len());
    let g2p = G2p::new(lex);
    assert_eq!(g2p.phonemize("Hello, world!"), "həlˈO, wˈɜɹld!");
    // Inflected and unknown words still produce phonemes.
    let ph = g2p.phonemize("the grumbleflunks zorped");
    assert_eq!(ph.split(' ').count(), 3, "{ph}");
}

/// Continuity at the joins: the biggest sample-to-sample step where two chunks meet must be
/// no bigger than what speech itself does, and no silence may outlast a natural pause.
fn check_joins(chunks: &[TtsChunk], rate: u32) {
    assert!(
        chunks.len() >= 3,
        "want several chunks, got {}",
        chunks.len()
    );
    let audio: Vec<f32> = chunks
        .iter()
        .flat_map(|c| c.samples.iter().copied())
        .collect();
    let mut steps: Vec<f32> = audio.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    let mut join_step = 0f32;
    for c in &chunks[1..] {
        let at = c.start_sample as usize;
        assert_eq!(
            at,
            chunks
                .iter()
                .take_while(|p| p.seq < c.seq)
                .map(|p| p.samples.len())
                .sum::<usize>(),
            "offsets are contiguous"
        );
        for k in at.saturating_sub(2)..(at + 2).min(audio.len() - 1) {
            join_step = join_step.max((audio[k + 1] - audio[k]).abs());
        }
    }
    steps.sort_by(f32::total_cmp);
    let speech_p99 = steps[steps.len() * 99 / 100];
    assert!(
        join_step <= speech_p99,
        "join step {join_step} > speech p99 step {speech_p99}"
    );
    // Longest run below -50 dBFS-ish.
    let mut run = 0usize;
    let mut longest = 0usize;
    for x in &audio {
        run = if x.abs() < 3e-3 { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let longest_ms = longest as f64 * 1000.0 / rate as f64;
    assert!(longest_ms < 600.0, "silent gap of {longest_ms:.0} ms");
    // Every chunk says something.
    for c in chunks.iter().filter(|c| !c.text.is_empty()) {
        assert!(
            c.speech_samples > rate as usize / 10,
            "chunk {:?} is nearly empty",
            c.text
        );
        assert!(
            rms(&c.samples[..c.speech_samples]) > 0.01,
            "chunk {:?} is silent",
            c.text
        );
    }
}

const MULTI: &str = "Well, the meeting is at 3:30 pm on Friday. Bring the report, and call Dr. Smith \
                     at 555-123-4567 if you are late.";

#[test]
fn piper_speaks_in_joined_chunks() {
    let engine = engine("joe");
    assert_eq!(engine.sample_rate(), 22_050);
    let chunks = speak(&engine, "joe", MULTI);
    let seconds = chunks.iter().map(|c| c.samples.len()).sum::<usize>() as f64 / 22_050.0;
    assert!(
        (5.0..20.0).contains(&seconds),
        "{seconds:.1} s for {} words",
        MULTI.split(' ').count()
    );
    check_joins(&chunks, 22_050);
    let text: Vec<&str> = chunks
        .iter()
        .map(|c| c.text.as_str())
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(
        text.join(" "),
        MULTI.split_whitespace().collect::<Vec<_>>().join(" ")
    );
}

#[test]
fn kokoro_speaks_in_joined_chunks() {
    let engine = engine("af_heart");
    assert_eq!(engine.sample_rate(), 24_000);
    assert!(engine.voices().iter().any(|v| v == "am_adam"));
    let chunks = speak(&engine, "af_heart", MULTI);
    let seconds = chunks.iter().map(|c| c.samples.len()).sum::<usize>() as f64 / 24_000.0;
    assert!(
        (5.0..20.0).contains(&seconds),
        "{seconds:.1} s for {} words",
        MULTI.split(' ').count()
    );
    check_joins(&chunks, 24_000);
    let text: Vec<&str> = chunks
        .iter()
        .map(|c| c.text.as_str())
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(
        text.join(" "),
        MULTI.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    // A second voice on the same engine thread.
    let other = speak(&engine, "bm_george", "Good evening.");
    assert!(rms(&other[0].samples) > 0.01);
}

#[test]
fn first_chunk_arrives_before_the_sentence_is_finished() {
    let engine = engine("joe");
    let mut stream = engine.open_stream("joe").expect("voice");
    for (i, token) in ["Well", " then", ",", " I", " can", " help", " you", " with"]
        .into_iter()
        .enumerate()
    {
        stream.push_text(token).expect("queued");
        // The comma becomes a boundary once the following space arrives (token 3); the second
        // chunk's cap (4 words: twice the first chunk's 2) is reached once " with" arrives.
        let cut = u64::from(i >= 3) + u64::from(i >= 7);
        assert_eq!(stream.reply_chunks_sent(), cut, "after token {i}");
    }
    // The rest of the sentence has not been written yet.
    let first = match stream.recv_timeout(WAIT).expect("engine alive") {
        Some(TtsEvent::Audio(c)) => c,
        other => panic!("expected audio, got {other:?}"),
    };
    assert_eq!(first.seq, 0);
    assert_eq!(first.start_sample, 0);
    assert_eq!(first.text, "Well then,");
    assert!(!first.last);
    stream.push_text(" that today.").expect("queued");
    stream.finish().expect("queued");
    assert_eq!(stream.reply_chunks_sent(), 3);
    let rest = stream.collect_reply(WAIT).expect("audio");
    assert_eq!(rest.last().map(|c| c.last), Some(true));
    assert_eq!(rest[0].start_sample, first.samples.len() as u64);
    // The next reply counts from zero again.
    stream.push_text("Sure").expect("queued");
    assert_eq!(stream.reply_chunks_sent(), 0);
}

#[test]
fn cancel_stops_the_reply_and_the_next_one_plays() {
    let engine = engine("joe");
    let mut stream = engine.open_stream("joe").expect("voice");
    let long = "This is a long answer. It has many sentences. Each one becomes a chunk. \
                None of the later ones should ever be heard. Because the caller interrupted.";
    stream.push_text(long).expect("queued");
    stream.finish().expect("queued");
    let old_epoch = stream.epoch();
    assert!(matches!(
        stream.recv_timeout(WAIT),
        Ok(Some(TtsEvent::Audio(_)))
    ));
    let cancelled_at = Instant::now();
    let new_epoch = stream.cancel();
    assert_eq!(new_epoch, old_epoch + 1);
    stream.push_text("Okay, go ahead.").expect("queued");
    stream.finish().expect("queued");
    let reply = stream.collect_reply(WAIT).expect("audio");
    assert!(
        reply.iter().all(|c| c.epoch == new_epoch),
        "stale audio delivered"
    );
    assert_eq!(
        reply[0].start_sample, 0,
        "a new epoch starts a new timeline"
    );
    let joined: String = reply
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(joined.trim(), "Okay, go ahead.");
    // The old reply's queued chunks were skipped, not synthesized: the new reply came back
    // in about one old chunk plus itself, far less than the whole old text would take.
    let took = cancelled_at.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn unknown_voice_is_a_typed_error() {
    let engine = engine("joe");
    assert!(matches!(
        engine.open_stream("nobody"),
        Err(TtsError::UnknownVoice(_))
    ));
    let err = spawn_engine_for_voice(&store(), lexicon(), "no_such_voice", 1)
        .and_then(|e| e.open_stream("no_such_voice").map(|_| ()));
    assert!(matches!(err, Err(TtsError::UnknownVoice(_))), "{err:?}");
    let escape = spawn_engine_for_voice(&store(), lexicon(), "../piper-joe/en_US-joe-medium", 1);
    assert!(
        matches!(escape, Err(TtsError::UnknownVoice(_))),
        "a voice name is not a path"
    );
}

#[test]
fn one_engine_serves_interleaved_streams() {
    let engine = engine("joe");
    let mut a = engine.open_stream("joe").expect("voice");
    let mut b = engine.open_stream("joe").expect("voice");
    a.push_text("First caller, your table is booked.")
        .expect("queued");
    b.push_text("Second caller, your taxi is on its way.")
        .expect("queued");
    a.finish().expect("queued");
    b.finish().expect("queued");
    let heard_b = b.collect_reply(WAIT).expect("audio");
    let heard_a = a.collect_reply(WAIT).expect("audio");
    let text = |c: &[TtsChunk]| {
        c.iter()
            .map(|x| x.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(text(&heard_a), "First caller, your table is booked.");
    assert_eq!(text(&heard_b), "Second caller, your taxi is on its way.");
    assert_eq!(
        heard_b[0].start_sample, 0,
        "each stream has its own timeline"
    );
}
