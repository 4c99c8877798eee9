//! Process metrics, rendered in the Prometheus text format at `/metrics`.
//!
//! One registry owned by the server state (no globals); every series carries a `transport`
//! label so WebRTC, SIP and Twilio legs can share the names later.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Buckets (seconds) for the per-stage turn latency histograms.
const LATENCY_BUCKETS: [f64; 14] = [
    0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Registry {
    counters: BTreeMap<(&'static str, Labels), u64>,
    gauges: BTreeMap<(&'static str, Labels), i64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
}

/// Help text of every metric family we export, in output order.
const FAMILIES: &[(&str, &str, &str)] = &[
    ("antiphon_sessions", "gauge", "Sessions currently open."),
    (
        "antiphon_sessions_refused_total",
        "counter",
        "Sessions refused at admission (capacity).",
    ),
    (
        "antiphon_turns_total",
        "counter",
        "Agent responses started.",
    ),
    (
        "antiphon_responses_cancelled_total",
        "counter",
        "Responses cancelled (barge-in or client).",
    ),
    (
        "antiphon_errors_total",
        "counter",
        "Error events sent to clients, by code.",
    ),
    (
        "antiphon_dropped_frames_total",
        "counter",
        "Audio dropped: rejected appends and full engine queues.",
    ),
    (
        "antiphon_stale_outputs_dropped_total",
        "counter",
        "Engine outputs dropped because their epoch was stale.",
    ),
    (
        "antiphon_queue_depth",
        "gauge",
        "Messages waiting in session queues, summed over sessions.",
    ),
    (
        "antiphon_twilio_protocol_errors_total",
        "counter",
        "Twilio Media Streams input rejected (malformed, out of order, wrong format), by code.",
    ),
    (
        "antiphon_dtmf_total",
        "counter",
        "DTMF key presses received from callers.",
    ),
    (
        "antiphon_playout_clears_total",
        "counter",
        "Barge-ins that cleared reply audio queued at the far end.",
    ),
    (
        "antiphon_turn_latency_seconds",
        "histogram",
        "Turn stage latency after user speech end (or response.create).",
    ),
];

#[derive(Debug, Default)]
pub struct Metrics {
    registry: Mutex<Registry>,
}

fn labels(transport: &str, extra: &[(&'static str, &str)]) -> Labels {
    let mut l = vec![("transport", transport.to_string())];
    l.extend(extra.iter().map(|(k, v)| (*k, (*v).to_string())));
    l
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        // A panic while holding this lock cannot leave the maps inconsistent (single inserts),
        // so a poisoned lock is still usable.
        let mut guard = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn add(&self, name: &'static str, transport: &str, extra: &[(&'static str, &str)], n: u64) {
        self.with(|r| {
            *r.counters
                .entry((name, labels(transport, extra)))
                .or_default() += n
        });
    }

    pub fn gauge_add(
        &self,
        name: &'static str,
        transport: &str,
        extra: &[(&'static str, &str)],
        delta: i64,
    ) {
        self.with(|r| {
            *r.gauges
                .entry((name, labels(transport, extra)))
                .or_default() += delta
        });
    }

    pub fn observe(
        &self,
        name: &'static str,
        transport: &str,
        extra: &[(&'static str, &str)],
        value: Duration,
    ) {
        let secs = value.as_secs_f64();
        self.with(|r| {
            let h = r
                .histograms
                .entry((name, labels(transport, extra)))
                .or_default();
            for (slot, bound) in h.counts.iter_mut().zip(LATENCY_BUCKETS) {
                if secs <= bound {
                    *slot += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        });
    }

    /// Current value of a gauge.
    #[cfg(test)]
    pub fn gauge(&self, name: &'static str, transport: &str) -> i64 {
        self.with(|r| {
            r.gauges
                .get(&(name, labels(transport, &[])))
                .copied()
                .unwrap_or(0)
        })
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        self.with(|r| {
            let mut out = String::new();
            for (family, kind, help) in FAMILIES {
                let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
                for ((name, l), v) in &r.counters {
                    if name == family {
                        let _ = writeln!(out, "{name}{} {v}", fmt_labels(l, None));
                    }
                }
                for ((name, l), v) in &r.gauges {
                    if name == family {
                        let _ = writeln!(out, "{name}{} {v}", fmt_labels(l, None));
                    }
                }
                for ((name, l), h) in &r.histograms {
                    if name == family {
                        for (bound, c) in LATENCY_BUCKETS.iter().zip(h.counts) {
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {c}",
                                fmt_labels(l, Some(&bound.to_string()))
                            );
                        }
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {}",
                            fmt_labels(l, Some("+Inf")),
                            h.count
                        );
                        let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(l, None), h.sum);
                        let _ = writeln!(out, "{name}_count{} {}", fmt_labels(l, None), h.count);
                    }
                }
            }
            out
        })
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn fmt_labels(l: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::new();
        m.gauge_add("antiphon_sessions", "websocket", &[], 2);
        m.gauge_add("antiphon_sessions", "websocket", &[], -1);
        m.add(
            "antiphon_errors_total",
            "websocket",
            &[("code", "invalid_json")],
            3,
        );
        m.observe(
            "antiphon_turn_latency_seconds",
            "websocket",
            &[("stage", "first_audio_sent")],
            Duration::from_millis(120),
        );
        let text = m.render();
        assert!(
            text.contains("antiphon_sessions{transport=\"websocket\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "antiphon_errors_total{transport=\"websocket\",code=\"invalid_json\"} 3\n"
            )
        );
        assert!(text.contains(
            "antiphon_turn_latency_seconds_bucket{transport=\"websocket\",stage=\"first_audio_sent\",le=\"0.1\"} 0\n"
        ));
        assert!(text.contains(
            "antiphon_turn_latency_seconds_bucket{transport=\"websocket\",stage=\"first_audio_sent\",le=\"0.15\"} 1\n"
        ));
        assert!(text.contains("antiphon_turn_latency_seconds_count{transport=\"websocket\",stage=\"first_audio_sent\"} 1\n"));
        assert!(text.contains("# TYPE antiphon_turns_total counter"));
        assert_eq!(m.gauge("antiphon_sessions", "websocket"), 1);
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.add("antiphon_errors_total", "x\"y", &[], 1);
        assert!(m.render().contains("transport=\"x\\\"y\""));
    }
}
