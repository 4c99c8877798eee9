//! Liveness and readiness, as load balancers and Kubernetes probe them.
//!
//! `/healthz` (liveness): 200 while every engine can serve, 503 once one has failed (restart
//! the process). `/readyz` (readiness): also 503 while a new session would be refused for
//! capacity (no admission permit, or an engine with no free lease), so a balancer sends the
//! next caller elsewhere, and while the server drains for shutdown (see [`crate::drain`]).
//! Both answer the same JSON report.

use antiphon_models::engine::EngineHealth;
use axum::http::StatusCode;
use serde_json::{Value, json};

/// A snapshot of the server's capacity and engines.
#[derive(Debug, Clone)]
pub struct Report {
    /// Admission: sessions open and the most allowed.
    pub sessions_open: usize,
    pub sessions_max: usize,
    pub engines: Vec<(&'static str, EngineHealth)>,
    /// An engine further behind real time than this (ms: caller audio waiting for the ASR, the
    /// longest a reply has waited for the LLM) admits no new session until it catches up
    /// (`server.max_engine_backlog_ms`).
    pub max_backlog_ms: u64,
    /// The server is draining for shutdown: it admits nobody, whatever it has free.
    pub draining: bool,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.engines.iter().any(|(_, h)| h.failure.is_some())
    }

    /// A new session would be admitted now.
    pub fn ready(&self) -> bool {
        self.free_sessions() > 0
    }

    /// The first engine behind real time, with its backlog in ms.
    pub fn behind(&self) -> Option<(&'static str, u64)> {
        self.engines.iter().find_map(|(name, h)| {
            h.backlog_ms
                .filter(|&ms| ms > self.max_backlog_ms)
                .map(|ms| (*name, ms))
        })
    }

    /// The most sessions this server holds at once: the fewest among the admission permits
    /// and every engine's leases.
    pub fn session_capacity(&self) -> usize {
        self.engines
            .iter()
            .filter_map(|(_, h)| h.capacity)
            .fold(self.sessions_max, usize::min)
    }

    /// How many more sessions would be admitted now: the fewest free among the admission
    /// permits and every engine's leases (0 once an engine has failed or is behind, or while
    /// draining).
    pub fn free_sessions(&self) -> usize {
        if self.draining || self.failed() || self.behind().is_some() {
            return 0;
        }
        self.engines
            .iter()
            .filter_map(|(_, h)| h.capacity.map(|c| c.saturating_sub(h.in_use)))
            .fold(
                self.sessions_max.saturating_sub(self.sessions_open),
                usize::min,
            )
    }

    pub fn to_json(&self) -> Value {
        let engines: Vec<Value> = self
            .engines
            .iter()
            .map(|(name, h)| {
                let mut e = json!({
                    "name": name,
                    "state": if h.failure.is_some() { "failed" } else { "running" },
                    "in_use": h.in_use,
                });
                if let Some(c) = h.capacity {
                    e["capacity"] = json!(c);
                    e["free"] = json!(c.saturating_sub(h.in_use));
                }
                if let Some(ms) = h.backlog_ms {
                    e["backlog_ms"] = json!(ms);
                    e["behind"] = json!(ms > self.max_backlog_ms);
                }
                if let Some(why) = &h.failure {
                    e["error"] = json!(why);
                }
                e
            })
            .collect();
        json!({
            "status": if self.failed() { "failed" } else { "ok" },
            "ready": self.ready(),
            "draining": self.draining,
            "sessions": {
                "open": self.sessions_open,
                "capacity": self.sessions_max,
                "free": self.sessions_max.saturating_sub(self.sessions_open),
            },
            "engines": engines,
        })
    }

    /// The status code of `/healthz`.
    pub fn liveness(&self) -> StatusCode {
        if self.failed() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    }

    /// The status code of `/readyz`.
    pub fn readiness(&self) -> StatusCode {
        if self.ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// The report as Prometheus gauges, read at scrape time: engine slots, backlog and the
/// node's readiness (for a fleet dashboard next to the counters of [`crate::metrics`]).
pub fn render_metrics(report: &Report, node: &str) -> String {
    use std::fmt::Write as _;
    let node_label = if node.is_empty() {
        String::new()
    } else {
        format!("node=\"{node}\",")
    };
    let mut out = String::new();
    let mut family = |name: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in rows {
            let labels = format!("{node_label}{labels}");
            let labels = labels.trim_end_matches(',');
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    };
    let per_engine = |f: &dyn Fn(&EngineHealth) -> Option<f64>| -> Vec<(String, f64)> {
        report
            .engines
            .iter()
            .filter_map(|(name, h)| f(h).map(|v| (format!("engine=\"{name}\""), v)))
            .collect()
    };
    family(
        "antiphon_engine_slots_in_use",
        "Engine slots leased to sessions, by engine.",
        per_engine(&|h| Some(h.in_use as f64)),
    );
    family(
        "antiphon_engine_slots",
        "Engine slots, by engine (engines without a slot table have none).",
        per_engine(&|h| h.capacity.map(|c| c as f64)),
    );
    family(
        "antiphon_engine_backlog_seconds",
        "How far an engine is behind real time (ASR: caller audio waiting; LLM: the longest a reply has waited for its next token).",
        per_engine(&|h| h.backlog_ms.map(|ms| ms as f64 / 1e3)),
    );
    family(
        "antiphon_ready",
        "1 while a new session would be admitted (/readyz 200).",
        vec![(String::new(), f64::from(u8::from(report.ready())))],
    );
    family(
        "antiphon_draining",
        "1 while the server drains for shutdown.",
        vec![(String::new(), f64::from(u8::from(report.draining)))],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(failure: Option<&str>, capacity: Option<usize>, in_use: usize) -> EngineHealth {
        EngineHealth {
            failure: failure.map(str::to_string),
            capacity,
            in_use,
            backlog_ms: None,
        }
    }

    fn report(engines: Vec<(&'static str, EngineHealth)>, open: usize) -> Report {
        Report {
            sessions_open: open,
            sessions_max: 4,
            engines,
            max_backlog_ms: 2000,
            draining: false,
        }
    }

    #[test]
    fn engine_state_renders_as_gauges() {
        let mut asr = engine(None, Some(16), 2);
        asr.backlog_ms = Some(250);
        let r = report(vec![("asr", asr), ("tts", engine(None, None, 1))], 2);
        let text = render_metrics(&r, "node-a");
        for line in [
            "antiphon_engine_slots_in_use{node=\"node-a\",engine=\"asr\"} 2\n",
            "antiphon_engine_slots_in_use{node=\"node-a\",engine=\"tts\"} 1\n",
            "antiphon_engine_slots{node=\"node-a\",engine=\"asr\"} 16\n",
            "antiphon_engine_backlog_seconds{node=\"node-a\",engine=\"asr\"} 0.25\n",
            "antiphon_ready{node=\"node-a\"} 1\n",
            "antiphon_draining{node=\"node-a\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            !text.contains("engine=\"tts\"} 0.")
                && !text.contains("slots{node=\"node-a\",engine=\"tts\"")
        );
        assert!(render_metrics(&r, "").contains("\nantiphon_ready 1\n"));
    }

    #[test]
    fn a_draining_server_is_alive_but_not_ready() {
        let mut r = report(vec![("llm", engine(None, Some(4), 0))], 0);
        assert_eq!(r.session_capacity(), 4);
        r.draining = true;
        assert_eq!(r.free_sessions(), 0);
        assert_eq!(r.liveness(), StatusCode::OK);
        assert_eq!(r.readiness(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.to_json()["draining"], true);
        assert_eq!(r.to_json()["status"], "ok");
    }

    #[test]
    fn an_engine_behind_real_time_fails_readiness_until_it_catches_up() {
        let asr = |backlog| EngineHealth {
            backlog_ms: Some(backlog),
            ..engine(None, Some(4), 1)
        };
        let behind = report(vec![("asr", asr(3500))], 1);
        assert_eq!(behind.behind(), Some(("asr", 3500)));
        assert_eq!(behind.free_sessions(), 0);
        assert_eq!(behind.readiness(), StatusCode::SERVICE_UNAVAILABLE);
        // Behind is not broken: liveness stays up.
        assert_eq!(behind.liveness(), StatusCode::OK);
        assert_eq!(behind.to_json()["engines"][0]["behind"], true);
        let caught_up = report(vec![("asr", asr(400))], 1);
        assert_eq!(caught_up.behind(), None);
        assert_eq!(caught_up.free_sessions(), 3);
        assert_eq!(caught_up.to_json()["engines"][0]["backlog_ms"], 400);
    }

    #[test]
    fn a_failed_engine_fails_liveness_and_readiness() {
        let r = report(
            vec![
                ("asr", engine(None, Some(4), 0)),
                ("llm", engine(Some("a forward pass failed"), Some(4), 0)),
            ],
            0,
        );
        assert_eq!(r.liveness(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.readiness(), StatusCode::SERVICE_UNAVAILABLE);
        let j = r.to_json();
        assert_eq!(j["status"], "failed");
        assert_eq!(j["engines"][1]["state"], "failed");
        assert_eq!(j["engines"][1]["error"], "a forward pass failed");
    }

    #[test]
    fn a_full_engine_or_admission_fails_readiness_only() {
        let full = report(vec![("llm", engine(None, Some(1), 1))], 1);
        assert_eq!(full.liveness(), StatusCode::OK);
        assert_eq!(full.readiness(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(full.to_json()["engines"][0]["free"], 0);
        let admission_full = report(vec![("tts", engine(None, None, 0))], 4);
        assert_eq!(admission_full.readiness(), StatusCode::SERVICE_UNAVAILABLE);
        let fine = report(vec![("llm", engine(None, Some(2), 1))], 1);
        assert_eq!(fine.readiness(), StatusCode::OK);
        assert_eq!(fine.to_json()["ready"], true);
        assert_eq!(fine.to_json()["sessions"]["free"], 3);
        // One more session fits: the LLM's one free lease bounds the three free permits.
        assert_eq!(fine.free_sessions(), 1);
    }
}
