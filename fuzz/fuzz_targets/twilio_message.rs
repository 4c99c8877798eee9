//! Media Streams messages, one per line, through the Twilio codec and a call's state machine:
//! never a panic, and every message the call would send to Twilio encodes.
#![no_main]

use antiphon_server::twilio::call::{Call, Step};
use antiphon_server::twilio::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut call = Call::new();
    for line in text.split('\n') {
        let Ok(message) = codec::decode(line, 64 << 10) else {
            continue;
        };
        for step in call.on_twilio(message) {
            if let Step::ToTwilio(out) = step {
                let _ = codec::encode(&out);
            }
        }
    }
});
