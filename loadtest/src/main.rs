//! `antiphon-loadtest`: concurrent real-speech sessions against a Realtime-compatible
//! WebSocket endpoint, reporting TTFB from the true end of speech; and `speech-end`, the
//! audio analysis those TTFBs count from.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use antiphon_audio::wav::read_mono;
use antiphon_loadtest::clips::{Clip, WIRE_RATE, load_clips, with_pause};
use antiphon_loadtest::driver::{Endpoint, parse_turn_detection};
use antiphon_loadtest::paused_set::{check_pauses, paused_utterances};
use antiphon_loadtest::report::Report;
use antiphon_loadtest::run::{
    Churn, RampConfig, StepConfig, StepReport, run_fresh_sessions, run_ramp, run_step,
};
use antiphon_loadtest::soak::{SoakConfig, SoakSample, run_soak};
use antiphon_loadtest::speech_end::{DEFAULT_FLOOR_DB, speech_extent};
use antiphon_loadtest::target::{DEFAULT_URL, check_target};
use antiphon_models::asr::Moonshine;
use antiphon_models::store::ModelStore;
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "antiphon-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print where speech starts and ends in each WAV file (JSON, one object per line).
    SpeechEnd {
        files: Vec<PathBuf>,
        /// Frames quieter than the loudest frame by more than this many dB count as silence.
        #[arg(long, default_value_t = DEFAULT_FLOOR_DB)]
        floor_db: f32,
    },
    /// Open N concurrent sessions that speak real clips and measure TTFB, errors, underruns.
    Run(Box<RunArgs>),
}

#[derive(Args)]
#[command(after_help = "\
Targets: without --url the tool aims at our server on loopback (ws://127.0.0.1:8080/v1/realtime). \
Any host other than localhost/127.0.0.0/8/::1 is refused unless it was typed explicitly with \
--url (for example --url 'wss://api.openai.com/v1/realtime?model=gpt-realtime' --key $KEY \
--transcription-model gpt-4o-transcribe).

Every run is bounded: at most --sessions x --turns turns, no turn starts after --duration-s, \
and each step ends by --duration-s + --turn-timeout-s + 10 s whatever the server does.")]
struct RunArgs {
    /// WAV files to speak (any rate, mono or first channel); default: the model store's
    /// LibriVox clips (`librivox-clips`).
    wavs: Vec<PathBuf>,
    /// Realtime WebSocket URL. Naming it here is what allows a non-loopback host.
    #[arg(long)]
    url: Option<String>,
    /// API key, sent as `Authorization: Bearer KEY` (our server's demo key by default).
    #[arg(long, default_value = "antiphon-demo-key")]
    key: String,
    /// Concurrent sessions (the first step's, in ramp mode).
    #[arg(short = 'n', long, default_value_t = 1)]
    sessions: usize,
    /// Turns (clips spoken) per session.
    #[arg(long, default_value_t = 3)]
    turns: usize,
    /// Delay between session starts, ms.
    #[arg(long, default_value_t = 700)]
    stagger_ms: u64,
    /// Silence between the end of a reply's playout and the next clip, ms.
    #[arg(long, default_value_t = 1000)]
    gap_ms: u64,
    /// A turn without a finished reply this long after its end of speech fails, s.
    #[arg(long, default_value_t = 30)]
    turn_timeout_s: u64,
    /// No turn starts later than this after a step started, s.
    #[arg(long, default_value_t = 300)]
    duration_s: u64,
    /// `max_output_tokens` of each session (0: the server's default).
    #[arg(long, default_value_t = 60)]
    max_output_tokens: u32,
    /// Session instructions (system prompt); the server's default when absent.
    #[arg(long)]
    instructions: Option<String>,
    /// Input transcription model, for the ASR-final latency (`none` turns transcription off).
    #[arg(long, default_value = "moonshine-base-en")]
    transcription_model: String,
    /// Turn detection each session asks for: `default` (the server's), `server_vad`,
    /// `server_vad:<silence ms>`, `semantic_vad` or `semantic_vad:<low|medium|high|auto>`.
    #[arg(long, default_value = "default")]
    turn_detection: String,
    /// PID of the server process on this machine: report its CPU seconds per session-minute.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Insert this much silence mid-utterance in every clip (in its longest gap between words
    /// in the middle half): a turn-taking test, where any reply audio before the clip's (new)
    /// speech end counts as a cut-in (`cut_ins`). 0: the clips as they are. A list
    /// (`400,550,700,900`) with `--pause-every-gap`: the lengths cycle over the utterances.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pause_ms: Vec<u64>,
    /// With `--pause-ms`: the turn-taking set instead: one utterance per gap between words in
    /// the middle of each clip, kept where the recogniser (Moonshine, from the model store)
    /// hears the clip's first words before the gap and more of the sentence after it.
    #[arg(long)]
    pause_every_gap: bool,
    /// Each turn in a session of its own, one after another (with -n 1): the turn-taking set's
    /// utterances as independent callers. In one conversation the LLM would learn where the
    /// repeated sentence ended before and judge the next pause by it.
    #[arg(long)]
    fresh_session_per_turn: bool,
    /// Write the full report (every turn) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report (SVG charts) here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Raise concurrency step by step until p95 TTFB passes the threshold, a turn gets no
    /// audio, an error or an underrun appears, or the transcript WER rises more than
    /// `--ramp-wer-points` over the first step's; report the last passing level as capacity.
    #[arg(long)]
    ramp: bool,
    /// Sessions added per ramp step.
    #[arg(long, default_value_t = 1)]
    ramp_step: usize,
    /// Highest concurrency a ramp tries.
    #[arg(long, default_value_t = 32)]
    ramp_max: usize,
    /// p95 TTFB a ramp step must stay under, ms.
    #[arg(long, default_value_t = 1000.0)]
    p95_threshold_ms: f64,
    /// Let ramp steps pass despite reply underruns (judge TTFB, errors, missing replies).
    #[arg(long)]
    ramp_allow_underruns: bool,
    /// A ramp step fails when its user-transcript WER exceeds the first step's by more than
    /// this many percentage points (the server is dropping or garbling speech under load).
    #[arg(long, default_value_t = 1.0)]
    ramp_wer_points: f64,
    /// Soak for this many seconds: steps of `--sessions` back to back (sessions come and go),
    /// sampling the server (`--server-pid`: RSS, threads, descriptors; `/healthz`: sessions and
    /// engine leases) after each; fails on a failed turn, a leak, or RSS growth past
    /// `--soak-max-rss-growth-pct` after the warm-up.
    #[arg(long)]
    soak_s: Option<u64>,
    /// The soak's warm-up, seconds (growth is judged from its end).
    #[arg(long, default_value_t = 60)]
    soak_warm_up_s: u64,
    #[arg(long, default_value_t = 5.0)]
    soak_max_rss_growth_pct: f64,
    /// Percentage of turns where the caller speaks the next clip over the reply, 1.5 s into
    /// its audio (churn; a soak wants some).
    #[arg(long, default_value_t = 0)]
    barge_in_pct: u32,
    /// Percentage of turns where the caller hangs up 1.5 s into the reply.
    #[arg(long, default_value_t = 0)]
    hang_up_pct: u32,
}

fn speech_end(files: Vec<PathBuf>, floor_db: f32) -> ExitCode {
    let mut failed = false;
    for file in files {
        match read_mono(&file) {
            Ok(audio) => {
                let extent = speech_extent(&audio.samples, audio.sample_rate, floor_db);
                let line = serde_json::json!({
                    "file": file.display().to_string(),
                    "speech_start_ms": extent.map(|e| e.start_ms),
                    "speech_end_ms": extent.map(|e| e.end_ms),
                    "duration_ms": extent.map(|e| e.duration_ms),
                });
                println!("{line}");
            }
            Err(err) => {
                eprintln!("error: {}: {err}", file.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_step(step: &StepReport) {
    let s = &step.summary;
    let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    println!(
        "{:>3} sessions: {} turns, {} with audio, {} errors, {} underruns, {} cut-ins | TTFB ms \
         p50 {} p90 {} p95 {} p99 {} max {} | ASR final p50 {} | reply audio p50 {} ms | WER {}{}{}",
        step.concurrency,
        s.turns,
        s.turns_with_audio,
        s.errors,
        s.underruns,
        s.cut_ins,
        f(s.ttfb_ms.p50),
        f(s.ttfb_ms.p90),
        f(s.ttfb_ms.p95),
        f(s.ttfb_ms.p99),
        f(s.ttfb_ms.max),
        f(s.asr_final_ms.p50),
        f(s.reply_audio_ms.p50),
        s.transcript_wer
            .map_or_else(|| "-".to_owned(), |w| format!("{:.1} %", w * 100.0)),
        step.cpu.as_ref().map_or_else(String::new, |c| format!(
            " | server {:.1} CPU-s per session-minute",
            c.cpu_s_per_session_minute
        )),
        step.load_average.map_or_else(String::new, |l| format!(
            " | load {:.2} {:.2} {:.2}",
            l[0], l[1], l[2]
        )),
    );
    for e in step.errors.iter().take(5) {
        println!(
            "      error: session {} turn {:?} at {:.0} ms: {:?}: {}",
            e.session, e.turn, e.at_ms, e.kind, e.message
        );
    }
}

/// The turn-taking set (see `paused_set`), with what the recogniser heard at each gap printed.
fn paused_set(clips: &[Clip], pauses_ms: &[u64]) -> anyhow::Result<Vec<Clip>> {
    let store = ModelStore::from_env()?;
    let mut asr = Moonshine::load(&store, 1).context("loading Moonshine for the pause check")?;
    let checks = check_pauses(clips, &mut asr)?;
    for c in &checks {
        println!(
            "pause check: {} at {:.2} s: {:?} -> {}",
            c.clip,
            c.at_sample as f64 / f64::from(WIRE_RATE),
            c.heard,
            if c.mid_sentence() {
                "mid-sentence, kept"
            } else {
                "not a mid-sentence prefix, left out"
            }
        );
    }
    let set = paused_utterances(clips, &checks, pauses_ms);
    anyhow::ensure!(!set.is_empty(), "no gap passed the pause check");
    println!(
        "turn-taking set: {} paused utterances from {} gaps",
        set.len(),
        checks.len()
    );
    Ok(set)
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let explicit = args.url.is_some();
    let url = args.url.unwrap_or_else(|| DEFAULT_URL.to_owned());
    check_target(&url, explicit)?;
    let turn_detection = parse_turn_detection(&args.turn_detection).map_err(anyhow::Error::msg)?;
    let mut clips = load_clips(&args.wavs).context("loading the clips")?;
    let pauses: Vec<u64> = args.pause_ms.iter().copied().filter(|&ms| ms > 0).collect();
    if args.pause_every_gap {
        anyhow::ensure!(!pauses.is_empty(), "--pause-every-gap needs --pause-ms");
        clips = paused_set(&clips, &pauses)?;
    } else if let Some(&pause_ms) = pauses.first() {
        anyhow::ensure!(
            pauses.len() == 1,
            "several --pause-ms lengths need --pause-every-gap"
        );
        clips = clips
            .iter()
            .filter_map(|c| with_pause(c, pause_ms))
            .collect();
        anyhow::ensure!(
            !clips.is_empty(),
            "no clip has a gap between words to widen"
        );
    }
    let config = StepConfig {
        endpoint: Endpoint {
            url,
            key: Some(args.key).filter(|k| !k.is_empty()),
            max_output_tokens: Some(args.max_output_tokens).filter(|&n| n > 0),
            instructions: args.instructions,
            transcription_model: Some(args.transcription_model).filter(|m| m != "none"),
            turn_detection,
        },
        clips: clips.into_iter().map(Arc::new).collect(),
        sessions: args.sessions,
        turns: args.turns,
        stagger: Duration::from_millis(args.stagger_ms),
        lead_in: Duration::from_millis(300),
        gap: Duration::from_millis(args.gap_ms),
        turn_timeout: Duration::from_secs(args.turn_timeout_s),
        max_duration: Duration::from_secs(args.duration_s),
        server_pid: args.server_pid,
        churn: Churn {
            barge_in_pct: args.barge_in_pct,
            hang_up_pct: args.hang_up_pct,
            seed: 0,
        },
    };
    config.validate()?;
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    if let Some(soak_s) = args.soak_s {
        let server_pid = args
            .server_pid
            .context("--soak-s needs --server-pid (the process to sample)")?;
        let soak = SoakConfig {
            duration: Duration::from_secs(soak_s),
            warm_up: Duration::from_secs(args.soak_warm_up_s),
            server_pid,
            health_addr: health_addr(&config.endpoint.url)?,
            max_rss_growth: args.soak_max_rss_growth_pct / 100.0,
        };
        let outcome = runtime.block_on(run_soak(&config, &soak, print_soak_sample))?;
        println!(
            "soak: {} turns ({} barged in, {} hung up), {} failed, RSS growth after warm-up {}: {}",
            outcome.turns,
            outcome.barged_in,
            outcome.hung_up,
            outcome.failed_turns,
            outcome
                .rss_growth
                .map_or_else(|| "-".to_owned(), |g| format!("{:.1} %", g * 100.0)),
            if outcome.passed() {
                "PASS".to_owned()
            } else {
                format!("FAIL ({})", outcome.problems.join("; "))
            }
        );
        if let Some(path) = &args.json {
            let text = serde_json::to_string_pretty(&outcome)?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(if outcome.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let (steps, ramp) = runtime.block_on(async {
        if args.ramp {
            if !config.turns.is_multiple_of(config.clips.len()) {
                eprintln!(
                    "note: --turns {} is not a multiple of the {} clips, so steps speak different \
                     clip mixes and their WERs compare unlike words; use --turns {} for the WER rule",
                    config.turns,
                    config.clips.len(),
                    config.clips.len()
                );
            }
            let ramp = RampConfig {
                start: config.sessions,
                step: args.ramp_step,
                max: args.ramp_max,
                p95_ttfb_threshold_ms: args.p95_threshold_ms,
                allow_underruns: args.ramp_allow_underruns,
                max_wer_increase: args.ramp_wer_points / 100.0,
            };
            run_ramp(&config, &ramp, print_step)
                .await
                .map(|(steps, outcome)| (steps, Some(outcome)))
        } else if args.fresh_session_per_turn {
            let step = run_fresh_sessions(&config).await?;
            print_step(&step);
            Ok((vec![step], None))
        } else {
            let step = run_step(&config).await?;
            print_step(&step);
            Ok((vec![step], None))
        }
    })?;
    if let Some(r) = &ramp {
        println!(
            "capacity: {} ({})",
            r.capacity
                .map_or_else(|| "none".to_owned(), |c| format!("{c} sessions")),
            r.stopped_because
        );
        if let Some(c) = r.capacity {
            // What the server's admission limit should be on the machine that served the ramp
            // (run the ramp against a server whose own limit is above every step).
            println!("for the server's config: [server] max_sessions = {c}");
        }
    }
    let report = Report::new(&config, started_unix_ms, steps, ramp);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.to_json())?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, report.to_html())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let clean = report
        .steps
        .iter()
        .all(|s| s.summary.errors == 0 && s.summary.turns_with_audio == s.summary.turns);
    Ok(if clean || report.ramp.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_soak_sample(s: &SoakSample) {
    let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    println!(
        "{:>6.0} s: RSS {:.0} MiB, {} threads, {} fds, {} sessions / {} leases left | {} turns, \
         {} failed, {} barged in, {} hung up | TTFB p50 {} p95 {} ms",
        s.at_s,
        s.rss_mib,
        s.threads,
        s.fds,
        s.sessions_open,
        s.leases_in_use,
        s.turns,
        s.failed_turns,
        s.barged_in,
        s.hung_up,
        f(s.ttfb_p50_ms),
        f(s.ttfb_p95_ms),
    );
}

/// `host:port` of a `ws://` / `wss://` URL (where `/healthz` is served).
fn health_addr(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .context("--soak-s needs a ws:// URL")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    anyhow::ensure!(
        authority.contains(':'),
        "--soak-s needs the URL's port ({url})"
    );
    Ok(authority.to_owned())
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::SpeechEnd { files, floor_db } => speech_end(files, floor_db),
        Command::Run(args) => match run(*args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}
