//! SDP offers on both paths: the SIP negotiator (whose answer must negotiate again to the same
//! codec) and the WebRTC one (str0m's parser, then our `answer_offer`): never a panic.
#![no_main]

use std::net::SocketAddr;
use std::time::Instant;

use antiphon_sip::sdp;
use libfuzzer_sys::fuzz_target;
use str0m::change::SdpOffer;

fuzz_target!(|data: &[u8]| {
    if let Ok(negotiated) = sdp::negotiate(data) {
        let local: SocketAddr = ([127, 0, 0, 1], 20000).into();
        let answer = sdp::answer(&negotiated, local, 1, 1);
        let again = sdp::negotiate(answer.as_bytes()).expect("our own answer negotiates");
        assert_eq!(again.codec, negotiated.codec);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(offer) = SdpOffer::from_sdp_string(text)
    {
        let candidate: SocketAddr = ([127, 0, 0, 1], 40000).into();
        let _ = antiphon_server::webrtc::answer_offer(offer, &[candidate], Instant::now());
    }
});
