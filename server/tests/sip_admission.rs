//! SIP admission against a real server over UDP on loopback, from a caller that never sends
//! its ACK (the flood of issue 17: INVITEs that took every engine slot for ~30 s and were
//! answered with ~9x the bytes received).
//!
//! - From one source, only `max_unconfirmed_per_source` unacknowledged calls are answered; the
//!   rest are dropped without a single byte back, and counted.
//! - An answered but unacknowledged call holds no engine slot: a WebSocket caller still gets
//!   the only LLM lease, and the late ACK then gets a BYE instead of a session.
//!
//! The SIP messages are written here by hand (sipp cannot withhold ACKs per call).

mod common;

use common::realtime::{connect, recv_type};
use common::{ServerOptions, TestServer, http_get, metric};

use std::collections::HashMap;
use std::time::Duration;

use tokio::net::UdpSocket;

/// Starts a server with SIP on an OS-chosen port; returns it and the SIP address.
async fn server_with_sip(config: &'static str) -> (TestServer, String) {
    let mut server = TestServer::start(ServerOptions {
        config,
        args: &["--sip", "127.0.0.1:0"],
        log_filter: "warn,antiphon_server::sip=info",
        ..ServerOptions::default()
    })
    .await;
    let line = tokio::time::timeout(Duration::from_secs(10), server.stdout.next_line())
        .await
        .expect("server printed its SIP address in time")
        .expect("read stdout")
        .expect("a second line");
    let sip = line
        .strip_prefix("antiphon sip listening on udp ")
        .unwrap_or_else(|| panic!("not the SIP address line: {line:?}"))
        .trim()
        .to_string();
    (server, sip)
}

fn invite(caller: &UdpSocket, call_id: &str) -> String {
    let me = caller.local_addr().expect("caller address");
    let sdp = format!(
        "v=0\r\no=test 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        me.port() + 2
    );
    format!(
        "INVITE sip:agent@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id}\r\n\
         From: <sip:test@{me}>;tag=t-{call_id}\r\n\
         To: <sip:agent@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:test@{me}>\r\n\
         Max-Forwards: 70\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The ACK for a 2xx: a new transaction, the To (with the tag) of the 200.
fn ack(caller: &UdpSocket, call_id: &str, to: &str) -> String {
    let me = caller.local_addr().expect("caller address");
    format!(
        "ACK sip:agent@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-ack-{call_id}\r\n\
         From: <sip:test@{me}>;tag=t-{call_id}\r\n\
         To: {to}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 ACK\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// What arrived in `window`: per Call-ID, the first lines (status or method) and the To of
/// the 200 if any; plus the bytes received in all.
struct Heard {
    first_lines: HashMap<String, Vec<String>>,
    to_of_200: HashMap<String, String>,
    bytes: usize,
}

async fn listen(caller: &UdpSocket, window: Duration) -> Heard {
    let mut heard = Heard {
        first_lines: HashMap::new(),
        to_of_200: HashMap::new(),
        bytes: 0,
    };
    let mut buf = vec![0u8; 65_536];
    let end = tokio::time::Instant::now() + window;
    while let Ok(Ok(n)) = tokio::time::timeout_at(end, caller.recv(&mut buf)).await {
        heard.bytes += n;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let first = text.lines().next().unwrap_or_default().to_string();
        let call_id = header(&text, "Call-ID").unwrap_or_default().to_string();
        if first.starts_with("SIP/2.0 200")
            && let Some(to) = header(&text, "To")
        {
            heard.to_of_200.insert(call_id.clone(), to.to_string());
        }
        heard.first_lines.entry(call_id).or_default().push(first);
    }
    heard
}

#[tokio::test]
async fn a_source_that_never_acks_gets_few_answers_and_no_engine_slots() {
    // No engines: capacity is the session permits alone, so only the guard limits answers.
    let (server, sip) = server_with_sip(
        "[server]\nmax_sessions = 16\n[asr]\nenabled = false\n[llm]\nenabled = false\n\
         [tts]\nenabled = false\n[sip]\nrtp_port_min = 32000\nrtp_port_max = 32999\nmax_unconfirmed_per_source = 4\n",
    )
    .await;
    let caller = UdpSocket::bind("127.0.0.1:0").await.expect("bind caller");
    caller.connect(&sip).await.expect("connect to the SIP port");
    let mut sent = 0;
    for n in 0..8 {
        let msg = invite(&caller, &format!("flood-{n}"));
        sent += msg.len();
        caller.send(msg.as_bytes()).await.expect("send INVITE");
    }
    let heard = listen(&caller, Duration::from_millis(1500)).await;
    let answered: Vec<&String> = heard
        .first_lines
        .iter()
        .filter(|(_, lines)| lines.iter().any(|l| l.starts_with("SIP/2.0 200")))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(answered.len(), 4, "answered: {:?}", heard.first_lines);
    // The four over the cap got nothing at all, not even 100 Trying.
    assert_eq!(heard.first_lines.len(), 4, "{:?}", heard.first_lines);
    // Bytes back within the first 1.5 s (before the 200s are retransmitted more than twice):
    // bounded by the four answered calls, not by the eight INVITEs.
    eprintln!(
        "sent {sent} bytes in 8 INVITEs, received {} bytes",
        heard.bytes
    );
    let metrics = http_get(server.port, "/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "antiphon_sip_invites_dropped_total{transport=\"sip\",reason=\"unconfirmed\"}"
        ),
        4,
        "{metrics}"
    );
    // No session exists before an ACK.
    assert_eq!(metric(&metrics, "antiphon_sessions{transport=\"sip\"}"), 0);

    // Acknowledging one frees its place: the next new INVITE is answered again.
    let first = answered[0].clone();
    let to = heard.to_of_200[&first].clone();
    caller
        .send(ack(&caller, &first, &to).as_bytes())
        .await
        .expect("send ACK");
    caller
        .send(invite(&caller, "after-ack").as_bytes())
        .await
        .expect("send INVITE");
    let heard = listen(&caller, Duration::from_millis(1500)).await;
    assert!(
        heard
            .first_lines
            .get("after-ack")
            .is_some_and(|l| l.iter().any(|l| l.starts_with("SIP/2.0 200"))),
        "{:?}",
        heard.first_lines
    );
}

#[tokio::test]
async fn an_unacknowledged_call_holds_no_engine_slot() {
    let (server, sip) = server_with_sip(
        "[server]\nmax_sessions = 1\n[asr]\nenabled = false\n[tts]\nenabled = false\n\
         [llm]\nmodel = \"smollm2-135m\"\n\
         [sip]\nrtp_port_min = 33000\nrtp_port_max = 33999\n",
    )
    .await;
    let caller = UdpSocket::bind("127.0.0.1:0").await.expect("bind caller");
    caller.connect(&sip).await.expect("connect to the SIP port");
    caller
        .send(invite(&caller, "pending").as_bytes())
        .await
        .expect("send INVITE");
    let heard = listen(&caller, Duration::from_millis(1000)).await;
    let to = heard
        .to_of_200
        .get("pending")
        .unwrap_or_else(|| panic!("no 200 for the INVITE: {:?}", heard.first_lines))
        .clone();
    // The answered call waits for its ACK without the only session's permit and LLM lease:
    // a WebSocket caller gets them.
    let mut ws = connect(server.port, false).await;
    recv_type(&mut ws, "session.created").await;
    // Now the late ACK finds no room: the call is ended with a BYE, not left silent.
    caller
        .send(ack(&caller, "pending", &to).as_bytes())
        .await
        .expect("send ACK");
    let heard = listen(&caller, Duration::from_millis(1500)).await;
    assert!(
        heard
            .first_lines
            .get("pending")
            .is_some_and(|l| l.iter().any(|l| l.starts_with("BYE "))),
        "{:?}",
        heard.first_lines
    );
    // And while the WebSocket session holds the lease, a new INVITE is refused with 503.
    caller
        .send(invite(&caller, "full").as_bytes())
        .await
        .expect("send INVITE");
    let heard = listen(&caller, Duration::from_millis(1000)).await;
    assert!(
        heard
            .first_lines
            .get("full")
            .is_some_and(|l| l.iter().any(|l| l.starts_with("SIP/2.0 503"))),
        "{:?}",
        heard.first_lines
    );
}
