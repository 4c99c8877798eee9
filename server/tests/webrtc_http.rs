//! `/v1/webrtc` against the real `antiphon serve` binary (engines off, so no models needed),
//! with a str0m peer standing in for the browser on loopback UDP: the HTTP offer/answer and
//! its errors, ICE + DTLS + SCTP up, the Realtime events on the data channel both ways, and
//! `DELETE` hanging up (the client sees its data channel close).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

struct Server {
    port: u16,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server/ sits inside the workspace")
        .to_path_buf();
    let config =
        std::env::temp_dir().join(format!("antiphon-webrtc-http-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[asr]\nenabled = false\n[llm]\nenabled = false\n[tts]\nenabled = false\n\
         [webrtc]\ncandidate_ips = [\"127.0.0.1\"]\n\
         [[webrtc.ice_servers]]\nurls = [\"stun:stun.example.org:3478\"]\n",
    )
    .expect("write test config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_antiphon"))
        .args(["serve", "--port", "0", "--host", "127.0.0.1", "--config"])
        .arg(&config)
        .current_dir(root)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn antiphon serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("server printed its address");
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Server { port, child }
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

/// The client side: a full-ICE str0m peer on one loopback socket.
struct Client {
    rtc: Rtc,
    socket: UdpSocket,
    channel: ChannelId,
    open: bool,
    closed: bool,
    received: Vec<Value>,
}

impl Client {
    fn offer() -> (Client, String, SdpPendingOffer) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rtc = Rtc::builder().build(Instant::now());
        let c = Candidate::host(socket.local_addr().unwrap(), "udp").unwrap();
        rtc.add_local_candidate(c);
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let channel = api.add_channel("oai-events".into());
        let (offer, pending) = api.apply().expect("an offer");
        let client = Client {
            rtc,
            socket,
            channel,
            open: false,
            closed: false,
            received: Vec::new(),
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
    let r = http(port, "DELETE", "/v1/webrtc/sess_nope", &[AUTH], "");
    assert_eq!(r.status, 404);

    // The real exchange.
    let r = http(port, "POST", "/v1/webrtc", &[AUTH, SDP], &offer);
    assert_eq!(r.status, 201, "{}", r.body);
    let location = r.location.expect("Location header");
    assert!(location.starts_with("/v1/webrtc/sess_"), "{location}");
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
    assert!(
        location.ends_with(&session_id),
        "{location} vs {session_id}"
    );

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
    // Bad JSON is answered with an error event; the session goes on.
    client.send(serde_json::json!({"type": "no.such.event"}));
    assert!(
        client.run_until(Duration::from_secs(10), |c| c.has("error").is_some()),
        "no error event: {:?}",
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
