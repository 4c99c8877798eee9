//! Any bytes into the SIP parser, the SDP negotiator and a live endpoint: never a panic, and
//! whatever parses serializes to something that parses to the same message.
#![no_main]

use std::time::{Duration, Instant};

use antiphon_sip::message::Message;
use antiphon_sip::{Endpoint, EndpointConfig, EndpointEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let bytes = match &m {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        };
        let again = Message::parse(&bytes).expect("our own serialization parses");
        assert_eq!(again.headers().get("Call-ID"), m.headers().get("Call-ID"));
        if let Message::Request(r) = &m {
            let _ = antiphon_sip::sdp::negotiate(&r.body);
        }
    }
    // The same bytes through the state machine, accepting any offered call, then timers.
    let start = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default());
    let peer = "127.0.0.1:5061".parse().unwrap();
    let _ = ep.handle_datagram(start, peer, data);
    while let Some(ev) = ep.poll_event() {
        if let EndpointEvent::IncomingCall { call, .. } = ev {
            ep.accept(start, call, "127.0.0.1:20000".parse().unwrap());
        }
    }
    let _ = ep.handle_datagram(start, peer, data);
    ep.handle_timeout(start + Duration::from_secs(40));
    while ep.poll_transmit().is_some() {}
});
