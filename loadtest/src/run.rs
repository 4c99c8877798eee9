//! Runs steps of N concurrent sessions, and ramps N up until the server stops keeping up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::clips::Clip;
use crate::driver::{Endpoint, run_session};
use crate::record::{ErrorRecord, TurnEnding, TurnRecord};
use crate::session::SessionPlan;
use crate::stats::Recorder;
use crate::summary::{StepSummary, summarize};

/// Upper bounds on what one invocation may generate.
pub const MAX_SESSIONS: usize = 512;
pub const MAX_TURNS: usize = 100;

/// One step's shape; a ramp reuses it with a different `sessions`.
#[derive(Debug, Clone)]
pub struct StepConfig {
    pub endpoint: Endpoint,
    pub clips: Vec<Arc<Clip>>,
    pub sessions: usize,
    pub turns: usize,
    /// Delay between consecutive session starts.
    pub stagger: Duration,
    pub lead_in: Duration,
    pub gap: Duration,
    pub turn_timeout: Duration,
    /// No turn starts later than this after the step started; the step ends by
    /// `max_duration + turn_timeout + 10 s` whatever happens.
    pub max_duration: Duration,
    /// Server process to charge CPU time to (Linux `/proc/<pid>/stat`).
    pub server_pid: Option<u32>,
    /// Turns that end early: the caller barges in or hangs up.
    pub churn: Churn,
}

/// Which turns a caller cuts short, drawn per (seed, session, turn) so that a run can be
/// repeated exactly. Percentages of turns; the rest listen to the whole reply.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Churn {
    pub barge_in_pct: u32,
    pub hang_up_pct: u32,
    /// A soak gives each step its own seed, so its steps churn different turns.
    pub seed: u64,
}

impl Churn {
    pub fn ending(&self, session: usize, turn: usize) -> TurnEnding {
        let draw = splitmix64(self.seed ^ ((session as u64) << 32) ^ turn as u64) % 100;
        if draw < u64::from(self.barge_in_pct) {
            TurnEnding::BargedIn
        } else if draw < u64::from(self.barge_in_pct + self.hang_up_pct) {
            TurnEnding::HungUp
        } else {
            TurnEnding::Listened
        }
    }
}

/// A well-mixed 64-bit hash (SplitMix64's finaliser): neighbouring inputs draw unrelated values.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("sessions must be 1..={MAX_SESSIONS}, got {0}")]
    Sessions(usize),
    #[error("turns must be 1..={MAX_TURNS}, got {0}")]
    Turns(usize),
    #[error("no clips to speak")]
    NoClips,
    #[error("duration must be positive")]
    Duration,
    #[error("barge-in and hang-up percentages must add up to at most 100")]
    Churn,
}

impl StepConfig {
    pub fn validate(&self) -> Result<(), RunError> {
        if !(1..=MAX_SESSIONS).contains(&self.sessions) {
            return Err(RunError::Sessions(self.sessions));
        }
        if !(1..=MAX_TURNS).contains(&self.turns) {
            return Err(RunError::Turns(self.turns));
        }
        if self.clips.is_empty() {
            return Err(RunError::NoClips);
        }
        if self.max_duration.is_zero() || self.turn_timeout.is_zero() {
            return Err(RunError::Duration);
        }
        if self.churn.barge_in_pct + self.churn.hang_up_pct > 100 {
            return Err(RunError::Churn);
        }
        Ok(())
    }
}

/// Server CPU time charged to a step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CpuUsage {
    pub server_pid: u32,
    /// utime + stime of the server process over the step.
    pub server_cpu_s: f64,
    /// Sum over sessions of the time their socket was open.
    pub session_minutes: f64,
    pub cpu_s_per_session_minute: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepReport {
    pub concurrency: usize,
    pub wall_s: f64,
    /// `/proc/loadavg` (1, 5, 15 min) at the end of the step, where readable.
    pub load_average: Option<[f64; 3]>,
    /// Worst lag of the client's own frame schedule: if large, the client was the bottleneck.
    pub client_max_send_lag_ms: f64,
    pub cpu: Option<CpuUsage>,
    pub summary: StepSummary,
    pub turns: Vec<TurnRecord>,
    pub errors: Vec<ErrorRecord>,
}

/// Clock ticks per second of `/proc/<pid>/stat` times: USER_HZ is 100 on every Linux ABI
/// we run on (the kernel exports it as a fixed constant, whatever CONFIG_HZ is).
const USER_HZ: f64 = 100.0;

/// utime + stime of a process in seconds, `None` off Linux or for a missing process.
pub fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields restart after ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) sit at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

pub fn load_average() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Runs `config.sessions` sessions, staggered, each speaking `config.turns` clips.
pub async fn run_step(config: &StepConfig) -> Result<StepReport, RunError> {
    config.validate()?;
    let origin = Instant::now();
    let start = tokio::time::Instant::now();
    let cpu_before = config.server_pid.and_then(process_cpu_s);
    let no_turns_after = origin + config.max_duration;
    let hard_stop = start + config.max_duration + config.turn_timeout + Duration::from_secs(10);
    let mut tasks = Vec::with_capacity(config.sessions);
    for index in 0..config.sessions {
        let turns = (0..config.turns)
            .map(|k| config.clips[(index + k) % config.clips.len()].clone())
            .collect();
        let plan = SessionPlan {
            index,
            turns,
            endings: (0..config.turns)
                .map(|k| config.churn.ending(index, k))
                .collect(),
            lead_in: config.lead_in,
            gap: config.gap,
            turn_timeout: config.turn_timeout,
            no_turns_after,
            origin,
        };
        let endpoint = config.endpoint.clone();
        let start_at = start + config.stagger * index as u32;
        tasks.push(tokio::spawn(async move {
            run_session(&endpoint, plan, start_at, hard_stop).await
        }));
    }
    let mut turns = Vec::new();
    let mut errors = Vec::new();
    let mut session_s = 0.0;
    let mut lag: f64 = 0.0;
    for task in tasks {
        // A session task only ends by returning (it never panics on server input).
        let outcome = task.await.expect("session task completed");
        turns.extend(outcome.turns);
        errors.extend(outcome.errors);
        session_s += outcome.connected_s;
        lag = lag.max(outcome.max_send_lag_ms);
    }
    turns.sort_by_key(|t| (t.session, t.turn));
    let cpu = match (config.server_pid, cpu_before) {
        (Some(pid), Some(before)) => process_cpu_s(pid).map(|after| {
            let session_minutes = session_s / 60.0;
            CpuUsage {
                server_pid: pid,
                server_cpu_s: after - before,
                session_minutes,
                cpu_s_per_session_minute: if session_minutes > 0.0 {
                    (after - before) / session_minutes
                } else {
                    0.0
                },
            }
        }),
        _ => None,
    };
    Ok(StepReport {
        concurrency: config.sessions,
        wall_s: origin.elapsed().as_secs_f64(),
        load_average: load_average(),
        client_max_send_lag_ms: lag,
        cpu,
        summary: summarize(&turns, &errors),
        turns,
        errors,
    })
}

/// The step's turns as independent callers, one after another: turn `k` is the only turn of
/// session `k` (clip `k`), each session connected afresh. For turn-taking sets whose
/// utterances repeat one sentence: in one conversation the LLM would read where that sentence
/// ended last time (the recogniser writes a full stop at every pause) and judge the next pause
/// by it. `config.sessions` must be 1.
pub async fn run_fresh_sessions(config: &StepConfig) -> Result<StepReport, RunError> {
    config.validate()?;
    if config.sessions != 1 {
        return Err(RunError::Sessions(config.sessions));
    }
    let origin = Instant::now();
    let mut merged: Option<StepReport> = None;
    for k in 0..config.turns {
        let one = StepConfig {
            clips: vec![config.clips[k % config.clips.len()].clone()],
            turns: 1,
            churn: Churn {
                seed: config.churn.seed ^ k as u64,
                ..config.churn
            },
            ..config.clone()
        };
        let mut step = run_step(&one).await?;
        for t in &mut step.turns {
            t.session = k;
        }
        merged = Some(match merged {
            None => step,
            Some(mut m) => {
                m.turns.append(&mut step.turns);
                m.errors.append(&mut step.errors);
                m.client_max_send_lag_ms =
                    m.client_max_send_lag_ms.max(step.client_max_send_lag_ms);
                m.load_average = step.load_average;
                m.cpu = match (m.cpu, step.cpu) {
                    (Some(a), Some(b)) => {
                        let session_minutes = a.session_minutes + b.session_minutes;
                        let server_cpu_s = a.server_cpu_s + b.server_cpu_s;
                        Some(CpuUsage {
                            server_pid: a.server_pid,
                            server_cpu_s,
                            session_minutes,
                            cpu_s_per_session_minute: if session_minutes > 0.0 {
                                server_cpu_s / session_minutes
                            } else {
                                0.0
                            },
                        })
                    }
                    (a, b) => a.or(b),
                };
                m
            }
        });
    }
    let mut report = merged.expect("validate() admits at least one turn");
    report.wall_s = origin.elapsed().as_secs_f64();
    report.summary = summarize(&report.turns, &report.errors);
    Ok(report)
}

/// How a ramp raises concurrency and when it stops.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RampConfig {
    pub start: usize,
    pub step: usize,
    pub max: usize,
    /// The step fails when its p95 TTFB exceeds this.
    pub p95_ttfb_threshold_ms: f64,
    /// Judge steps on TTFB, errors and missing replies only (for boxes where even one
    /// session's replies underrun, so the ramp still shows how TTFB grows).
    pub allow_underruns: bool,
    /// A step fails when its transcript WER exceeds the first step's by more than this
    /// (a fraction: 0.01 is one percentage point).
    pub max_wer_increase: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RampOutcome {
    #[serde(flatten)]
    pub config: RampConfig,
    /// Highest concurrency whose step passed; `None` if even the first failed.
    pub capacity: Option<usize>,
    /// Why the ramp stopped (the first failing check, or the ramp's maximum).
    pub stopped_because: String,
}

/// Why a step fails the ramp's bar, or `None` when it passes. `baseline_wer`: the first
/// step's transcript WER.
pub fn step_failure(
    step: &StepReport,
    ramp: &RampConfig,
    baseline_wer: Option<f64>,
) -> Option<String> {
    let threshold_ms = ramp.p95_ttfb_threshold_ms;
    let s = &step.summary;
    if let (Some(base), Some(wer)) = (baseline_wer, s.transcript_wer)
        && wer > base + ramp.max_wer_increase
    {
        return Some(format!(
            "transcript WER {:.1} % > {:.1} % + {:.1} points at {} sessions",
            wer * 100.0,
            base * 100.0,
            ramp.max_wer_increase * 100.0,
            step.concurrency
        ));
    }
    if s.errors > 0 {
        return Some(format!(
            "{} errors at {} sessions",
            s.errors, step.concurrency
        ));
    }
    if s.turns == 0 || s.turns_with_audio < s.turns {
        return Some(format!(
            "{} of {} turns got reply audio at {} sessions",
            s.turns_with_audio, s.turns, step.concurrency
        ));
    }
    if s.underruns > 0 && !ramp.allow_underruns {
        return Some(format!(
            "{} underruns at {} sessions",
            s.underruns, step.concurrency
        ));
    }
    let p95 = Recorder::record_all(step.turns.iter().filter_map(|t| t.ttfb_ms)).quantile_ms(0.95);
    match p95 {
        Some(p95) if p95 > threshold_ms => Some(format!(
            "p95 TTFB {p95:.0} ms > {threshold_ms:.0} ms at {} sessions",
            step.concurrency
        )),
        _ => None,
    }
}

/// Raises concurrency from `ramp.start` by `ramp.step` until a step fails or `ramp.max` passes.
/// `on_step` sees each step as it finishes (progress output).
pub async fn run_ramp(
    base: &StepConfig,
    ramp: &RampConfig,
    mut on_step: impl FnMut(&StepReport),
) -> Result<(Vec<StepReport>, RampOutcome), RunError> {
    let mut steps = Vec::new();
    let mut capacity = None;
    let mut n = ramp.start.max(1);
    let stopped_because = loop {
        let config = StepConfig {
            sessions: n,
            ..base.clone()
        };
        let step = run_step(&config).await?;
        on_step(&step);
        let baseline_wer = steps
            .first()
            .map_or(step.summary.transcript_wer, |s: &StepReport| {
                s.summary.transcript_wer
            });
        let failure = step_failure(&step, ramp, baseline_wer);
        steps.push(step);
        if let Some(why) = failure {
            break why;
        }
        capacity = Some(n);
        if n >= ramp.max {
            break format!("reached the ramp maximum of {} sessions", ramp.max);
        }
        n = (n + ramp.step.max(1)).min(ramp.max);
    };
    Ok((
        steps,
        RampOutcome {
            config: ramp.clone(),
            capacity,
            stopped_because,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_cpu_time_is_readable() {
        let pid = std::process::id();
        let before = process_cpu_s(pid).expect("/proc/self/stat");
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_s(pid).unwrap() >= before);
        assert!(load_average().is_some());
    }

    #[test]
    fn churn_draws_its_shares_and_repeats_for_a_seed() {
        let churn = Churn {
            barge_in_pct: 20,
            hang_up_pct: 10,
            seed: 7,
        };
        let draws: Vec<TurnEnding> = (0..100)
            .flat_map(|s| (0..100).map(move |t| churn.ending(s, t)))
            .collect();
        let share = |e| draws.iter().filter(|&&d| d == e).count() as f64 / draws.len() as f64;
        assert!((share(TurnEnding::BargedIn) - 0.2).abs() < 0.02);
        assert!((share(TurnEnding::HungUp) - 0.1).abs() < 0.02);
        assert_eq!(churn.ending(3, 4), churn.ending(3, 4));
        let other = Churn { seed: 8, ..churn };
        assert!((0..100).any(|t| churn.ending(0, t) != other.ending(0, t)));
        assert_eq!(Churn::default().ending(1, 2), TurnEnding::Listened);
    }
}
