//! The run's report: one JSON document (the stable schema) and a self-contained HTML page with
//! inline SVG charts (TTFB CDF per step; in ramp mode, TTFB percentiles vs concurrency).

use std::fmt::Write as _;

use serde::Serialize;

use crate::run::{RampOutcome, StepConfig, StepReport};
use crate::stats::Recorder;

/// Bumped whenever a field is renamed or removed.
pub const SCHEMA: &str = "antiphon-loadtest/1";

/// A clip as the run used it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClipInfo {
    pub name: String,
    pub speech_end_ms: u64,
    pub duration_ms: u64,
}

/// The run's settings, echoed so a report explains itself.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunSettings {
    pub sessions: usize,
    pub turns: usize,
    pub stagger_ms: u64,
    pub lead_in_ms: u64,
    pub gap_ms: u64,
    pub turn_timeout_ms: u64,
    pub max_duration_s: f64,
    pub max_output_tokens: Option<u32>,
    pub transcription_model: Option<String>,
    /// What the sessions asked for (`None`: the server's default).
    pub turn_detection: Option<serde_json::Value>,
    pub clips: Vec<ClipInfo>,
}

impl RunSettings {
    pub fn of(c: &StepConfig) -> Self {
        RunSettings {
            sessions: c.sessions,
            turns: c.turns,
            stagger_ms: c.stagger.as_millis() as u64,
            lead_in_ms: c.lead_in.as_millis() as u64,
            gap_ms: c.gap.as_millis() as u64,
            turn_timeout_ms: c.turn_timeout.as_millis() as u64,
            max_duration_s: c.max_duration.as_secs_f64(),
            max_output_tokens: c.endpoint.max_output_tokens,
            transcription_model: c.endpoint.transcription_model.clone(),
            turn_detection: c.endpoint.turn_detection.clone(),
            clips: c
                .clips
                .iter()
                .map(|c| ClipInfo {
                    name: c.name.clone(),
                    speech_end_ms: c.speech_end_ms,
                    duration_ms: c.duration_ms,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub schema: &'static str,
    pub tool_version: &'static str,
    pub url: String,
    /// Wall-clock start, ms since the Unix epoch.
    pub started_unix_ms: u64,
    pub settings: RunSettings,
    /// One step for a plain run; one per concurrency level in a ramp.
    pub steps: Vec<StepReport>,
    /// Present in ramp mode.
    pub ramp: Option<RampOutcome>,
}

impl Report {
    pub fn new(
        config: &StepConfig,
        started_unix_ms: u64,
        steps: Vec<StepReport>,
        ramp: Option<RampOutcome>,
    ) -> Self {
        Report {
            schema: SCHEMA,
            tool_version: env!("CARGO_PKG_VERSION"),
            url: config.endpoint.url.clone(),
            started_unix_ms,
            settings: RunSettings::of(config),
            steps,
            ramp,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        // Every field is a plain number, string, option or list: serialization cannot fail.
        serde_json::to_value(self).expect("report serializes")
    }

    /// A self-contained HTML page: summary table and inline SVG charts, no scripts.
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>antiphon-loadtest</title>\
             <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
             td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head><body>\
             <h1>antiphon-loadtest</h1><p>Target <code>{}</code>; {} turns per session; TTFB from \
             the true end of speech in the clip to the first reply audio byte.</p>",
            escape(&self.url),
            self.settings.turns
        );
        if let Some(r) = &self.ramp {
            let _ = write!(
                h,
                "<p><b>Capacity: {}</b> (p95 TTFB threshold {:.0} ms, transcript WER at most \
                 {:.1} points over the first step's; stopped because {}).</p>",
                r.capacity
                    .map_or_else(|| "none".to_owned(), |c| format!("{c} sessions")),
                r.config.p95_ttfb_threshold_ms,
                r.config.max_wer_increase * 100.0,
                escape(&r.stopped_because)
            );
        }
        h.push_str(
            "<table><tr><th>sessions</th><th>turns</th><th>with audio</th><th>errors</th>\
             <th>underruns</th><th>TTFB p50</th><th>p90</th><th>p95</th><th>p99</th><th>max</th>\
             <th>ASR final p50</th><th>reply audio p50</th><th>transcript WER</th><th>CPU s / session-min</th>\
             <th>load avg</th></tr>",
        );
        let f = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"));
        for s in &self.steps {
            let m = &s.summary;
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                s.concurrency,
                m.turns,
                m.turns_with_audio,
                m.errors,
                m.underruns,
                f(m.ttfb_ms.p50),
                f(m.ttfb_ms.p90),
                f(m.ttfb_ms.p95),
                f(m.ttfb_ms.p99),
                f(m.ttfb_ms.max),
                f(m.asr_final_ms.p50),
                f(m.reply_audio_ms.p50),
                m.transcript_wer
                    .map_or_else(|| "–".to_owned(), |w| format!("{:.1} %", w * 100.0)),
                s.cpu.as_ref().map_or_else(
                    || "–".to_owned(),
                    |c| format!("{:.1}", c.cpu_s_per_session_minute)
                ),
                s.load_average
                    .map_or_else(|| "–".to_owned(), |l| format!("{:.2}", l[0])),
            );
        }
        h.push_str("</table>");
        let cdfs: Vec<Series> = self
            .steps
            .iter()
            .map(|s| Series {
                name: format!("{} sessions", s.concurrency),
                points: Recorder::record_all(s.turns.iter().filter_map(|t| t.ttfb_ms))
                    .cdf()
                    .into_iter()
                    .map(|(ms, frac)| (ms, frac * 100.0))
                    .collect(),
                step: true,
            })
            .collect();
        h.push_str("<h2>TTFB CDF</h2>");
        h.push_str(&line_chart(
            "TTFB (ms)",
            "% of turns at or below",
            &cdfs,
            None,
        ));
        if self.steps.len() > 1 {
            let pick = |q: f64| -> Vec<(f64, f64)> {
                self.steps
                    .iter()
                    .filter_map(|s| {
                        Recorder::record_all(s.turns.iter().filter_map(|t| t.ttfb_ms))
                            .quantile_ms(q)
                            .map(|v| (s.concurrency as f64, v))
                    })
                    .collect()
            };
            let series = [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)]
                .map(|(name, q)| Series {
                    name: name.into(),
                    points: pick(q),
                    step: false,
                })
                .into_iter()
                .collect::<Vec<_>>();
            let threshold = self.ramp.as_ref().map(|r| r.config.p95_ttfb_threshold_ms);
            h.push_str("<h2>TTFB vs concurrency</h2>");
            h.push_str(&line_chart(
                "concurrent sessions",
                "TTFB (ms)",
                &series,
                threshold,
            ));
        }
        h.push_str("</body></html>\n");
        h
    }
}

/// An axis label: at most two decimals, no trailing zeros (`0.30000000000000004` -> `0.3`).
fn tick(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    /// Draw as a staircase (a CDF), not straight segments.
    step: bool,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// A "nice" axis maximum (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten) at or above
/// `v`, so five ticks land on round values.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

/// An SVG line chart with axes from 0, five ticks each, a legend and an optional horizontal
/// threshold line.
fn line_chart(x_label: &str, y_label: &str, series: &[Series], hline: Option<f64>) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 400.0, 70.0, 160.0, 20.0, 50.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = nice_max(all.clone().map(|p| p.0).fold(0.0, f64::max));
    let y_max = nice_max(all.map(|p| p.1).chain(hline).fold(0.0, f64::max));
    let sx = |x: f64| left + x / x_max * pw;
    let sy = |y: f64| top + ph - y / y_max * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\
         <rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>"
    );
    for i in 0..=5 {
        let fx = x_max * f64::from(i) / 5.0;
        let fy = y_max * f64::from(i) / 5.0;
        let _ = write!(
            s,
            "<line x1=\"{x}\" y1=\"{top}\" x2=\"{x}\" y2=\"{b}\" stroke=\"#eee\"/>\
             <text x=\"{x}\" y=\"{ty}\" text-anchor=\"middle\">{tx_label}</text>\
             <line x1=\"{left}\" y1=\"{y}\" x2=\"{r}\" y2=\"{y}\" stroke=\"#eee\"/>\
             <text x=\"{tx}\" y=\"{y}\" text-anchor=\"end\" dy=\"4\">{ty_label}</text>",
            x = sx(fx),
            b = top + ph,
            ty = top + ph + 16.0,
            y = sy(fy),
            r = left + pw,
            tx = left - 6.0,
            tx_label = tick(fx),
            ty_label = tick(fy),
        );
    }
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
         <text transform=\"translate(16,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        left + pw / 2.0,
        h - 10.0,
        escape(x_label),
        top + ph / 2.0,
        escape(y_label)
    );
    if let Some(t) = hline {
        let _ = write!(
            s,
            "<line x1=\"{left}\" y1=\"{y}\" x2=\"{r}\" y2=\"{y}\" stroke=\"#000\" \
             stroke-dasharray=\"6 4\"/><text x=\"{r}\" y=\"{y}\" dx=\"4\" dy=\"4\">threshold</text>",
            y = sy(t),
            r = left + pw
        );
    }
    for (i, ser) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut d = String::new();
        let mut prev_y = 0.0;
        for (j, &(x, y)) in ser.points.iter().enumerate() {
            if ser.step {
                // Staircase: rise at each value from the previous fraction.
                let cmd = if j == 0 { "M" } else { "L" };
                let _ = write!(d, "{cmd}{:.1},{:.1} ", sx(x), sy(prev_y));
                let _ = write!(d, "L{:.1},{:.1} ", sx(x), sy(y));
                prev_y = y;
            } else {
                let cmd = if j == 0 { "M" } else { "L" };
                let _ = write!(d, "{cmd}{:.1},{:.1} ", sx(x), sy(y));
                let _ = write!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                    sx(x),
                    sy(y)
                );
            }
        }
        let _ = write!(
            s,
            "<path d=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\
             <rect x=\"{lx}\" y=\"{ly}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
             <text x=\"{tx}\" y=\"{ty}\">{}</text>",
            d.trim_end(),
            escape(&ser.name),
            lx = left + pw + 12.0,
            ly = top + 18.0 * i as f64,
            tx = left + pw + 30.0,
            ty = top + 18.0 * i as f64 + 10.0,
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axis_maxima() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(87.0), 100.0);
        assert_eq!(nice_max(1200.0), 1500.0);
        assert_eq!(nice_max(10289.0), 15000.0);
        assert_eq!(nice_max(2100.0), 2500.0);
        assert_eq!(nice_max(100.0), 100.0);
        assert_eq!(tick(0.1 + 0.2), "0.3");
        assert_eq!(tick(2000.0), "2000");
        assert_eq!(tick(2.5), "2.5");
    }

    #[test]
    fn chart_has_one_path_per_series_and_escapes_names() {
        let series = vec![
            Series {
                name: "a<b".into(),
                points: vec![(10.0, 50.0), (20.0, 100.0)],
                step: true,
            },
            Series {
                name: "c".into(),
                points: vec![(1.0, 5.0)],
                step: false,
            },
        ];
        let svg = line_chart("x", "y", &series, Some(80.0));
        assert_eq!(svg.matches("<path").count(), 2);
        assert!(svg.contains("a&lt;b"));
        assert!(svg.contains("threshold"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
