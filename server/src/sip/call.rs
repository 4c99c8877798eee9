//! One call's media: a tokio task owning its RTP/RTCP sockets, the jitter buffer for caller
//! audio, the outgoing [`Playout`] paced by a 20 ms clock, and the ends of its session.
//!
//! - In: RTP from the caller is parsed (malformed packets and unknown payload types are
//!   dropped, logged at debug and counted), G.711 goes through the jitter buffer into the
//!   session as f32 frames stamped with each packet's arrival, RFC 4733 telephone-events become
//!   one DTMF key press each (the session adds it to the conversation as `DTMF <key>`).
//! - Symmetric RTP: replies go to where the caller's RTP comes from (the first valid packet
//!   latches the address, which is what works behind NAT); until then, to the SDP address.
//!   After latching, RTP from other addresses is dropped (counted). A re-INVITE unlatches.
//! - Out: every 20 ms one packet (reply audio, or silence between replies; none on hold).
//!   Barge-in (the session's `StopPlayout`, after its echo guard: the caller hearing our own
//!   reply back does not cut it) empties the queue, so the next packet is silence, and sends
//!   the session how much of the item was actually sent (`Played`).
//! - RTCP: incoming compound packets are validated and counted; a sender report goes out every
//!   5 s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use antiphon_audio::frame::AudioFrame;
use antiphon_audio::g711::Law;
use antiphon_audio::jitter::{JitterBuffer, JitterConfig, JitterOutput};
use antiphon_sip::CallId;
use antiphon_sip::rtp::{self, DtmfDetector, RtpSender};
use antiphon_sip::sdp::{Codec, Negotiated};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::TRANSPORT;
use super::playout::{FRAME_BYTES, Frame, Playout};
use crate::metrics::{Counter, Metrics};
use crate::session::LegIn;
use crate::session::audio_format::OutputEncoder;
use crate::session::channel::SessionChannels;
use crate::session::events::{AudioFormat, ServerEvent};

/// Reply audio held at most (the session streams faster than real time): 2 minutes.
const MAX_QUEUED_BYTES: usize = 8000 * 120;
const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// Log at most this many malformed packets per call (the counter keeps counting).
const MAX_MALFORMED_LOGS: u64 = 5;

/// Signalling -> call.
#[derive(Debug)]
pub enum CallControl {
    /// A re-INVITE changed the media (hold/unhold, new address).
    Media(Negotiated),
}

pub struct CallSetup {
    pub call: CallId,
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub media: Negotiated,
    pub channels: SessionChannels,
    pub control: mpsc::Receiver<CallControl>,
    /// Told when the session ends on its own, so signalling sends BYE.
    pub hangup: mpsc::Sender<CallId>,
    pub metrics: Arc<Metrics>,
}

pub fn law(codec: Codec) -> Law {
    match codec {
        Codec::Pcmu => Law::Mu,
        Codec::Pcma => Law::A,
    }
}

#[derive(Default)]
struct Counters {
    rtp_in: u64,
    rtp_out: u64,
    malformed: u64,
    unknown_payload: u64,
    foreign_source: u64,
    rtcp_in: u64,
    dtmf: u64,
    dropped_to_session: u64,
}

struct Media {
    codec: Codec,
    payload_type: u8,
    telephone_event: Option<u8>,
    remote: SocketAddr,
    latched: bool,
    hold: bool,
}

impl Media {
    fn from(n: &Negotiated) -> Self {
        Media {
            codec: n.codec,
            payload_type: n.payload_type,
            telephone_event: n.telephone_event,
            remote: n.remote,
            latched: false,
            hold: n.on_hold(),
        }
    }
}

fn ntp_now() -> u64 {
    // NTP epoch is 1900; Unix 1970 is 2_208_988_800 s later.
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

fn seed32() -> u32 {
    let n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    n ^ std::process::id().rotate_left(16)
}

pub async fn run(setup: CallSetup) {
    let CallSetup {
        call,
        rtp,
        rtcp,
        media,
        channels,
        mut control,
        hangup,
        metrics,
    } = setup;
    let SessionChannels {
        to_session,
        mut from_session,
        task: _task,
    } = channels;
    let mut media = Media::from(&media);
    let the_law = law(media.codec);
    let silence = the_law.silence_code();
    let mut playout = Playout::new(silence, MAX_QUEUED_BYTES);
    let mut encoder = OutputEncoder::new(match the_law {
        Law::Mu => AudioFormat::G711Ulaw,
        Law::A => AudioFormat::G711Alaw,
    });
    let seed = seed32();
    let mut sender = RtpSender::new(seed, media.payload_type, seed as u16, seed.rotate_left(7));
    let mut jitter: JitterBuffer<Vec<u8>> = JitterBuffer::new(JitterConfig::new(8000));
    let mut dtmf = DtmfDetector::default();
    let mut counters = Counters::default();
    let mut frame = [0u8; FRAME_BYTES];
    let mut first_packet = true;
    let mut last_payload_len = FRAME_BYTES;
    let mut rtcp_remote: Option<SocketAddr> = None;
    let mut transcript = String::new();
    let mut buf = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; 2048];

    // The media clock: packet n is due at start + n * 20 ms. After a short stall of this task
    // (a busy machine) the missed packets go out back to back, so the stream keeps real time
    // and the receiver's jitter buffer absorbs the bunching (tokio's `Delay` would instead
    // shift every later packet, adding latency with each stall, ~4% on a loaded 2-core box).
    // After a long stall the missed packets are skipped and the timestamp jumps: the caller
    // hears a pause instead of a burst its jitter buffer cannot hold.
    let mut pacer = Pacer::new(tokio::time::Instant::now());
    let mut rtcp_tick = tokio::time::interval(RTCP_INTERVAL);
    rtcp_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    tracing::info!(remote = %media.remote, codec = media.codec.name(), "call media started");

    let why = loop {
        let jitter_deadline = jitter.next_deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = tokio::time::sleep_until(pacer.due()) => {
                let skipped = pacer.advance(tokio::time::Instant::now());
                if skipped > 0 {
                    sender.skip(skipped * FRAME_BYTES as u32);
                    tracing::debug!(skipped, "media clock stalled; skipped packets");
                }
                if media.hold {
                    sender.skip(FRAME_BYTES as u32);
                    continue;
                }
                let underruns = playout.underruns;
                let kind = playout.next_frame(&mut frame);
                if playout.underruns > underruns && playout.underruns <= MAX_MALFORMED_LOGS {
                    tracing::info!(sent_packets = counters.rtp_out, "playout underrun: reply audio ran dry mid-reply");
                }
                let marker = match kind {
                    Frame::Speech { marker } => marker,
                    Frame::Silence => false,
                } || first_packet;
                first_packet = false;
                let packet = sender.packet(&frame, marker);
                if let Err(e) = rtp.send_to(packet, media.remote).await {
                    tracing::debug!(error = %e, "rtp send failed");
                } else {
                    counters.rtp_out += 1;
                }
            }
            r = rtp.recv_from(&mut buf) => {
                let now = Instant::now();
                let Ok((n, source)) = r else { continue };
                let bytes = &buf[..n];
                if rtp::looks_like_rtcp(bytes) {
                    note_rtcp(bytes, &mut counters, &metrics);
                    continue;
                }
                let packet = match rtp::parse(bytes) {
                    Ok(p) => p,
                    Err(e) => {
                        malformed(&mut counters, &metrics, "rtp", &e);
                        continue;
                    }
                };
                let pt = packet.header.payload_type;
                let known = pt == media.payload_type || Some(pt) == media.telephone_event;
                if !known {
                    counters.unknown_payload += 1;
                    metrics.add(Counter::RtpDropped, TRANSPORT, &[("reason", "payload_type")], 1);
                    if counters.unknown_payload <= MAX_MALFORMED_LOGS {
                        tracing::debug!(payload_type = pt, "dropped RTP with an unnegotiated payload type");
                    }
                    continue;
                }
                if source != media.remote {
                    if media.latched {
                        counters.foreign_source += 1;
                        metrics.add(Counter::RtpDropped, TRANSPORT, &[("reason", "source")], 1);
                        continue;
                    }
                    tracing::info!(from = %media.remote, to = %source, "symmetric RTP: replying to the caller's source address");
                    media.remote = source;
                }
                media.latched = true;
                counters.rtp_in += 1;
                if pt == media.payload_type {
                    last_payload_len = packet.payload.len();
                    jitter.push(now, packet.header.sequence, packet.header.timestamp, packet.payload.to_vec());
                } else if let Ok(event) = rtp::parse_dtmf(packet.payload) {
                    if let Some(key) = dtmf.on_packet(packet.header.timestamp, &event) {
                        counters.dtmf += 1;
                        metrics.add(Counter::SipDtmf, TRANSPORT, &[], 1);
                        tracing::info!(%key, "DTMF");
                        let _ = to_session.try_send(LegIn::Dtmf(key));
                    }
                } else {
                    malformed(&mut counters, &metrics, "telephone-event", &"bad payload length");
                }
            }
            _ = tokio::time::sleep_until(jitter_deadline.unwrap_or_else(tokio::time::Instant::now)), if jitter_deadline.is_some() => {
                let now = Instant::now();
                while let Some(out) = jitter.pop(now) {
                    // The arrival instant stamped when the packet was read travels with it.
                    let (codes, timestamp, arrival) = match out {
                        JitterOutput::Packet { payload, timestamp, arrival, .. } => (payload, timestamp, arrival),
                        JitterOutput::Missing { timestamp, .. } => (vec![silence; last_payload_len], timestamp, now),
                    };
                    let mut samples = Vec::with_capacity(codes.len());
                    the_law.decode(&codes, &mut samples);
                    let frame = AudioFrame::new(samples, 8000, u64::from(timestamp), arrival);
                    if to_session.try_send(LegIn::Audio(frame)).is_err() {
                        counters.dropped_to_session += 1;
                    }
                }
            }
            r = rtcp.recv_from(&mut rtcp_buf) => {
                if let Ok((n, source)) = r {
                    rtcp_remote.get_or_insert(source);
                    note_rtcp(&rtcp_buf[..n], &mut counters, &metrics);
                }
            }
            _ = rtcp_tick.tick() => {
                if counters.rtp_out > 0 {
                    let to = rtcp_remote.unwrap_or_else(|| SocketAddr::new(media.remote.ip(), media.remote.port().wrapping_add(1)));
                    let sr = rtp::sender_report(sender.ssrc(), ntp_now(), sender.timestamp(), sender.packets(), sender.octets(), "antiphon");
                    let _ = rtcp.send_to(&sr, to).await;
                }
            }
            event = from_session.recv() => {
                let Some(event) = event else { break "session ended" };
                match event {
                    // Reply audio arrives as f32: encoded here, once, to the call's law.
                    ServerEvent::AudioOut { part, frame } => match encoder.encode(&frame.samples, frame.sample_rate) {
                        Ok(codes) => playout.push(&part.item_id, &codes),
                        Err(e) => tracing::warn!(error = %e, "reply audio unusable"),
                    },
                    ServerEvent::AudioDone { .. } | ServerEvent::ResponseDone(_) => playout.reply_done(),
                    // The session decided the caller interrupted (past its echo guard).
                    ServerEvent::StopPlayout => {
                        if let Some(cut) = playout.barge_in() {
                            tracing::info!(item = %cut.item_id, heard_ms = cut.audio_end_ms, "barge-in: reply cut");
                            metrics.add(Counter::SipBargeIn, TRANSPORT, &[], 1);
                            let _ = to_session.try_send(LegIn::Played {
                                item_id: cut.item_id,
                                audio_end_ms: cut.audio_end_ms,
                            });
                        }
                    }
                    ServerEvent::TranscriptionCompleted { transcript: t, .. } => {
                        tracing::info!(transcript = ?t, "caller said");
                        if !transcript.is_empty() { transcript.push(' '); }
                        transcript.push_str(t.trim());
                    }
                    ServerEvent::TurnLatency(l) => {
                        tracing::info!(first_audio_sent_ms = ?l.first_audio_sent_ms, asr_final_ms = ?l.asr_final_ms, llm_first_token_ms = ?l.llm_first_token_ms, tts_first_audio_ms = ?l.tts_first_audio_ms, "turn latency");
                    }
                    ServerEvent::Error(e) => tracing::warn!(code = %e.code, message = %e.message, "session error"),
                    _ => {}
                }
            }
            ctl = control.recv() => {
                match ctl {
                    Some(CallControl::Media(n)) => {
                        if n.codec != media.codec {
                            tracing::warn!(from = media.codec.name(), to = n.codec.name(), "re-INVITE changed the codec; the session keeps its format");
                        }
                        let hold = n.on_hold();
                        if hold != media.hold {
                            tracing::info!(hold, "hold state changed");
                        }
                        media = Media::from(&n);
                        media.codec = match the_law { Law::Mu => Codec::Pcmu, Law::A => Codec::Pcma };
                        sender.set_payload_type(media.payload_type);
                        first_packet = true;
                    }
                    None => break "hung up",
                }
            }
        }
    };
    if why == "session ended" {
        let _ = hangup.send(call).await;
    }
    let j = jitter.stats();
    tracing::info!(
        why,
        transcript = ?transcript,
        rtp_in = counters.rtp_in,
        rtp_out = counters.rtp_out,
        malformed = counters.malformed,
        unknown_payload = counters.unknown_payload,
        foreign_source = counters.foreign_source,
        rtcp_in = counters.rtcp_in,
        dtmf = counters.dtmf,
        underruns = playout.underruns,
        underrun_ms = playout.underrun_frames * 20,
        jitter_lost = j.lost,
        jitter_late = j.late,
        dropped_to_session = counters.dropped_to_session,
        "call ended"
    );
    metrics.add(
        Counter::SipPlayoutUnderruns,
        TRANSPORT,
        &[],
        playout.underruns,
    );
    export_call_counters(&metrics, &counters, &j, playout.overflow_bytes);
}

/// Extra labels of one metric series.
type Labels = &'static [(&'static str, &'static str)];

/// The call's own counters, added to `/metrics` as it ends (the live ones are counted as they
/// happen, above).
fn export_call_counters(
    metrics: &Metrics,
    counters: &Counters,
    jitter: &antiphon_audio::jitter::JitterStats,
    playout_overflow_bytes: u64,
) {
    let series: [(Counter, Labels, u64); 9] = [
        (Counter::RtpPackets, &[("direction", "in")], counters.rtp_in),
        (
            Counter::RtpPackets,
            &[("direction", "out")],
            counters.rtp_out,
        ),
        (Counter::RtcpPackets, &[], counters.rtcp_in),
        (Counter::JitterPackets, &[("outcome", "lost")], jitter.lost),
        (Counter::JitterPackets, &[("outcome", "late")], jitter.late),
        (
            Counter::JitterPackets,
            &[("outcome", "duplicate")],
            jitter.duplicates,
        ),
        (
            Counter::JitterPackets,
            &[("outcome", "overflow")],
            jitter.overflow_dropped,
        ),
        (
            Counter::RtpDropped,
            &[("reason", "session_queue")],
            counters.dropped_to_session,
        ),
        (
            Counter::SipPlayoutOverflowBytes,
            &[],
            playout_overflow_bytes,
        ),
    ];
    for (name, labels, n) in series {
        if n > 0 {
            metrics.add(name, TRANSPORT, labels, n);
        }
    }
}

/// Packet deadlines on the media clock, with bounded catch-up after a stall.
struct Pacer {
    next: tokio::time::Instant,
}

/// Up to this many late packets are caught up back to back (200 ms); beyond, they are skipped.
const MAX_CATCH_UP: u32 = 10;
const PACKET: Duration = Duration::from_millis(20);

impl Pacer {
    fn new(start: tokio::time::Instant) -> Self {
        Pacer { next: start }
    }

    fn due(&self) -> tokio::time::Instant {
        self.next
    }

    /// Called when the due packet is sent at `now`: moves to the next deadline and returns how
    /// many packets were skipped because the task fell too far behind.
    fn advance(&mut self, now: tokio::time::Instant) -> u32 {
        let behind = u32::try_from((now.saturating_duration_since(self.next)).as_millis() / 20)
            .unwrap_or(u32::MAX);
        let skipped = if behind > MAX_CATCH_UP { behind } else { 0 };
        self.next += PACKET * (skipped + 1);
        skipped
    }
}

fn note_rtcp(bytes: &[u8], counters: &mut Counters, metrics: &Metrics) {
    match rtp::parse_rtcp(bytes) {
        Ok(_) => counters.rtcp_in += 1,
        Err(e) => malformed(counters, metrics, "rtcp", &e),
    }
}

fn malformed(
    counters: &mut Counters,
    metrics: &Metrics,
    what: &'static str,
    e: &dyn std::fmt::Display,
) {
    counters.malformed += 1;
    metrics.add(Counter::RtpMalformed, TRANSPORT, &[("kind", what)], 1);
    if counters.malformed <= MAX_MALFORMED_LOGS {
        tracing::info!(kind = what, error = %e, "dropped a malformed packet");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_catches_up_short_stalls_and_skips_long_ones() {
        let t0 = tokio::time::Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut p = Pacer::new(t0);
        assert_eq!(p.advance(ms(1)), 0);
        assert_eq!(p.due(), ms(20));
        // Woken 100 ms late: the next deadlines are already due (sent back to back).
        assert_eq!(p.advance(ms(120)), 0);
        assert_eq!(p.due(), ms(40));
        for _ in 0..5 {
            assert_eq!(p.advance(ms(121)), 0);
        }
        assert_eq!(p.due(), ms(140));
        // Woken 500 ms late: 25 packets skipped, the clock resumes from now.
        assert_eq!(p.advance(ms(640)), 25);
        assert_eq!(p.due(), ms(660));
    }
}
