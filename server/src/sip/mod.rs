//! Direct SIP over UDP with RTP media: `antiphon serve --sip ADDR` (or `[sip] listen`).
//!
//! One task owns the signalling socket and the sans-IO [`antiphon_sip::Endpoint`]: it feeds
//! datagrams and timer wake-ups in and sends what the endpoint asks. New INVITEs pass the
//! per-source [`guard`] first (over its limits: dropped unanswered). An INVITE is answered 200
//! while the server has room (else 503 with Retry-After; an offer without PCMU/PCMA gets 488
//! from the core), but the call becomes a session of the pipeline (`AppState::admit`, then
//! `session::channel::spawn`, engine slots leased) only at the caller's ACK: a call that never
//! completes the handshake holds RTP ports for at most 32 s and no engine slot. Each session
//! is driven by its own media task ([`call`]) that owns the call's RTP/RTCP sockets.
//! An out-of-dialog OPTIONS (a proxy's keepalive) is answered 200 while the server has room
//! and 503 while it is full or draining, so a dispatcher sends calls to nodes that take them.
//! See docs/SIP.md and docs/DEPLOY.md.

pub mod call;
pub mod guard;
pub mod playout;
pub mod ports;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use antiphon_sip::sdp::Codec;
use antiphon_sip::{CallId, Endpoint, EndpointConfig, EndpointEvent};
use anyhow::Context as _;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::app::AppState;
use crate::config::SipConfig;
use crate::metrics::Counter;
use crate::session;
use crate::session::events::{AudioFormat, Transcription};
use antiphon_sip::sdp::Negotiated;
use call::{CallControl, CallSetup};
use guard::{GuardLimits, InviteGuard, Verdict};
use ports::RtpPorts;

/// The `transport` label of SIP calls in metrics.
pub const TRANSPORT: &str = "sip";

/// Binds the signalling socket (before the server announces itself).
pub async fn bind(listen: &str) -> anyhow::Result<UdpSocket> {
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("invalid SIP listen address {listen:?}"))?;
    UdpSocket::bind(addr)
        .await
        .with_context(|| format!("cannot listen for SIP on udp {addr}"))
}

/// The local IP that routes to `peer` (no packet is sent: connecting a UDP socket only picks
/// the route).
fn local_ip_towards(peer: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if peer.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(peer).ok()?;
    Some(s.local_addr().ok()?.ip())
}

/// A call answered 200 and waiting for its ACK: its RTP sockets are bound (the caller may send
/// media before the ACK arrives; it waits in the socket) but it has no session yet.
struct AnsweredCall {
    from: String,
    to: String,
    source: SocketAddr,
    media: Negotiated,
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

/// How often sources with nothing pending are forgotten by the guard.
const GUARD_SWEEP: Duration = Duration::from_secs(10);

/// Runs the SIP server until the process ends.
pub async fn run(state: Arc<AppState>, socket: UdpSocket, config: SipConfig) -> anyhow::Result<()> {
    let local = socket.local_addr()?;
    let public_ip: Option<IpAddr> = config.public_ip.parse().ok();
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let mut endpoint = Endpoint::new(EndpointConfig {
        sip_port: local.port(),
        seed,
        ..EndpointConfig::default()
    });
    let mut ports = RtpPorts::new(config.rtp_port_min, config.rtp_port_max);
    let (hangup_tx, mut hangup_rx) = mpsc::channel::<CallId>(64);
    let mut calls: HashMap<CallId, mpsc::Sender<CallControl>> = HashMap::new();
    let mut answered: HashMap<CallId, AnsweredCall> = HashMap::new();
    let mut guard = InviteGuard::new(GuardLimits {
        invites_per_second: config.invites_per_second_per_source,
        burst: config.invite_burst_per_source,
        max_unconfirmed: config.max_unconfirmed_per_source,
    });
    let mut swept = Instant::now();
    let mut buf = vec![0u8; 65_536];
    let metrics = state.metrics.clone();
    tracing::info!(%local, "SIP listening (UDP)");
    loop {
        let deadline = endpoint.next_deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let now = Instant::now();
                match r {
                    Ok((n, source)) => match guard.check(now, source.ip(), &buf[..n]) {
                        Verdict::Pass => {
                            // A proxy's OPTIONS keepalive learns whether this node takes calls.
                            endpoint.set_accepting(state.health().free_sessions() > answered.len());
                            if let Err(e) = endpoint.handle_datagram(now, source, &buf[..n]) {
                                metrics.add(Counter::SipMalformed, TRANSPORT, &[], 1);
                                tracing::info!(%source, error = %e, bytes = n, "dropped a malformed SIP datagram");
                            }
                        }
                        dropped => {
                            metrics.add(
                                Counter::SipInvitesDropped,
                                TRANSPORT,
                                &[("reason", dropped.reason())],
                                1,
                            );
                            tracing::debug!(%source, reason = dropped.reason(), "dropped an INVITE unanswered");
                        }
                    },
                    // ICMP errors from earlier sends surface here on some systems: not fatal.
                    Err(e) => tracing::debug!(error = %e, "SIP socket receive error"),
                }
                if now.duration_since(swept) >= GUARD_SWEEP {
                    guard.forget_idle(now);
                    swept = now;
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                endpoint.handle_timeout(Instant::now());
            }
            Some(call) = hangup_rx.recv() => {
                endpoint.hangup(Instant::now(), call);
            }
        }
        while let Some(event) = endpoint.poll_event() {
            match event {
                EndpointEvent::IncomingCall {
                    call,
                    from,
                    to,
                    source,
                    media,
                } => {
                    let now = Instant::now();
                    // Room for this call besides those answered and not yet acknowledged,
                    // which become sessions at their ACK.
                    let health = state.health();
                    if health.free_sessions() <= answered.len() {
                        let reason = if health.draining {
                            "draining"
                        } else if health.failed() {
                            "engines"
                        } else if health.behind().is_some() {
                            "engine_backlog"
                        } else {
                            "capacity"
                        };
                        metrics.add(
                            Counter::SessionsRefused,
                            TRANSPORT,
                            &[("reason", reason)],
                            1,
                        );
                        tracing::warn!(%from, answered = answered.len(), "call refused: no room for another session");
                        endpoint.reject(now, call, 503);
                        continue;
                    }
                    let advertised = public_ip
                        .or_else(|| (!local.ip().is_unspecified()).then_some(local.ip()))
                        .or_else(|| local_ip_towards(source));
                    let Some(advertised) = advertised else {
                        tracing::warn!(%source, "no local address routes to the caller");
                        endpoint.reject(now, call, 500);
                        continue;
                    };
                    let Some((rtp, rtcp)) = ports.bind(local.ip()) else {
                        tracing::warn!("no free RTP port in the configured range");
                        metrics.add(
                            Counter::SessionsRefused,
                            TRANSPORT,
                            &[("reason", "rtp_ports")],
                            1,
                        );
                        endpoint.reject(now, call, 503);
                        continue;
                    };
                    let (Ok(rtp), Ok(rtcp)) = (UdpSocket::from_std(rtp), UdpSocket::from_std(rtcp))
                    else {
                        endpoint.reject(now, call, 500);
                        continue;
                    };
                    let rtp_port = rtp.local_addr().map(|a| a.port()).unwrap_or(0);
                    answered.insert(
                        call,
                        AnsweredCall {
                            from,
                            to,
                            source,
                            media,
                            rtp,
                            rtcp,
                        },
                    );
                    endpoint.accept(now, call, SocketAddr::new(advertised, rtp_port));
                }
                EndpointEvent::Established { call } => {
                    tracing::debug!(call = call.0, "call established (ACK)");
                    let Some(answered_call) = answered.remove(&call) else {
                        continue;
                    };
                    match start_session(&state, call, answered_call, &hangup_tx) {
                        Some(control) => {
                            calls.insert(call, control);
                        }
                        // Taken by another transport since the INVITE: the caller is told by BYE.
                        None => endpoint.hangup(Instant::now(), call),
                    }
                }
                EndpointEvent::MediaChanged { call, media } => {
                    if let Some(tx) = calls.get(&call) {
                        let _ = tx.try_send(CallControl::Media(media));
                    } else if let Some(a) = answered.get_mut(&call) {
                        a.media = media;
                    }
                }
                EndpointEvent::Ended { call, reason } => {
                    tracing::info!(call = call.0, ?reason, "call signalling ended");
                    // Dropping the control sender ends the media task and so the session; an
                    // unacknowledged call's RTP ports are freed with it.
                    calls.remove(&call);
                    answered.remove(&call);
                }
            }
        }
        state
            .sip_calls_answered
            .store(answered.len(), std::sync::atomic::Ordering::SeqCst);
        while let Some(t) = endpoint.poll_transmit() {
            if let Err(e) = socket.send_to(&t.bytes, t.to).await {
                tracing::debug!(to = %t.to, error = %e, "SIP send failed");
            }
        }
    }
}

/// Makes an acknowledged call a session: admission (engine slots leased now), then its media
/// task. `None` when admission refuses (the caller is then hung up on).
fn start_session(
    state: &Arc<AppState>,
    call: CallId,
    answered: AnsweredCall,
    hangup: &mpsc::Sender<CallId>,
) -> Option<mpsc::Sender<CallControl>> {
    let AnsweredCall {
        from,
        to,
        source,
        media,
        rtp,
        rtcp,
    } = answered;
    let format = match media.codec {
        Codec::Pcmu => AudioFormat::G711Ulaw,
        Codec::Pcma => AudioFormat::G711Alaw,
    };
    // Promised at the INVITE: a drain that began since does not take it back.
    let mut params = match state.admit_promised(TRANSPORT, (format, format)) {
        Ok(p) => p,
        Err(refusal) => {
            tracing::warn!(%from, code = refusal.code, "acknowledged call refused: {}", refusal.message);
            return None;
        }
    };
    // Caller transcripts are logged per call (and kept in the conversation).
    params.initial.transcription = Some(Transcription::default());
    let rtp_port = rtp.local_addr().map(|a| a.port()).unwrap_or(0);
    let session_id = params.session_id.clone();
    let channels = session::channel::spawn(params);
    let (control_tx, control) = mpsc::channel(8);
    let span = tracing::info_span!("sip_call", call = call.0, session = %session_id);
    span.in_scope(|| tracing::info!(%from, %to, %source, rtp_port, "call accepted"));
    tokio::spawn(
        call::run(CallSetup {
            call,
            rtp,
            rtcp,
            media,
            channels,
            control,
            hangup: hangup.clone(),
            metrics: state.metrics.clone(),
        })
        .instrument(span),
    );
    Some(control_tx)
}
