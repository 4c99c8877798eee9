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
struct Buckets {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Registry {
    counters: BTreeMap<(Counter, Labels), u64>,
    gauges: BTreeMap<(Gauge, Labels), i64>,
    histograms: BTreeMap<(Histogram, Labels), Buckets>,
}

/// Declares a metric kind: an enum whose every variant is one exported family with its name
/// and help text. `ALL` lists them for `render`, so a series the code can record cannot be
/// missing from `/metrics`.
macro_rules! families {
    ($kind:ident, $type:literal, { $($variant:ident => $name:literal, $help:literal;)+ }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        pub enum $kind {
            $($variant,)+
        }

        impl $kind {
            pub const ALL: &[$kind] = &[$($kind::$variant,)+];
            pub const TYPE: &str = $type;

            pub fn name(self) -> &'static str {
                match self {
                    $($kind::$variant => $name,)+
                }
            }

            pub fn help(self) -> &'static str {
                match self {
                    $($kind::$variant => $help,)+
                }
            }
        }
    };
}

families!(Counter, "counter", {
    SessionsAdmitted => "antiphon_sessions_admitted_total",
        "Sessions admitted (every transport).";
    SessionsRefused => "antiphon_sessions_refused_total",
        "Sessions refused at admission, by reason (capacity, engines, engine_backlog, rtp_ports, draining).";
    Turns => "antiphon_turns_total", "Agent responses started.";
    ResponsesCancelled => "antiphon_responses_cancelled_total",
        "Responses cancelled (barge-in or client).";
    Errors => "antiphon_errors_total", "Error events sent to clients, by code.";
    AudioDroppedSeconds => "antiphon_audio_dropped_seconds_total",
        "Caller audio an engine dropped because it fell behind real time (words lost; the caller gets an error event), by engine.";
    DroppedFrames => "antiphon_dropped_frames_total",
        "Audio dropped: rejected appends and full engine queues.";
    StaleOutputsDropped => "antiphon_stale_outputs_dropped_total",
        "Engine outputs dropped because their epoch was stale.";
    Speculations => "antiphon_speculative_replies_total",
        "Replies begun on a caller's pause before the turn was certain, by outcome (started, adopted at the endpoint, withdrawn unheard).";
    TurnJudgements => "antiphon_turn_judgements_total",
        "Caller pauses judged by semantic turn detection, by verdict (done: the turn ended; not_done: the caller was given more time; vetoed: it sounded done but the transcript stops mid-sentence).";
    TurnsMerged => "antiphon_turns_merged_total",
        "Cut-ins caught: the caller spoke again within a second of the turn's commit, so the two halves became one user item and the reply to the first half was dropped.";
    TwilioProtocolErrors => "antiphon_twilio_protocol_errors_total",
        "Twilio Media Streams input rejected (malformed, out of order, wrong format), by code.";
    Dtmf => "antiphon_dtmf_total", "DTMF key presses that reached a session (every transport).";
    PlayoutClears => "antiphon_playout_clears_total",
        "Barge-ins that cleared reply audio queued at the far end.";
    SipMalformed => "antiphon_sip_malformed_total",
        "SIP datagrams dropped as malformed.";
    SipInvitesDropped => "antiphon_sip_invites_dropped_total",
        "New INVITEs dropped unanswered: over their source's rate or unacknowledged-call cap.";
    SipDtmf => "antiphon_sip_dtmf_total", "DTMF key presses received on SIP calls (RFC 4733).";
    SipBargeIn => "antiphon_sip_barge_in_total",
        "SIP replies cut short because the caller spoke over them.";
    SipPlayoutUnderruns => "antiphon_sip_playout_underruns_total",
        "Times a SIP reply ran dry mid-reply (silence filled the gap).";
    RtpMalformed => "antiphon_rtp_malformed_total",
        "RTP, RTCP or telephone-event packets dropped as malformed, by kind.";
    RtpPackets => "antiphon_rtp_packets_total",
        "RTP packets of SIP calls, by direction (in, out); added when each call ends.";
    RtcpPackets => "antiphon_rtcp_packets_total",
        "Valid RTCP packets received on SIP calls; added when each call ends.";
    JitterPackets => "antiphon_sip_jitter_packets_total",
        "SIP caller audio the jitter buffer did not play in order, by outcome (lost: concealed, late: arrived after its turn, duplicate, overflow: the buffer was full); added when each call ends.";
    SipPlayoutOverflowBytes => "antiphon_sip_playout_overflow_bytes_total",
        "Reply audio bytes a SIP call's playout queue could not hold (dropped); added when each call ends.";
    RtpDropped => "antiphon_rtp_dropped_total",
        "Well-formed RTP dropped, by reason (payload_type, source).";
    HttpConnectionsRefused => "antiphon_http_connections_refused_total",
        "TCP connections answered 503 and closed because server.max_connections were open.";
});

families!(Gauge, "gauge", {
    Sessions => "antiphon_sessions", "Sessions currently open.";
    QueueDepth => "antiphon_queue_depth",
        "Messages waiting in session queues, summed over sessions.";
    HttpConnections => "antiphon_http_connections",
        "TCP connections open on the HTTP listener (WebSockets included).";
});

families!(Histogram, "histogram", {
    TurnLatency => "antiphon_turn_latency_seconds",
        "Turn stage latency after user speech end (or response.create).";
});

#[derive(Debug, Default)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// `server.node_id`: a `node` label on every series when set (one fleet, one dashboard).
    node: String,
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

    /// Metrics of the node named `node` (empty: no `node` label).
    pub fn for_node(node: &str) -> Self {
        Metrics {
            node: node.to_string(),
            ..Metrics::default()
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        // A panic while holding this lock cannot leave the maps inconsistent (single inserts),
        // so a poisoned lock is still usable.
        let mut guard = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn add(&self, name: Counter, transport: &str, extra: &[(&'static str, &str)], n: u64) {
        self.with(|r| {
            *r.counters
                .entry((name, labels(transport, extra)))
                .or_default() += n
        });
    }

    pub fn gauge_add(
        &self,
        name: Gauge,
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
        name: Histogram,
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
    pub fn gauge(&self, name: Gauge, transport: &str) -> i64 {
        self.with(|r| {
            r.gauges
                .get(&(name, labels(transport, &[])))
                .copied()
                .unwrap_or(0)
        })
    }

    /// The Prometheus text exposition of every family, and every series recorded in it.
    pub fn render(&self) -> String {
        self.with(|r| {
            let mut out = String::new();
            for &c in Counter::ALL {
                header(&mut out, c.name(), Counter::TYPE, c.help());
                for ((_, l), v) in r.counters.iter().filter(|((k, _), _)| *k == c) {
                    let _ = if c == Counter::AudioDroppedSeconds {
                        // Counted in whole milliseconds, exported in seconds.
                        writeln!(
                            out,
                            "{}{} {}",
                            c.name(),
                            fmt_labels(&self.node, l, None),
                            *v as f64 / 1e3
                        )
                    } else {
                        writeln!(out, "{}{} {v}", c.name(), fmt_labels(&self.node, l, None))
                    };
                }
            }
            for &g in Gauge::ALL {
                header(&mut out, g.name(), Gauge::TYPE, g.help());
                for ((_, l), v) in r.gauges.iter().filter(|((k, _), _)| *k == g) {
                    let _ = writeln!(out, "{}{} {v}", g.name(), fmt_labels(&self.node, l, None));
                }
            }
            for &h in Histogram::ALL {
                let name = h.name();
                header(&mut out, name, Histogram::TYPE, h.help());
                for ((_, l), b) in r.histograms.iter().filter(|((k, _), _)| *k == h) {
                    for (bound, c) in LATENCY_BUCKETS.iter().zip(b.counts) {
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {c}",
                            fmt_labels(&self.node, l, Some(&bound.to_string()))
                        );
                    }
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        fmt_labels(&self.node, l, Some("+Inf")),
                        b.count
                    );
                    let _ = writeln!(
                        out,
                        "{name}_sum{} {}",
                        fmt_labels(&self.node, l, None),
                        b.sum
                    );
                    let _ = writeln!(
                        out,
                        "{name}_count{} {}",
                        fmt_labels(&self.node, l, None),
                        b.count
                    );
                }
            }
            out
        })
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn fmt_labels(node: &str, l: &Labels, le: Option<&str>) -> String {
    let node = (!node.is_empty()).then(|| ("node", node.to_string()));
    let mut parts: Vec<String> = node
        .iter()
        .chain(l.iter())
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
    fn a_named_node_labels_every_series() {
        let m = Metrics::for_node("node-a");
        m.add(Counter::Errors, "websocket", &[("code", "invalid_json")], 1);
        m.observe(Histogram::TurnLatency, "sip", &[], Duration::from_millis(5));
        let text = m.render();
        assert!(text.contains(
            "antiphon_errors_total{node=\"node-a\",transport=\"websocket\",code=\"invalid_json\"} 1\n"
        ));
        assert!(text.contains(
            "antiphon_turn_latency_seconds_bucket{node=\"node-a\",transport=\"sip\",le=\"+Inf\"} 1\n"
        ));
        assert!(!Metrics::new().render().contains("node="));
    }

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::new();
        m.gauge_add(Gauge::Sessions, "websocket", &[], 2);
        m.gauge_add(Gauge::Sessions, "websocket", &[], -1);
        m.add(Counter::Errors, "websocket", &[("code", "invalid_json")], 3);
        m.observe(
            Histogram::TurnLatency,
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
        assert_eq!(m.gauge(Gauge::Sessions, "websocket"), 1);
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.add(Counter::Errors, "x\"y", &[], 1);
        assert!(m.render().contains("transport=\"x\\\"y\""));
    }

    /// Every family the code can record shows up in `/metrics` once recorded: the families
    /// are the enums' variants, and `render` walks `ALL`. Also checks `ALL` is complete and
    /// names are unique, exported-style and typed right.
    #[test]
    fn every_metric_the_code_can_record_is_rendered() {
        let m = Metrics::new();
        for &c in Counter::ALL {
            m.add(c, "probe", &[], 1);
        }
        for &g in Gauge::ALL {
            m.gauge_add(g, "probe", &[], 1);
        }
        for &h in Histogram::ALL {
            m.observe(h, "probe", &[], Duration::from_millis(10));
        }
        let text = m.render();
        let mut names = std::collections::BTreeSet::new();
        let series = |name: &str| format!("{name}{{transport=\"probe\"}} 1\n");
        for &c in Counter::ALL {
            // Counted in ms, exported in seconds.
            let one = if c == Counter::AudioDroppedSeconds {
                format!("{}{{transport=\"probe\"}} 0.001\n", c.name())
            } else {
                series(c.name())
            };
            assert!(text.contains(&one), "{} missing:\n{text}", c.name());
            assert!(text.contains(&format!("# TYPE {} counter\n", c.name())));
            assert!(c.name().ends_with("_total"), "{}", c.name());
            names.insert(c.name());
        }
        for &g in Gauge::ALL {
            assert!(
                text.contains(&series(g.name())),
                "{} missing:\n{text}",
                g.name()
            );
            assert!(text.contains(&format!("# TYPE {} gauge\n", g.name())));
            names.insert(g.name());
        }
        for &h in Histogram::ALL {
            let count = format!("{}_count{{transport=\"probe\"}} 1\n", h.name());
            assert!(text.contains(&count), "{} missing:\n{text}", h.name());
            names.insert(h.name());
        }
        assert_eq!(
            names.len(),
            Counter::ALL.len() + Gauge::ALL.len() + Histogram::ALL.len(),
            "a metric name is used twice"
        );
        assert!(names.iter().all(|n| n.starts_with("antiphon_")));
    }
}
