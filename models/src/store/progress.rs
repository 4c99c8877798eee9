//! Progress display: bars on an interactive stderr, one plain line per package otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Bars when stderr is a terminal; otherwise one line per package (and per repaired file).
    Auto,
    /// Print nothing (tests, library callers).
    Quiet,
}

impl Progress {
    fn draws_bars(self) -> bool {
        self == Progress::Auto && std::io::stderr().is_terminal()
    }

    /// A byte-counting bar, hidden unless bars are drawn.
    pub fn bytes_bar(self, total: u64, message: &str) -> ProgressBar {
        if !self.draws_bars() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        // The template is a constant known to parse; fall back to the default style regardless.
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {msg:50!} {bytes:>10}/{total_bytes:10} {wide_bar} {eta:>4}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    }

    /// A line of status on stderr (nothing when quiet).
    pub fn line(self, message: &str) {
        if self == Progress::Auto {
            eprintln!("{message}");
        }
    }
}
