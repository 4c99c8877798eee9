//! The SIP user agent server: a sans-IO state machine over UDP datagrams.
//!
//! Feed it every datagram with [`Endpoint::handle_datagram`] and wake it at
//! [`Endpoint::next_deadline`] with [`Endpoint::handle_timeout`]; after each, drain
//! [`Endpoint::poll_transmit`] (datagrams to send) and [`Endpoint::poll_event`] (what happened
//! to calls). The application answers [`EndpointEvent::IncomingCall`] with
//! [`Endpoint::accept`] or [`Endpoint::reject`], and ends a call with [`Endpoint::hangup`].
//!
//! Supported: INVITE with an SDP offer (answered 100, 180, 200 with the SDP answer), ACK,
//! BYE (both directions), CANCEL before the answer (200 + 487), OPTIONS, re-INVITE with a new
//! offer (hold/unhold, new media address). Not supported, refused cleanly: INVITE without SDP
//! (late offer, 488), other methods (405), TCP/TLS, authentication, forking as a UAC.
//!
//! Replies and in-dialog requests go to the address the INVITE came from (like `rport`,
//! RFC 3581), which is what works behind NAT; a Via with `rport` gets `received`/`rport` filled.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::message::{self, Headers, Message, Method, ParseError, Request, Response};
use crate::sdp::{self, Negotiated, SdpError};
use crate::transaction::{Kind, Timeout, TimerAction, TimerConfig, Transaction};

/// Our handle on one call (not the SIP Call-ID, which the caller chose).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub timers: TimerConfig,
    /// Our SIP port, for Contact and Via (the host comes from the advertised address).
    pub sip_port: u16,
    /// Most live transactions; new requests beyond it are dropped and counted.
    pub max_transactions: usize,
    /// Seeds tags and branches (any value; make it differ between runs).
    pub seed: u64,
    pub user_agent: String,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            timers: TimerConfig::default(),
            sip_port: 5060,
            max_transactions: 4096,
            seed: 0x5eed,
            user_agent: "antiphon".into(),
        }
    }
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE.
    RemoteBye,
    /// The caller sent CANCEL before the answer.
    Cancelled,
    /// Our 200 OK was never acknowledged (we send BYE).
    NoAck,
    /// We hung up (BYE sent) or rejected the call.
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointEvent {
    /// A new INVITE with an acceptable offer: answer with `accept` or `reject`.
    IncomingCall {
        call: CallId,
        from: String,
        to: String,
        source: SocketAddr,
        media: Negotiated,
    },
    /// The caller acknowledged our 200 OK.
    Established {
        call: CallId,
    },
    /// A re-INVITE changed the media (hold/unhold, new address); already answered.
    MediaChanged {
        call: CallId,
        media: Negotiated,
    },
    Ended {
        call: CallId,
        reason: EndReason,
    },
}

/// Counters since the endpoint was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub datagrams: u64,
    /// Dropped: not a SIP message, or missing what we need to answer (branch).
    pub malformed: u64,
    /// Retransmitted requests answered from a transaction.
    pub retransmissions_absorbed: u64,
    /// Our own retransmissions on timers.
    pub retransmissions_sent: u64,
    /// Requests for a dialog or transaction we do not know (481) and stray ACKs/responses.
    pub unmatched: u64,
    /// Requests dropped because `max_transactions` were live.
    pub overloaded: u64,
    pub calls: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// Waiting for the application to accept or reject.
    Offered,
    /// 200 sent, waiting for the ACK.
    Accepted,
    Confirmed,
}

struct Call {
    state: CallState,
    sip_call_id: String,
    local_tag: String,
    remote_tag: String,
    /// Where signalling for this call goes.
    peer: SocketAddr,
    /// The caller's Contact URI: the Request-URI of our in-dialog requests.
    remote_target: String,
    /// The INVITE's Record-Route values in order: the Route headers of our in-dialog requests
    /// (RFC 3261 12.1.1), so a proxy that asked to stay in the path (Kamailio) sees our BYE.
    route_set: Vec<String>,
    /// The caller's From header (our To in requests we send).
    remote_party: String,
    /// The To header with our tag (our From in requests we send).
    local_party: String,
    /// The request whose transaction is pending (initial INVITE or re-INVITE), and its key.
    invite: Request,
    invite_key: TxKey,
    remote_cseq: u32,
    local_cseq: u32,
    media: Negotiated,
    local_media: SocketAddr,
    /// Established was reported (a re-INVITE's ACK is not news).
    established: bool,
    sdp_version: u64,
    sdp_session: u64,
}

/// Transactions are matched by top Via branch and method (ACK counts as INVITE).
type TxKey = (String, Method);

struct TxEntry {
    tx: Transaction,
    peer: SocketAddr,
    call: Option<CallId>,
}

pub struct Endpoint {
    config: EndpointConfig,
    calls: HashMap<CallId, Call>,
    /// (Call-ID, our tag) -> call, for in-dialog requests.
    dialogs: HashMap<(String, String), CallId>,
    transactions: HashMap<TxKey, TxEntry>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<EndpointEvent>,
    stats: EndpointStats,
    next_call: u64,
    rng: u64,
    /// Whether this endpoint takes new calls: an out-of-dialog OPTIONS (a proxy's keepalive,
    /// e.g. Kamailio's dispatcher) is answered 200 when it does, 503 when it does not.
    accepting: bool,
}

const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS";
const BRANCH_COOKIE: &str = "z9hG4bK";

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

impl Endpoint {
    pub fn new(config: EndpointConfig) -> Self {
        let rng = config.seed | 1;
        Endpoint {
            config,
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            transactions: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: EndpointStats::default(),
            next_call: 0,
            rng,
            accepting: true,
        }
    }

    /// Whether new calls are welcome (the owner's capacity and drain state): what an
    /// out-of-dialog OPTIONS is answered. INVITEs are still admitted or rejected by the owner.
    pub fn set_accepting(&mut self, accepting: bool) {
        self.accepting = accepting;
    }

    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// Live calls (offered, accepted or confirmed).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.transactions
            .values()
            .filter_map(|e| e.tx.next_deadline())
            .min()
    }

    fn random_token(&mut self) -> String {
        // xorshift64*: unpredictable enough for tags and branches, which only need uniqueness.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        format!("{:016x}", self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D))
    }

    /// One datagram from `source`. A malformed one is counted and its error returned (for a
    /// log line); nothing is sent for it.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), ParseError> {
        self.stats.datagrams += 1;
        if bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return Ok(()); // RFC 5626 keepalive (CRLF CRLF)
        }
        let message = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        match message {
            Message::Request(mut req) => {
                let Some(branch) = req.headers.top_branch().map(str::to_string) else {
                    self.stats.malformed += 1;
                    return Err(ParseError::MissingHeader("Via branch"));
                };
                stamp_via(&mut req.headers, source);
                self.handle_request(now, source, branch, req);
            }
            Message::Response(resp) => self.handle_response(now, resp),
        }
        Ok(())
    }

    fn handle_request(&mut self, now: Instant, source: SocketAddr, branch: String, req: Request) {
        let key_method = if req.method == Method::Ack {
            Method::Invite
        } else {
            req.method.clone()
        };
        let key = (branch, key_method);
        if req.method == Method::Ack {
            return self.handle_ack(now, &key, &req);
        }
        if let Some(entry) = self.transactions.get(&key) {
            // A retransmission: answer from the transaction, never from the TU again.
            self.stats.retransmissions_absorbed += 1;
            if let Some(bytes) = entry.tx.on_retransmitted_request() {
                self.transmits.push_back(Transmit {
                    to: entry.peer,
                    bytes: bytes.to_vec(),
                });
            }
            return;
        }
        if self.transactions.len() >= self.config.max_transactions {
            self.stats.overloaded += 1;
            return;
        }
        let kind = if req.method == Method::Invite {
            Kind::ServerInvite
        } else {
            Kind::ServerNonInvite
        };
        self.transactions.insert(
            key.clone(),
            TxEntry {
                tx: Transaction::server(kind, self.config.timers),
                peer: source,
                call: None,
            },
        );
        match req.method {
            Method::Invite if req.headers.tag("To").is_none() => {
                self.handle_invite(now, source, key, req)
            }
            Method::Invite => self.handle_reinvite(now, key, req),
            Method::Bye => self.handle_bye(now, key, req),
            Method::Cancel => self.handle_cancel(now, key, req),
            Method::Options if !self.accepting && req.headers.tag("To").is_none() => {
                self.simple_response(now, &key, &req, 503);
            }
            Method::Options => {
                let mut resp = Response::to(&req, 200, "OK");
                resp.headers.push("Allow", ALLOW);
                resp.headers.push("Accept", "application/sdp");
                self.respond(now, &key, resp);
            }
            _ => {
                let mut resp = Response::to(&req, 405, reason(405));
                resp.headers.push("Allow", ALLOW);
                self.respond(now, &key, resp);
            }
        }
    }

    /// Sends `resp` through the transaction `key` (which records it for retransmission).
    fn respond(&mut self, now: Instant, key: &TxKey, mut resp: Response) {
        let Some(entry) = self.transactions.get_mut(key) else {
            return;
        };
        resp.headers.push("Server", self.config.user_agent.clone());
        let bytes = resp.to_bytes();
        entry.tx.respond(now, resp.status, bytes.clone());
        self.transmits.push_back(Transmit {
            to: entry.peer,
            bytes,
        });
    }

    fn simple_response(&mut self, now: Instant, key: &TxKey, req: &Request, status: u16) {
        let mut resp = Response::to(req, status, reason(status));
        if status >= 300 {
            // Responses that end a request without a dialog still need a To tag.
            add_to_tag(&mut resp.headers, &self.random_token());
        }
        if status == 503 {
            resp.headers.push("Retry-After", "5");
        }
        self.respond(now, key, resp);
    }

    fn handle_invite(&mut self, now: Instant, source: SocketAddr, key: TxKey, req: Request) {
        self.respond(now, &key, Response::to(&req, 100, reason(100)));
        let media = match sdp::negotiate(&req.body) {
            Ok(m) => m,
            Err(e) => {
                let status = match e {
                    SdpError::BadLine(_) => 400,
                    _ => 488,
                };
                self.simple_response(now, &key, &req, status);
                return;
            }
        };
        let Some(from_tag) = req.headers.tag("From").map(str::to_string) else {
            self.simple_response(now, &key, &req, 400);
            return;
        };
        let (Some(from), Some(to), Some(call_id), Some((cseq, _))) = (
            req.headers.get("From").map(str::to_string),
            req.headers.get("To").map(str::to_string),
            req.headers.get("Call-ID").map(str::to_string),
            req.headers.cseq(),
        ) else {
            // Message::parse checked these; unreachable in practice, answered anyway.
            self.simple_response(now, &key, &req, 400);
            return;
        };
        let remote_target = req
            .headers
            .get("Contact")
            .map(|c| message::addr_uri(c).to_string())
            .unwrap_or_else(|| message::addr_uri(&from).to_string());
        let local_tag = self.random_token();
        self.next_call += 1;
        let call = CallId(self.next_call);
        self.stats.calls += 1;
        let local_party = format!("{to};tag={local_tag}");
        let sdp_session = self.rng >> 16;
        if let Some(e) = self.transactions.get_mut(&key) {
            e.call = Some(call);
        }
        self.dialogs
            .insert((call_id.clone(), local_tag.clone()), call);
        self.calls.insert(
            call,
            Call {
                state: CallState::Offered,
                sip_call_id: call_id,
                local_tag,
                remote_tag: from_tag,
                peer: source,
                remote_target,
                route_set: req
                    .headers
                    .get_all("Record-Route")
                    .map(str::to_string)
                    .collect(),
                remote_party: from.clone(),
                local_party,
                invite: req,
                invite_key: key,
                remote_cseq: cseq,
                local_cseq: 0,
                media: media.clone(),
                local_media: sdp::UNSPECIFIED,
                established: false,
                sdp_version: 1,
                sdp_session,
            },
        );
        self.events.push_back(EndpointEvent::IncomingCall {
            call,
            from: message::addr_uri(&from).to_string(),
            to: message::addr_uri(&to).to_string(),
            source,
            media,
        });
    }

    /// Answers an offered call: 180 then 200 with the SDP answer. `local_media` is the
    /// address the caller should send RTP to (advertised IP and our RTP port).
    pub fn accept(&mut self, now: Instant, call: CallId, local_media: SocketAddr) {
        let contact = format!(
            "<sip:antiphon@{}>",
            SocketAddr::new(local_media.ip(), self.config.sip_port)
        );
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.state != CallState::Offered {
            return;
        }
        c.local_media = local_media;
        c.state = CallState::Accepted;
        let body = sdp::answer(&c.media, local_media, c.sdp_session, c.sdp_version).into_bytes();
        let mut ringing = Response::to(&c.invite, 180, reason(180));
        ringing.headers.set("To", c.local_party.clone());
        ringing.headers.push("Contact", contact.clone());
        let mut ok = Response::to(&c.invite, 200, reason(200));
        ok.headers.set("To", c.local_party.clone());
        ok.headers.push("Contact", contact);
        ok.headers.push("Allow", ALLOW);
        ok.headers.push("Content-Type", "application/sdp");
        ok.body = body;
        let key = c.invite_key.clone();
        self.respond(now, &key, ringing);
        self.respond(now, &key, ok);
    }

    /// Refuses an offered call (486 busy, 503 at capacity with Retry-After, ...).
    pub fn reject(&mut self, now: Instant, call: CallId, status: u16) {
        let status = if (300..=699).contains(&status) {
            status
        } else {
            500
        };
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.state != CallState::Offered {
            return;
        }
        let mut resp = Response::to(&c.invite, status, reason(status));
        resp.headers.set("To", c.local_party.clone());
        if status == 503 {
            resp.headers.push("Retry-After", "5");
        }
        let key = c.invite_key.clone();
        self.respond(now, &key, resp);
        self.remove_call(call);
    }

    /// Ends a call from our side: BYE once answered (retransmitted on Timer E), a 480 before.
    pub fn hangup(&mut self, now: Instant, call: CallId) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.state == CallState::Offered {
            self.reject(now, call, 480);
            self.events.push_back(EndpointEvent::Ended {
                call,
                reason: EndReason::Local,
            });
            return;
        }
        self.send_bye(now, call);
        self.remove_call(call);
        self.events.push_back(EndpointEvent::Ended {
            call,
            reason: EndReason::Local,
        });
    }

    fn send_bye(&mut self, now: Instant, call: CallId) {
        let branch = format!("{BRANCH_COOKIE}{}", self.random_token());
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.local_cseq += 1;
        let mut headers = Headers::new();
        let via_host = SocketAddr::new(c.local_media.ip(), self.config.sip_port);
        headers.push(
            "Via",
            format!("SIP/2.0/UDP {via_host};branch={branch};rport"),
        );
        headers.push("Max-Forwards", "70");
        for route in &c.route_set {
            headers.push("Route", route.clone());
        }
        headers.push("From", c.local_party.clone());
        headers.push("To", c.remote_party.clone());
        headers.push("Call-ID", c.sip_call_id.clone());
        headers.push("CSeq", format!("{} BYE", c.local_cseq));
        headers.push("User-Agent", self.config.user_agent.clone());
        let bye = Request {
            method: Method::Bye,
            uri: c.remote_target.clone(),
            headers,
            body: Vec::new(),
        };
        let bytes = bye.to_bytes();
        let peer = c.peer;
        self.transactions.insert(
            (branch, Method::Bye),
            TxEntry {
                tx: Transaction::client(now, bytes.clone(), self.config.timers),
                peer,
                call: None,
            },
        );
        self.transmits.push_back(Transmit { to: peer, bytes });
    }

    fn remove_call(&mut self, call: CallId) {
        if let Some(c) = self.calls.remove(&call) {
            self.dialogs.remove(&(c.sip_call_id, c.local_tag));
        }
    }

    fn dialog_of(&self, req: &Request) -> Option<CallId> {
        let call_id = req.headers.get("Call-ID")?;
        let local_tag = req.headers.tag("To")?;
        let call = *self
            .dialogs
            .get(&(call_id.to_string(), local_tag.to_string()))?;
        let c = self.calls.get(&call)?;
        (req.headers.tag("From") == Some(c.remote_tag.as_str())).then_some(call)
    }

    fn handle_ack(&mut self, now: Instant, key: &TxKey, req: &Request) {
        // An ACK for a non-2xx final response shares the INVITE's branch.
        if let Some(entry) = self.transactions.get_mut(key)
            && entry.call.is_none_or(|c| {
                self.calls
                    .get(&c)
                    .is_none_or(|c| c.state == CallState::Offered)
            })
        {
            entry.tx.on_ack(now);
            return;
        }
        // An ACK for our 2xx is its own transaction, matched by dialog and CSeq.
        let Some(call) = self.dialog_of(req) else {
            self.stats.unmatched += 1;
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if req.headers.cseq().map(|(n, _)| n) != Some(c.remote_cseq) {
            self.stats.unmatched += 1;
            return;
        }
        let first_ack = self
            .transactions
            .get_mut(&c.invite_key)
            .is_some_and(|e| e.tx.on_ack(now));
        if first_ack && c.state == CallState::Accepted {
            c.state = CallState::Confirmed;
            if !c.established {
                c.established = true;
                self.events.push_back(EndpointEvent::Established { call });
            }
        }
    }

    fn handle_reinvite(&mut self, now: Instant, key: TxKey, req: Request) {
        let Some(call) = self.dialog_of(&req) else {
            self.stats.unmatched += 1;
            return self.simple_response(now, &key, &req, 481);
        };
        let cseq = req.headers.cseq().map_or(0, |(n, _)| n);
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.state != CallState::Confirmed {
            // Our previous INVITE transaction has not finished (RFC 3261 14.2).
            return self.simple_response(now, &key, &req, 491);
        }
        if cseq <= c.remote_cseq {
            return self.simple_response(now, &key, &req, 500);
        }
        let media = match sdp::negotiate(&req.body) {
            Ok(m) => m,
            Err(_) => return self.simple_response(now, &key, &req, 488),
        };
        let contact = format!(
            "<sip:antiphon@{}>",
            SocketAddr::new(c.local_media.ip(), self.config.sip_port)
        );
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.remote_cseq = cseq;
        c.sdp_version += 1;
        c.media = media.clone();
        c.state = CallState::Accepted;
        if let Some(target) = req.headers.get("Contact") {
            c.remote_target = message::addr_uri(target).to_string();
        }
        let mut ok = Response::to(&req, 200, reason(200));
        ok.headers.push("Contact", contact);
        ok.headers.push("Allow", ALLOW);
        ok.headers.push("Content-Type", "application/sdp");
        ok.body = sdp::answer(&media, c.local_media, c.sdp_session, c.sdp_version).into_bytes();
        c.invite = req;
        c.invite_key = key.clone();
        if let Some(e) = self.transactions.get_mut(&key) {
            e.call = Some(call);
        }
        self.respond(now, &key, ok);
        self.events
            .push_back(EndpointEvent::MediaChanged { call, media });
    }

    fn handle_bye(&mut self, now: Instant, key: TxKey, req: Request) {
        let Some(call) = self.dialog_of(&req) else {
            self.stats.unmatched += 1;
            return self.simple_response(now, &key, &req, 481);
        };
        self.simple_response(now, &key, &req, 200);
        self.remove_call(call);
        self.events.push_back(EndpointEvent::Ended {
            call,
            reason: EndReason::RemoteBye,
        });
    }

    fn handle_cancel(&mut self, now: Instant, key: TxKey, req: Request) {
        let invite_key = (key.0.clone(), Method::Invite);
        let Some(invite_entry) = self.transactions.get(&invite_key) else {
            self.stats.unmatched += 1;
            return self.simple_response(now, &key, &req, 481);
        };
        let pending = invite_entry.tx.state() == crate::transaction::State::Proceeding;
        let call = invite_entry.call;
        self.simple_response(now, &key, &req, 200);
        if !pending {
            return; // Too late: the INVITE already has its final response.
        }
        let Some(call) = call else { return };
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let mut resp = Response::to(&c.invite, 487, reason(487));
        resp.headers.set("To", c.local_party.clone());
        self.respond(now, &invite_key, resp);
        self.remove_call(call);
        self.events.push_back(EndpointEvent::Ended {
            call,
            reason: EndReason::Cancelled,
        });
    }

    fn handle_response(&mut self, now: Instant, resp: Response) {
        let key = match (resp.headers.top_branch(), resp.headers.cseq()) {
            (Some(b), Some((_, m))) => (b.to_string(), m),
            _ => {
                self.stats.unmatched += 1;
                return;
            }
        };
        match self.transactions.get_mut(&key) {
            Some(e) if e.tx.kind() == Kind::ClientNonInvite => e.tx.on_response(now, resp.status),
            _ => self.stats.unmatched += 1,
        }
    }

    /// Fires due timers: retransmissions, transaction ends, calls whose 200 was never acked.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut no_ack = Vec::new();
        for entry in self.transactions.values_mut() {
            while let Some(action) = entry.tx.on_timeout(now) {
                match action {
                    TimerAction::Retransmit(bytes) => {
                        self.stats.retransmissions_sent += 1;
                        self.transmits.push_back(Transmit {
                            to: entry.peer,
                            bytes,
                        });
                    }
                    TimerAction::TimedOut(Timeout::NoAck) => no_ack.extend(entry.call),
                    TimerAction::TimedOut(Timeout::NoResponse) => {}
                }
            }
        }
        self.transactions.retain(|_, e| !e.tx.is_terminated());
        for call in no_ack {
            // RFC 3261 13.3.1.4: a 2xx never acknowledged ends the dialog with a BYE.
            if self
                .calls
                .get(&call)
                .is_some_and(|c| c.state == CallState::Accepted)
            {
                self.send_bye(now, call);
                self.remove_call(call);
                self.events.push_back(EndpointEvent::Ended {
                    call,
                    reason: EndReason::NoAck,
                });
            }
        }
    }

    /// The advertised address a call's SDP answer used (for logs).
    pub fn local_media(&self, call: CallId) -> Option<SocketAddr> {
        self.calls.get(&call).map(|c| c.local_media)
    }

    /// The caller's signalling address, for choosing which local IP to advertise.
    pub fn peer(&self, call: CallId) -> Option<IpAddr> {
        self.calls.get(&call).map(|c| c.peer.ip())
    }
}

/// RFC 3581: a top Via with `rport` learns the source port, and `received` the source IP.
fn stamp_via(headers: &mut Headers, source: SocketAddr) {
    let Some(top) = headers.get("Via").map(str::to_string) else {
        return;
    };
    if message::param(&top, "rport") != Some("") {
        return;
    }
    let stamped = top
        .split(';')
        .map(|p| {
            if p.trim().eq_ignore_ascii_case("rport") {
                format!("rport={};received={}", source.port(), source.ip())
            } else {
                p.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(";");
    let rest: Vec<String> = headers.get_all("Via").skip(1).map(str::to_string).collect();
    let others: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    // Rebuild keeping order: the stamped top Via in place of the first Via line.
    let mut rebuilt = Headers::new();
    let mut via_seen = false;
    for (n, v) in others {
        if n.eq_ignore_ascii_case("Via") {
            if !via_seen {
                via_seen = true;
                rebuilt.push("Via", stamped.clone());
                for r in &rest {
                    rebuilt.push("Via", r.clone());
                }
            }
            continue;
        }
        rebuilt.push(&n, v);
    }
    *headers = rebuilt;
}

fn add_to_tag(headers: &mut Headers, tag: &str) {
    if let Some(to) = headers.get("To").map(str::to_string)
        && message::param(&to, "tag").is_none()
    {
        headers.set("To", format!("{to};tag={tag}"));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::message::Message;

    const CALLER: &str = "127.0.0.1:5061";

    fn caller() -> SocketAddr {
        CALLER.parse().unwrap()
    }

    fn sdp_offer(direction: &str) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na={direction}\r\n"
        )
    }

    fn request(method: &str, branch: &str, cseq: u32, to_tag: Option<&str>, body: &str) -> Vec<u8> {
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "{method} sip:agent@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch={branch};rport\r\nFrom: <sip:caller@127.0.0.1>;tag=ct\r\nTo: <sip:agent@127.0.0.1>{to_tag}\r\nCall-ID: call-1\r\nCSeq: {cseq} {method}\r\nContact: <sip:caller@{CALLER}>\r\nMax-Forwards: 70\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn responses(ep: &mut Endpoint) -> Vec<Response> {
        let mut out = Vec::new();
        while let Some(t) = ep.poll_transmit() {
            assert_eq!(t.to, caller());
            match Message::parse(&t.bytes).expect("we send valid SIP") {
                Message::Response(r) => out.push(r),
                Message::Request(r) => panic!("unexpected request {r:?}"),
            }
        }
        out
    }

    fn statuses(rs: &[Response]) -> Vec<u16> {
        rs.iter().map(|r| r.status).collect()
    }

    /// An endpoint that has received one INVITE (responses drained) and reported the call.
    fn ringing_call(start: Instant) -> (Endpoint, CallId) {
        let mut ep = Endpoint::new(EndpointConfig::default());
        ep.handle_datagram(
            start,
            caller(),
            &request("INVITE", "z9hG4bK-i1", 1, None, &sdp_offer("sendrecv")),
        )
        .unwrap();
        responses(&mut ep);
        let EndpointEvent::IncomingCall { call, .. } = events(&mut ep).remove(0) else {
            panic!("the INVITE was reported as an incoming call")
        };
        (ep, call)
    }

    fn events(ep: &mut Endpoint) -> Vec<EndpointEvent> {
        std::iter::from_fn(|| ep.poll_event()).collect()
    }

    /// INVITE, accept, ACK: returns the endpoint, the call and our To tag.
    fn established(start: Instant) -> (Endpoint, CallId, String) {
        let mut ep = Endpoint::new(EndpointConfig::default());
        ep.handle_datagram(
            start,
            caller(),
            &request("INVITE", "z9hG4bK-i1", 1, None, &sdp_offer("sendrecv")),
        )
        .unwrap();
        assert_eq!(statuses(&responses(&mut ep)), [100]);
        let call = match events(&mut ep).as_slice() {
            [
                EndpointEvent::IncomingCall {
                    call, media, from, ..
                },
            ] => {
                assert_eq!(media.payload_type, 0);
                assert_eq!(media.telephone_event, Some(101));
                assert_eq!(from, "sip:caller@127.0.0.1");
                *call
            }
            other => panic!("{other:?}"),
        };
        ep.accept(start, call, "127.0.0.1:20000".parse().unwrap());
        let rs = responses(&mut ep);
        assert_eq!(statuses(&rs), [180, 200]);
        let ok = &rs[1];
        let body = String::from_utf8(ok.body.clone()).unwrap();
        assert!(body.contains("m=audio 20000 RTP/AVP 0 101"), "{body}");
        assert!(
            ok.headers
                .get("Via")
                .unwrap()
                .contains("rport=5061;received=127.0.0.1")
        );
        let tag = ok.headers.tag("To").unwrap().to_string();
        assert_eq!(rs[0].headers.tag("To"), Some(tag.as_str()));
        ep.handle_datagram(
            start,
            caller(),
            &request("ACK", "z9hG4bK-a1", 1, Some(&tag), ""),
        )
        .unwrap();
        assert_eq!(events(&mut ep), [EndpointEvent::Established { call }]);
        (ep, call, tag)
    }

    #[test]
    fn invite_accept_ack_bye() {
        let start = Instant::now();
        let (mut ep, call, tag) = established(start);
        // Acknowledged: no 200 retransmissions follow.
        ep.handle_timeout(start + Duration::from_secs(2));
        assert!(responses(&mut ep).is_empty());
        ep.handle_datagram(
            start,
            caller(),
            &request("BYE", "z9hG4bK-b1", 2, Some(&tag), ""),
        )
        .unwrap();
        assert_eq!(statuses(&responses(&mut ep)), [200]);
        assert_eq!(
            events(&mut ep),
            [EndpointEvent::Ended {
                call,
                reason: EndReason::RemoteBye
            }]
        );
        // A retransmitted BYE gets the same 200 from the transaction, no new event.
        ep.handle_datagram(
            start,
            caller(),
            &request("BYE", "z9hG4bK-b1", 2, Some(&tag), ""),
        )
        .unwrap();
        assert_eq!(statuses(&responses(&mut ep)), [200]);
        assert!(events(&mut ep).is_empty());
        assert_eq!(ep.stats().retransmissions_absorbed, 1);
        assert_eq!(ep.call_count(), 0);
        // Everything is forgotten after Timer J.
        ep.handle_timeout(start + Duration::from_secs(40));
        assert_eq!(ep.next_deadline(), None);
    }

    #[test]
    fn unacknowledged_200_is_resent_then_the_call_ends_with_bye() {
        let start = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default());
        ep.handle_datagram(
            start,
            caller(),
            &request("INVITE", "z9hG4bK-i1", 1, None, &sdp_offer("sendrecv")),
        )
        .unwrap();
        let EndpointEvent::IncomingCall { call, .. } = events(&mut ep).remove(0) else {
            panic!()
        };
        ep.accept(start, call, "127.0.0.1:20000".parse().unwrap());
        responses(&mut ep);
        // A retransmitted INVITE is answered with the 200 again, no new call.
        ep.handle_datagram(
            start,
            caller(),
            &request("INVITE", "z9hG4bK-i1", 1, None, &sdp_offer("sendrecv")),
        )
        .unwrap();
        assert_eq!(statuses(&responses(&mut ep)), [200]);
        assert!(events(&mut ep).is_empty());
        let mut resent = 0;
        let mut bye = None;
        let mut t = start;
        while t < start + Duration::from_secs(40) {
            t += Duration::from_millis(100);
            ep.handle_timeout(t);
            while let Some(tx) = ep.poll_transmit() {
                match Message::parse(&tx.bytes).unwrap() {
                    Message::Response(r) if r.status == 200 => resent += 1,
                    Message::Request(r) => {
                        bye.get_or_insert((t - start, r));
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        // T1 doubling to T2 over 64*T1: 0.5 1.5 3.5 7.5 11.5 ... 31.5 = 10 resends.
        assert_eq!(resent, 10);
        let (at, bye) = bye.expect("BYE after Timer L");
        assert_eq!(at, Duration::from_secs(32));
        assert_eq!(bye.method, Method::Bye);
        assert_eq!(bye.uri, "sip:caller@127.0.0.1:5061");
        assert_eq!(bye.headers.tag("To"), Some("ct"));
        assert_eq!(
            events(&mut ep),
            [EndpointEvent::Ended {
                call,
                reason: EndReason::NoAck
            }]
        );
    }

    #[test]
    fn cancel_before_answer_gives_200_and_487() {
        let start = Instant::now();
        let (mut ep, call) = ringing_call(start);
        ep.handle_datagram(
            start,
            caller(),
            &request("CANCEL", "z9hG4bK-i1", 1, None, ""),
        )
        .unwrap();
        let rs = responses(&mut ep);
        assert_eq!(statuses(&rs), [200, 487]);
        assert_eq!(rs[1].headers.cseq(), Some((1, Method::Invite)));
        assert_eq!(
            events(&mut ep),
            [EndpointEvent::Ended {
                call,
                reason: EndReason::Cancelled
            }]
        );
        // The application's late accept does nothing.
        ep.accept(start, call, "127.0.0.1:20000".parse().unwrap());
        assert!(responses(&mut ep).is_empty());
        // The 487 is resent until the ACK (same branch), then absorbed quietly.
        ep.handle_timeout(start + Duration::from_millis(500));
        assert_eq!(statuses(&responses(&mut ep)), [487]);
        ep.handle_datagram(
            start,
            caller(),
            &request("ACK", "z9hG4bK-i1", 1, Some("x"), ""),
        )
        .unwrap();
        ep.handle_timeout(start + Duration::from_secs(3));
        assert!(responses(&mut ep).is_empty());
        // A CANCEL for nothing is 481.
        ep.handle_datagram(
            start,
            caller(),
            &request("CANCEL", "z9hG4bK-zz", 1, None, ""),
        )
        .unwrap();
        assert_eq!(statuses(&responses(&mut ep)), [481]);
    }

    #[test]
    fn reinvite_hold_and_unhold() {
        let start = Instant::now();
        let (mut ep, call, tag) = established(start);
        ep.handle_datagram(
            start,
            caller(),
            &request(
                "INVITE",
                "z9hG4bK-r1",
                2,
                Some(&tag),
                &sdp_offer("sendonly"),
            ),
        )
        .unwrap();
        let rs = responses(&mut ep);
        assert_eq!(statuses(&rs), [200]);
        let body = String::from_utf8(rs[0].body.clone()).unwrap();
        assert!(body.contains("a=recvonly"), "{body}");
        assert!(
            body.contains("o=antiphon ") && body.contains(" 2 IN IP4"),
            "version grew: {body}"
        );
        match events(&mut ep).as_slice() {
            [EndpointEvent::MediaChanged { call: c, media }] => {
                assert_eq!(*c, call);
                assert!(media.on_hold());
            }
            other => panic!("{other:?}"),
        }
        ep.handle_datagram(
            start,
            caller(),
            &request("ACK", "z9hG4bK-a2", 2, Some(&tag), ""),
        )
        .unwrap();
        assert!(
            events(&mut ep).is_empty(),
            "a re-INVITE's ACK is not a new call"
        );
        ep.handle_datagram(
            start,
            caller(),
            &request(
                "INVITE",
                "z9hG4bK-r2",
                3,
                Some(&tag),
                &sdp_offer("sendrecv"),
            ),
        )
        .unwrap();
        assert_eq!(statuses(&responses(&mut ep)), [200]);
        match events(&mut ep).as_slice() {
            [EndpointEvent::MediaChanged { media, .. }] => assert!(!media.on_hold()),
            other => panic!("{other:?}"),
        }
        // A re-INVITE for another dialog is 481.
        ep.handle_datagram(
            start,
            caller(),
            &request(
                "INVITE",
                "z9hG4bK-r3",
                4,
                Some("nope"),
                &sdp_offer("sendrecv"),
            ),
        )
        .unwrap();
        assert_eq!(statuses(&responses(&mut ep)), [481]);
    }

    #[test]
    fn options_unknown_methods_and_bad_offers() {
        let start = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default());
        ep.handle_datagram(
            start,
            caller(),
            &request("OPTIONS", "z9hG4bK-o1", 1, None, ""),
        )
        .unwrap();
        let rs = responses(&mut ep);
        assert_eq!(statuses(&rs), [200]);
        assert!(rs[0].headers.get("Allow").unwrap().contains("INVITE"));
        ep.handle_datagram(
            start,
            caller(),
            &request("SUBSCRIBE", "z9hG4bK-s1", 1, None, ""),
        )
        .unwrap();
        assert_eq!(statuses(&responses(&mut ep)), [405]);
        let g729 = sdp_offer("sendrecv").replace("RTP/AVP 0 101", "RTP/AVP 18");
        ep.handle_datagram(
            start,
            caller(),
            &request("INVITE", "z9hG4bK-i9", 1, None, &g729),
        )
        .unwrap();
        let rs = responses(&mut ep);
        assert_eq!(statuses(&rs), [100, 488]);
        assert!(rs[1].headers.tag("To").is_some());
        ep.handle_datagram(
            start,
            caller(),
            &request("INVITE", "z9hG4bK-i8", 1, None, ""),
        )
        .unwrap();
        assert_eq!(statuses(&responses(&mut ep)), [100, 488]);
        assert!(events(&mut ep).is_empty());
        ep.handle_datagram(
            start,
            caller(),
            &request("BYE", "z9hG4bK-b9", 2, Some("t"), ""),
        )
        .unwrap();
        assert_eq!(statuses(&responses(&mut ep)), [481]);
    }

    #[test]
    fn malformed_datagrams_are_counted_and_do_not_disturb_calls() {
        let start = Instant::now();
        let (mut ep, call, tag) = established(start);
        let garbage: [&[u8]; 5] = [
            b"\x00\x01\x02",
            b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n",
            b"BYE sip:a@b SIP/3.0\r\n\r\n",
            &request("INVITE", "z9hG4bK-x", 5, Some(&tag), "v=0")[..60],
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
        ];
        for g in garbage {
            assert!(ep.handle_datagram(start, caller(), g).is_err());
        }
        assert_eq!(ep.stats().malformed, 5);
        assert!(
            ep.handle_datagram(start, caller(), b"\r\n\r\n").is_ok(),
            "keepalive"
        );
        assert!(responses(&mut ep).is_empty());
        // The call is still there and hangs up normally.
        ep.hangup(start, call);
        let tx = ep.poll_transmit().unwrap();
        let Message::Request(bye) = Message::parse(&tx.bytes).unwrap() else {
            panic!()
        };
        assert_eq!(bye.method, Method::Bye);
        assert_eq!(bye.headers.tag("From"), Some(tag.as_str()));
        assert_eq!(
            events(&mut ep),
            [EndpointEvent::Ended {
                call,
                reason: EndReason::Local
            }]
        );
        // The caller's 200 completes our BYE transaction: no retransmission follows.
        let branch = bye.headers.top_branch().unwrap();
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\nFrom: x;tag={tag}\r\nTo: <sip:caller@127.0.0.1>;tag=ct\r\nCall-ID: call-1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        ep.handle_datagram(start, caller(), ok.as_bytes()).unwrap();
        ep.handle_timeout(start + Duration::from_secs(1));
        assert!(ep.poll_transmit().is_none());
    }

    #[test]
    fn reject_at_capacity_says_retry_after() {
        let start = Instant::now();
        let (mut ep, call) = ringing_call(start);
        ep.reject(start, call, 503);
        let rs = responses(&mut ep);
        assert_eq!(statuses(&rs), [503]);
        assert_eq!(rs[0].headers.get("Retry-After"), Some("5"));
        assert_eq!(ep.call_count(), 0);
    }

    #[test]
    fn a_record_routing_proxy_stays_in_the_path() {
        let start = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default());
        let invite = String::from_utf8(request(
            "INVITE",
            "z9hG4bK-i1",
            1,
            None,
            &sdp_offer("sendrecv"),
        ))
        .unwrap()
        .replacen(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 69\r\nRecord-Route: <sip:10.0.0.1;lr>\r\nRecord-Route: <sip:10.0.0.2;lr>\r\n",
            1,
        );
        ep.handle_datagram(start, caller(), invite.as_bytes())
            .unwrap();
        let EndpointEvent::IncomingCall { call, .. } = events(&mut ep).remove(0) else {
            panic!("an incoming call")
        };
        ep.accept(start, call, "127.0.0.1:20000".parse().unwrap());
        let rs = responses(&mut ep);
        let ok = rs.iter().find(|r| r.status == 200).expect("a 200");
        assert_eq!(
            ok.headers.get_all("Record-Route").collect::<Vec<_>>(),
            ["<sip:10.0.0.1;lr>", "<sip:10.0.0.2;lr>"]
        );
        let tag = ok.headers.tag("To").unwrap().to_string();
        ep.handle_datagram(
            start,
            caller(),
            &request("ACK", "z9hG4bK-a1", 1, Some(&tag), ""),
        )
        .unwrap();
        ep.hangup(start, call);
        let bye = ep.poll_transmit().expect("a BYE");
        let Message::Request(bye) = Message::parse(&bye.bytes).unwrap() else {
            panic!("a request")
        };
        assert_eq!(bye.method, Method::Bye);
        assert_eq!(
            bye.headers.get_all("Route").collect::<Vec<_>>(),
            ["<sip:10.0.0.1;lr>", "<sip:10.0.0.2;lr>"],
            "in the order of the INVITE's Record-Route"
        );
    }

    #[test]
    fn options_says_503_while_no_new_call_is_welcome() {
        let start = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default());
        ep.set_accepting(false);
        ep.handle_datagram(
            start,
            caller(),
            &request("OPTIONS", "z9hG4bK-k1", 1, None, ""),
        )
        .unwrap();
        let rs = responses(&mut ep);
        assert_eq!(statuses(&rs), [503]);
        assert_eq!(rs[0].headers.get("Retry-After"), Some("5"));
        ep.set_accepting(true);
        ep.handle_datagram(
            start,
            caller(),
            &request("OPTIONS", "z9hG4bK-k2", 2, None, ""),
        )
        .unwrap();
        assert_eq!(statuses(&responses(&mut ep)), [200]);
    }
}
