//! Any text as `antiphon.toml`: parsed and validated, or a clear error; never a panic.
#![no_main]

use antiphon_server::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text);
    }
});
