//! HAProxy's `agent-check`: a TCP port that answers one line with this node's state, so
//! HAProxy weighs nodes by their free capacity rather than by connection count.
//!
//! The line (HAProxy's agent protocol): `up ready N%` with N the share of this node's session
//! capacity still free (0 % when full or an engine is behind: HAProxy sends it no new session
//! while another node has room), `drain` while draining, `down` once an engine has failed.
//! HAProxy connects, reads the line and closes; nothing is read from it.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;

use crate::app::AppState;
use crate::health::Report;

/// The agent line for a health report.
pub fn answer(report: &Report) -> String {
    if report.failed() {
        return "down\n".into();
    }
    if report.draining {
        return "drain\n".into();
    }
    let capacity = report.session_capacity();
    let free = report.free_sessions();
    // Rounded up: one free session of 64 is 2 %, not 0 % (which would read as full).
    let percent = if capacity == 0 {
        0
    } else {
        (free * 100).div_ceil(capacity)
    };
    format!("up ready {percent}%\n")
}

/// A stuck peer cannot hold the loop: the line is a few bytes, written or given up on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers agent checks on `listener` until the process ends.
pub async fn serve(listener: TcpListener, state: Arc<AppState>) {
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "agent-check accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let line = answer(&state.health());
        let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
            let _ = stream.write_all(line.as_bytes()).await;
            let _ = stream.shutdown().await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use antiphon_models::engine::EngineHealth;

    fn report(open: usize, llm_in_use: usize) -> Report {
        Report {
            sessions_open: open,
            sessions_max: 64,
            engines: vec![(
                "llm",
                EngineHealth {
                    failure: None,
                    capacity: Some(4),
                    in_use: llm_in_use,
                    backlog_ms: None,
                },
            )],
            max_backlog_ms: 2000,
            draining: false,
        }
    }

    #[test]
    fn the_weight_is_the_free_share_of_the_scarcest_capacity() {
        assert_eq!(answer(&report(0, 0)), "up ready 100%\n");
        // The LLM's 4 leases bound capacity, not the 64 admission permits.
        assert_eq!(answer(&report(1, 1)), "up ready 75%\n");
        assert_eq!(answer(&report(4, 4)), "up ready 0%\n");
        let mut one_of_many = report(63, 0);
        one_of_many.engines.clear();
        assert_eq!(
            answer(&one_of_many),
            "up ready 2%\n",
            "rounded up, not to 0"
        );
    }

    #[test]
    fn draining_and_failure_say_so() {
        let mut r = report(1, 1);
        r.draining = true;
        assert_eq!(answer(&r), "drain\n");
        r.engines[0].1.failure = Some("a forward pass failed".into());
        assert_eq!(answer(&r), "down\n", "a failure outranks a drain");
    }
}
