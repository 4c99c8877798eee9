//! `/v1/webrtc` against the real `antiphon serve` binary, with a str0m peer standing in for the
//! browser on loopback UDP.
//!
//! - `offer_answer_events_and_hang_up` (engines off, no models): the HTTP offer/answer and its
//!   errors, ICE + DTLS + SCTP up, the Realtime events on the data channel both ways, `DELETE`
//!   hanging up (the client sees its data channel close).
//! - `barge_in_stops_the_reply_within_a_frame` (CI models): the client speaks a LibriVox clip as
//!   Opus RTP at real time, receives the spoken reply as Opus RTP, speaks again over it, and
//!   checks that the reply audio stops within one 20 ms frame of the server's
//!   `output_audio_buffer.cleared` and that the reply item is truncated to what was sent.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test: a failed unwrap is a failed test"
)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{BlockingServer, CI_LLM, NO_ENGINES};

use antiphon_audio::opus_codec::{FRAME_SAMPLES, OpusDecoder, OpusEncoder, OpusEncoderConfig};
use serde_json::Value;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

fn start() -> BlockingServer {
    start_with(NO_ENGINES)
}

/// A server with `engines` (config sections) and WebRTC on loopback with one ICE server.
fn start_with(engines: &str) -> BlockingServer {
    BlockingServer::start(
        &format!(
            "{engines}[webrtc]\ncandidate_ips = [\"127.0.0.1\"]\n\
             [[webrtc.ice_servers]]\nurls = [\"stun:stun.example.org:3478\"]\n"
        ),
        Stdio::inherit(),
    )
}

struct Reply {
    status: u16,
    location: Option<String>,
    body: String,
}

/// One HTTP/1.1 request with `Connection: close`.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read reply");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("header end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let location = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("location")
            .then(|| v.trim().to_string())
    });
    Reply {
        status,
        location,
        body: body.to_string(),
    }
}

const AUTH: (&str, &str) = ("Authorization", "Bearer antiphon-demo-key");
const SDP: (&str, &str) = ("Content-Type", "application/sdp");

/// The client side: a full-ICE str0m peer on one loopback socket. Once connected it sends one
/// 20 ms Opus frame every 20 ms, like a browser's microphone: from `speech` while there is
/// some, silence otherwise.
struct Client {
    rtc: Rtc,
    socket: UdpSocket,
    channel: ChannelId,
    mid: Mid,
    connected: bool,
    open: bool,
    closed: bool,
    received: Vec<Value>,
    received_at: Vec<Instant>,
    encoder: OpusEncoder,
    decoder: OpusDecoder,
    /// 48 kHz samples still to speak.
    speech: std::collections::VecDeque<f32>,
    next_frame: Instant,
    frames_sent: u64,
    /// Every reply packet: arrival and RMS of its decoded audio.
    audio_in: Vec<(Instant, f32)>,
}

impl Client {
    fn offer() -> (Client, String, SdpPendingOffer) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rtc = Rtc::builder().build(Instant::now());
        let c = Candidate::host(socket.local_addr().unwrap(), "udp").unwrap();
        rtc.add_local_candidate(c);
        let mut api = rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let channel = api.add_channel("oai-events".into());
        let (offer, pending) = api.apply().expect("an offer");
        let client = Client {
            rtc,
            socket,
            channel,
            mid,
            connected: false,
            open: false,
            closed: false,
            received: Vec::new(),
            received_at: Vec::new(),
            encoder: OpusEncoder::new(OpusEncoderConfig::default()).expect("opus encoder"),
            decoder: OpusDecoder::new().expect("opus decoder"),
            speech: Default::default(),
            next_frame: Instant::now(),
            frames_sent: 0,
            audio_in: Vec::new(),
        };
        (client, offer.to_sdp_string(), pending)
    }

    /// Runs the client until `done` holds or `timeout` passes; returns whether `done` held.
    fn run_until(&mut self, timeout: Duration, done: impl Fn(&Client) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 2000];
        while Instant::now() < deadline {
            let wake = loop {
                match self.rtc.poll_output().expect("client rtc") {
                    Output::Timeout(t) => break t,
                    Output::Transmit(t) => {
                        let _ = self.socket.send_to(&t.contents, t.destination);
                    }
                    Output::Event(Event::ChannelOpen(id, _)) if id == self.channel => {
                        self.open = true
                    }
                    Output::Event(Event::ChannelData(d)) => {
                        let v: Value = serde_json::from_slice(&d.data).expect("JSON event");
                        self.received.push(v);
                        self.received_at.push(Instant::now());
                    }
                    Output::Event(Event::Connected) => {
                        self.connected = true;
                        self.next_frame = Instant::now();
                    }
                    Output::Event(Event::MediaData(d)) => {
                        let mut pcm = Vec::new();
                        self.decoder.decode(&d.data, &mut pcm).expect("reply opus");
                        let rms = (pcm.iter().map(|s| s * s).sum::<f32>()
                            / pcm.len().max(1) as f32)
                            .sqrt();
                        self.audio_in.push((Instant::now(), rms));
                    }
                    Output::Event(Event::ChannelClose(id)) if id == self.channel => {
                        self.closed = true
                    }
                    Output::Event(_) => {}
                }
            };
            if done(self) {
                return true;
            }
            if self.connected && Instant::now() >= self.next_frame {
                self.send_frame();
                continue;
            }
            let wake = if self.connected {
                wake.min(self.next_frame)
            } else {
                wake
            };
            let wait = wake
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), Duration::from_millis(50));
            self.socket.set_read_timeout(Some(wait)).unwrap();
            let input = match self.socket.recv_from(&mut buf) {
                Ok((n, source)) => Input::Receive(
                    Instant::now(),
                    Receive::new(
                        Protocol::Udp,
                        source,
                        self.socket.local_addr().unwrap(),
                        &buf[..n],
                    )
                    .expect("a datagram"),
                ),
                Err(_) => Input::Timeout(Instant::now()),
            };
            self.rtc.handle_input(input).expect("client input");
        }
        done(self)
    }

    /// One 20 ms microphone frame (a mutation: the caller drains next).
    fn send_frame(&mut self) {
        let mut frame = [0.0f32; FRAME_SAMPLES];
        for s in frame.iter_mut() {
            *s = self.speech.pop_front().unwrap_or(0.0);
        }
        let packet = self.encoder.encode(&frame).expect("encode");
        self.next_frame += Duration::from_millis(20);
        let Some(writer) = self.rtc.writer(self.mid) else {
            return;
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt())
        else {
            return;
        };
        let t = MediaTime::new(self.frames_sent * 960, Frequency::FORTY_EIGHT_KHZ);
        self.frames_sent += 1;
        writer
            .write(pt, Instant::now(), t, packet)
            .expect("write audio");
    }

    fn send(&mut self, event: Value) {
        let mut ch = self.rtc.channel(self.channel).expect("open channel");
        ch.write(false, event.to_string().as_bytes())
            .expect("write");
    }

    fn has(&self, kind: &str) -> Option<&Value> {
        self.received.iter().find(|e| e["type"] == kind)
    }
}

#[test]
fn offer_answer_events_and_hang_up() {
    let server = start();
    let port = server.port;

    // The ICE servers for the page, behind the key.
    let r = http(port, "GET", "/v1/webrtc/config", &[AUTH], "");
    assert_eq!(r.status, 200, "{}", r.body);
    let cfg: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        cfg["ice_servers"][0]["urls"][0],
        "stun:stun.example.org:3478"
    );

    let (mut client, offer, pending) = Client::offer();
    // Refusals, each with a JSON error.
    let r = http(port, "POST", "/v1/webrtc", &[SDP], &offer);
    assert_eq!(r.status, 401, "{}", r.body);
    let r = http(
        port,
        "POST",
        "/v1/webrtc",
        &[AUTH, ("Content-Type", "text/plain")],
        &offer,
    );
    assert_eq!(r.status, 415, "{}", r.body);
    let r = http(
        port,
        "POST",
        "/v1/webrtc",
        &[AUTH, SDP],
        "v=0\r\nnot sdp\r\n",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("invalid_offer"), "{}", r.body);
    // Issue 17: the parser's error named a heap address; nothing of the process goes out.
    assert!(!r.body.contains("0x"), "{}", r.body);
    let r = http(port, "DELETE", "/v1/webrtc/sess_nope", &[AUTH], "");
    assert_eq!(r.status, 404);

    // The real exchange.
    let r = http(port, "POST", "/v1/webrtc", &[AUTH, SDP], &offer);
    assert_eq!(r.status, 201, "{}", r.body);
    let location = r.location.expect("Location header");
    // Issue 17: the resource is a random token, not the (sequential) session id.
    let token = location
        .strip_prefix("/v1/webrtc/")
        .expect("under /v1/webrtc/");
    assert!(
        token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{location}"
    );
    assert!(r.body.contains("a=ice-lite"), "{}", r.body);
    assert!(r.body.contains("opus/48000/2"), "{}", r.body);
    assert!(r.body.contains("typ host"), "{}", r.body);
    let answer = SdpAnswer::from_sdp_string(&r.body).expect("answer parses");
    client
        .rtc
        .sdp_api()
        .accept_answer(pending, answer)
        .expect("answer accepted");

    // ICE + DTLS + SCTP up; the session's first event arrives on the data channel.
    assert!(
        client.run_until(Duration::from_secs(15), |c| c.open
            && c.has("session.created").is_some()),
        "no open data channel with session.created: {:?}",
        client.received
    );
    let created = client.has("session.created").unwrap();
    let session_id = created["session"]["id"].as_str().unwrap().to_string();
    // Another key holder who guesses the (sequential) session id cannot hang this call up.
    assert!(
        !location.contains(&session_id),
        "{location} vs {session_id}"
    );
    let r = http(
        port,
        "DELETE",
        &format!("/v1/webrtc/{session_id}"),
        &[AUTH],
        "",
    );
    assert_eq!(r.status, 404, "{}", r.body);

    // A client event on the channel reaches the session; its audio formats stay the
    // transport's (pcm16 behind Opus) whatever the client asks.
    client.send(serde_json::json!({
        "type": "session.update",
        "session": {
            "type": "realtime",
            "instructions": "Speak like a lighthouse keeper.",
            "audio": {"output": {"format": {"type": "audio/pcmu"}}}
        }
    }));
    assert!(
        client.run_until(Duration::from_secs(10), |c| c
            .has("session.updated")
            .is_some()),
        "no session.updated: {:?}",
        client.received
    );
    let updated = client.has("session.updated").unwrap();
    assert_eq!(
        updated["session"]["instructions"],
        "Speak like a lighthouse keeper."
    );
    assert_eq!(
        updated["session"]["audio"]["output"]["format"]["type"], "audio/pcm",
        "{updated}"
    );
    // `output_audio_buffer.clear` belongs to this transport (nothing to cut here): it must not
    // reach the session, which would refuse it. Then an unknown event is answered with an
    // error event and the session goes on. (This server has no ASR: the microphone frames the
    // client sends earn an `engine_unavailable` error of their own.)
    client.send(serde_json::json!({"type": "output_audio_buffer.clear"}));
    client.send(serde_json::json!({"type": "no.such.event"}));
    let code_count = |c: &Client, code: &str| {
        c.received
            .iter()
            .filter(|e| e["type"] == "error" && e["error"]["code"] == code)
            .count()
    };
    assert!(
        client.run_until(Duration::from_secs(10), |c| code_count(
            c,
            "unknown_event_type"
        ) > 0),
        "no error event: {:?}",
        client.received
    );
    client.run_until(Duration::from_millis(300), |_| false);
    assert_eq!(code_count(&client, "unknown_event_type"), 1);
    assert_eq!(
        code_count(&client, "unsupported_event"),
        0,
        "output_audio_buffer.clear reached the session: {:?}",
        client.received
    );

    // Hang up: 200, the client's data channel closes, the id is gone.
    let r = http(port, "DELETE", &location, &[AUTH], "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        client.run_until(Duration::from_secs(10), |c| c.closed || !c.rtc.is_alive()),
        "the server did not close the connection after DELETE"
    );
    let r = http(port, "DELETE", &location, &[AUTH], "");
    assert_eq!(r.status, 404);
}

/// 48 kHz samples of a LibriVox clip from the model store, and its text.
fn clip(name: &str) -> (Vec<f32>, String) {
    let store = antiphon_models::store::ModelStore::from_env().expect("model store");
    let dir = store.root().join("librivox-clips");
    let audio = antiphon_audio::wav::read_mono(dir.join(format!("{name}.wav"))).expect("clip wav");
    let text = std::fs::read_to_string(dir.join(format!("{name}.txt"))).expect("clip txt");
    let samples =
        antiphon_audio::resample::resample_clip(&audio.samples, audio.sample_rate, 48_000)
            .expect("resample");
    (samples, text)
}

/// Reply packets louder than this carry speech (Piper's voice is far above; Opus silence is 0).
const SPEECH_RMS: f32 = 0.005;

#[test]
fn barge_in_stops_the_reply_within_a_frame() {
    let server = start_with(CI_LLM);
    let port = server.port;
    let (mut client, offer, pending) = Client::offer();
    let r = http(port, "POST", "/v1/webrtc", &[AUTH, SDP], &offer);
    assert_eq!(r.status, 201, "{}", r.body);
    let answer = SdpAnswer::from_sdp_string(&r.body).expect("answer parses");
    client
        .rtc
        .sdp_api()
        .accept_answer(pending, answer)
        .expect("answer accepted");
    assert!(
        client.run_until(Duration::from_secs(15), |c| c.open
            && c.has("session.created").is_some()),
        "no data channel"
    );
    client.send(serde_json::json!({
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"input": {"transcription": {}}}}
    }));

    // Turn 1: the clip, then silence until the reply has played for a second.
    let (speech, text) = clip("sense_and_sensibility_01_austen_64kb-0880");
    client.speech.extend(speech.iter().copied());
    let loud_for = |c: &Client, at_least: usize| {
        c.audio_in
            .iter()
            .filter(|(_, rms)| *rms > SPEECH_RMS)
            .count()
            >= at_least
    };
    assert!(
        client.run_until(Duration::from_secs(60), |c| loud_for(c, 50)),
        "no second of reply audio over RTP; events: {:?}",
        client
            .received
            .iter()
            .map(|e| e["type"].clone())
            .collect::<Vec<_>>()
    );
    let user = client
        .has("conversation.item.input_audio_transcription.completed")
        .map(|e| e["transcript"].as_str().unwrap_or("").to_lowercase())
        .unwrap_or_default();
    assert!(
        user.contains("young man"),
        "user transcript {user:?} vs {text:?}"
    );
    let started = client
        .has("output_audio_buffer.started")
        .expect("output_audio_buffer.started")
        .clone();
    let reply_id = started["response_id"].as_str().unwrap().to_string();

    // Turn 2 over the reply: speak again; the server cuts the reply off.
    client.speech.extend(speech.iter().copied());
    assert!(
        client.run_until(Duration::from_secs(20), |c| c
            .has("output_audio_buffer.cleared")
            .is_some()),
        "the reply was never cut off: {:?}",
        client
            .received
            .iter()
            .map(|e| e["type"].clone())
            .collect::<Vec<_>>()
    );
    let i = client
        .received
        .iter()
        .position(|e| e["type"] == "output_audio_buffer.cleared")
        .unwrap();
    assert_eq!(client.received[i]["response_id"], reply_id.as_str());
    let cleared_at = client.received_at[i];
    // Collect another half second of reply packets.
    let until = Instant::now() + Duration::from_millis(500);
    client.run_until(Duration::from_secs(1), |_| Instant::now() >= until);
    let after: Vec<f32> = client
        .audio_in
        .iter()
        .filter(|(at, _)| *at >= cleared_at)
        .map(|(_, rms)| *rms)
        .collect();
    assert!(
        after.len() >= 20,
        "reply packets kept coming: {}",
        after.len()
    );
    let loud_after = after.iter().take_while(|rms| **rms > SPEECH_RMS).count();
    println!(
        "barge-in: {} loud reply packet(s) after output_audio_buffer.cleared, then {:?}",
        loud_after,
        &after[..after.len().min(5)]
    );
    // The frame in flight (and the resampler's 10 ms tail) at most; then silence.
    assert!(
        loud_after <= 1,
        "reply kept playing after the cut: {after:?}"
    );
    assert!(
        after[loud_after..].iter().all(|rms| *rms <= SPEECH_RMS),
        "reply audio came back after the cut: {after:?}"
    );
    // The session was told what the caller heard: the reply item is truncated.
    assert!(
        client.run_until(Duration::from_secs(5), |c| c
            .has("conversation.item.truncated")
            .is_some()),
        "no conversation.item.truncated"
    );
    // The session cuts the item by wall time since the first audio went out; the peer then cuts
    // it to the audio it actually sent when that is less (the reply may have run dry a moment).
    let cuts: Vec<u64> = client
        .received
        .iter()
        .filter(|e| e["type"] == "conversation.item.truncated")
        .filter_map(|e| e["audio_end_ms"].as_u64())
        .collect();
    let heard_ms = *cuts.last().unwrap();
    println!("reply truncated at {cuts:?} ms");
    assert!(
        heard_ms >= 1000,
        "truncated at {heard_ms} ms, but >= 1 s was played"
    );
}
