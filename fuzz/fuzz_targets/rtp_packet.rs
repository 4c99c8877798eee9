//! Any bytes into the RTP, RTCP and telephone-event parsers: never a panic, and a parsed
//! packet's payload lies inside the datagram.
#![no_main]

use antiphon_sip::rtp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if rtp::looks_like_rtcp(data) {
        let _ = rtp::parse_rtcp(data);
    }
    if let Ok(p) = rtp::parse(data) {
        assert!(p.payload.len() < data.len());
        assert!(!p.payload.is_empty());
        let _ = rtp::parse_dtmf(p.payload);
        let mut out = Vec::new();
        rtp::write(&p.header, p.payload, &mut out);
        let again = rtp::parse(&out).expect("our own packet parses");
        assert_eq!(again.header, p.header);
        assert_eq!(again.payload, p.payload);
    }
});
