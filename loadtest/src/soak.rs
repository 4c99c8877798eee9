//! A soak: steps of N sessions back to back for a duration. Every step's sessions connect,
//! talk and hang up, so sessions keep coming and going; between steps (nobody connected) the
//! server process is sampled: RSS, threads, open file descriptors (Linux `/proc`), and its
//! `/healthz` report (sessions open, engine leases in use).
//!
//! Pass: no failed turn, every step leaves no session or engine lease behind, descriptors and
//! threads back to where they were after the warm-up, and RSS at most `max_rss_growth` over
//! its value at the end of the warm-up.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::run::{RunError, StepConfig, StepReport, run_step};
use crate::stats::Recorder;

#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub duration: Duration,
    /// Samples before this are the warm-up (caches, pools, the allocator's arenas filling).
    pub warm_up: Duration,
    pub server_pid: u32,
    /// `host:port` of the server's HTTP listener (for `/healthz`).
    pub health_addr: String,
    /// Largest RSS growth after the warm-up that passes (0.05: 5 %).
    pub max_rss_growth: f64,
}

/// Descriptors and threads may differ by this much from the warm-up's without it being a leak
/// (tokio's blocking pool and the allocator come and go); a per-session leak grows by one per
/// session, far past it.
const COUNT_SLACK: u64 = 8;

/// The server process between two steps.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SoakSample {
    /// Seconds since the soak started.
    pub at_s: f64,
    pub rss_mib: f64,
    pub threads: u64,
    pub fds: u64,
    pub sessions_open: u64,
    /// Engine leases held, summed over engines.
    pub leases_in_use: u64,
    /// The step that just ended.
    pub turns: usize,
    pub failed_turns: usize,
    /// Turns of the step the callers cut short on purpose (churn).
    pub barged_in: usize,
    pub hung_up: usize,
    pub ttfb_p50_ms: Option<f64>,
    pub ttfb_p95_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SoakOutcome {
    pub samples: Vec<SoakSample>,
    pub turns: usize,
    pub failed_turns: usize,
    pub barged_in: usize,
    pub hung_up: usize,
    /// Highest RSS after the warm-up over the RSS at its end (0.02: 2 % more).
    pub rss_growth: Option<f64>,
    /// What leaked or failed; empty when the soak passed.
    pub problems: Vec<String>,
}

impl SoakOutcome {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// RSS (MiB), threads and open descriptors of `pid`, from `/proc`.
pub fn process_sample(pid: u32) -> Option<(f64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let rss_kib = field("VmRSS:")?;
    let threads = field("Threads:")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss_kib as f64 / 1024.0, threads, fds))
}

/// `(sessions open, engine leases in use)` from the server's `/healthz`.
pub async fn server_occupancy(addr: &str) -> Option<(u64, u64)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: antiphon\r\n\r\n")
        .await
        .ok()?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut reply))
        .await
        .ok()?
        .ok()?;
    let body = reply.split("\r\n\r\n").nth(1)?;
    let report: serde_json::Value = serde_json::from_str(body).ok()?;
    let open = report["sessions"]["open"].as_u64()?;
    let leases = report["engines"]
        .as_array()?
        .iter()
        .filter_map(|e| e["in_use"].as_u64())
        .sum();
    Some((open, leases))
}

/// Waits (up to 10 s) for the server to release what the step's sessions held.
async fn settled_occupancy(addr: &str) -> Option<(u64, u64)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = server_occupancy(addr).await;
        if now == Some((0, 0)) || tokio::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn failed_turns(step: &StepReport) -> usize {
    step.turns
        .iter()
        .filter(|t| t.error.is_some() || !t.got_audio())
        .count()
        + step.errors.iter().filter(|e| e.turn.is_none()).count()
}

/// Runs `base` steps back to back until `soak.duration` has passed; `on_sample` sees each
/// sample as it is taken (progress output).
pub async fn run_soak(
    base: &StepConfig,
    soak: &SoakConfig,
    mut on_sample: impl FnMut(&SoakSample),
) -> Result<SoakOutcome, RunError> {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut problems = Vec::new();
    let (mut turns, mut failed) = (0, 0);
    let mut step_config = base.clone();
    while started.elapsed() < soak.duration {
        // Each step churns other turns.
        step_config.churn.seed = samples.len() as u64;
        let step = run_step(&step_config).await?;
        let occupancy = settled_occupancy(&soak.health_addr).await;
        let Some((rss_mib, threads, fds)) = process_sample(soak.server_pid) else {
            problems.push(format!(
                "server process {} is gone after {:.0} s",
                soak.server_pid,
                started.elapsed().as_secs_f64()
            ));
            break;
        };
        let (sessions_open, leases_in_use) = occupancy.unwrap_or((u64::MAX, u64::MAX));
        let ttfb = Recorder::record_all(step.turns.iter().filter_map(|t| t.ttfb_ms));
        let sample = SoakSample {
            at_s: started.elapsed().as_secs_f64(),
            rss_mib,
            threads,
            fds,
            sessions_open,
            leases_in_use,
            turns: step.turns.len(),
            failed_turns: failed_turns(&step),
            barged_in: step.summary.barged_in,
            hung_up: step.summary.hung_up,
            ttfb_p50_ms: ttfb.quantile_ms(0.5),
            ttfb_p95_ms: ttfb.quantile_ms(0.95),
        };
        on_sample(&sample);
        turns += sample.turns;
        failed += sample.failed_turns;
        if occupancy != Some((0, 0)) {
            problems.push(format!(
                "after the step ending at {:.0} s: {sessions_open} sessions open and \
                 {leases_in_use} engine leases held with nobody connected (or no /healthz)",
                sample.at_s
            ));
        }
        samples.push(sample);
    }
    if failed > 0 {
        problems.push(format!("{failed} of {turns} turns failed"));
    }
    let rss_growth = judge_growth(&samples, soak, &mut problems);
    let barged_in = samples.iter().map(|s| s.barged_in).sum();
    let hung_up = samples.iter().map(|s| s.hung_up).sum();
    Ok(SoakOutcome {
        samples,
        turns,
        failed_turns: failed,
        barged_in,
        hung_up,
        rss_growth,
        problems,
    })
}

/// RSS, descriptors and threads after the warm-up against their values at its end.
fn judge_growth(
    samples: &[SoakSample],
    soak: &SoakConfig,
    problems: &mut Vec<String>,
) -> Option<f64> {
    let warm_up_s = soak.warm_up.as_secs_f64();
    let baseline = samples
        .iter()
        .rfind(|s| s.at_s <= warm_up_s)
        .or(samples.first())?;
    let after: Vec<&SoakSample> = samples.iter().filter(|s| s.at_s > baseline.at_s).collect();
    let last = after.last()?;
    let peak_rss = after
        .iter()
        .map(|s| s.rss_mib)
        .fold(baseline.rss_mib, f64::max);
    let growth = peak_rss / baseline.rss_mib - 1.0;
    if growth > soak.max_rss_growth {
        problems.push(format!(
            "RSS grew {:.1} % after the warm-up ({:.0} -> {:.0} MiB), over the {:.0} % allowed",
            growth * 100.0,
            baseline.rss_mib,
            peak_rss,
            soak.max_rss_growth * 100.0
        ));
    }
    if last.fds > baseline.fds + COUNT_SLACK {
        problems.push(format!(
            "open descriptors grew from {} to {}",
            baseline.fds, last.fds
        ));
    }
    if last.threads > baseline.threads + COUNT_SLACK {
        problems.push(format!(
            "threads grew from {} to {}",
            baseline.threads, last.threads
        ));
    }
    Some(growth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_s: f64, rss_mib: f64, fds: u64) -> SoakSample {
        SoakSample {
            at_s,
            rss_mib,
            threads: 20,
            fds,
            sessions_open: 0,
            leases_in_use: 0,
            turns: 4,
            failed_turns: 0,
            barged_in: 0,
            hung_up: 0,
            ttfb_p50_ms: Some(500.0),
            ttfb_p95_ms: Some(900.0),
        }
    }

    fn config() -> SoakConfig {
        SoakConfig {
            duration: Duration::from_secs(600),
            warm_up: Duration::from_secs(60),
            server_pid: 0,
            health_addr: String::new(),
            max_rss_growth: 0.05,
        }
    }

    #[test]
    fn growth_is_judged_from_the_end_of_the_warm_up() {
        // Warm-up growth (1000 -> 1500) does not count; 1500 -> 1560 is 4 %.
        let flat = [
            sample(20.0, 1000.0, 40),
            sample(50.0, 1500.0, 42),
            sample(200.0, 1530.0, 41),
            sample(400.0, 1560.0, 43),
        ];
        let mut problems = Vec::new();
        let growth = judge_growth(&flat, &config(), &mut problems).expect("samples");
        assert!((growth - 0.04).abs() < 1e-9, "{growth}");
        assert!(problems.is_empty(), "{problems:?}");

        let leaking = [
            sample(50.0, 1500.0, 40),
            sample(200.0, 1600.0, 60),
            sample(400.0, 1700.0, 80),
        ];
        let mut problems = Vec::new();
        judge_growth(&leaking, &config(), &mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("RSS grew 13.3 %"), "{problems:?}");
        assert!(problems[1].contains("from 40 to 80"), "{problems:?}");
    }

    #[test]
    fn this_process_can_be_sampled() {
        let (rss, threads, fds) = process_sample(std::process::id()).expect("/proc");
        assert!(
            rss > 1.0 && threads >= 1 && fds >= 3,
            "{rss} {threads} {fds}"
        );
    }
}
