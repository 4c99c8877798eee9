//! One WebRTC peer: a tokio task that owns its UDP sockets, the str0m [`Rtc`] (ICE, DTLS-SRTP,
//! SCTP), the Opus codecs and the reply [`Playout`], and talks to its voice session through
//! the channel transport. It waits on datagrams, session events, the 20 ms playout clock, the
//! `Rtc`'s own deadline and a hang-up signal; after every mutation of the `Rtc` it drains
//! `poll_output` to a timeout (str0m's one rule).

use crate::session::audio_format::ChunkResampler;
use antiphon_audio::frame::AudioFrame;
use antiphon_audio::opus_codec::SAMPLE_RATE;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc, RtcError};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant as TokioInstant, sleep_until};

use super::codec::{CodecError, Downlink, Uplink};
use super::playout::{FRAME, Note, Playout};
use crate::realtime::protocol::{self, Dialect};
use crate::session::LegIn;
use crate::session::channel::SessionChannels;
use crate::session::events::Limits;
use crate::session::events::{ClientEvent, ClientMessage, ErrorInfo, ServerEvent};

/// How long ICE + DTLS may take before the peer gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const FRAME_PERIOD: Duration = Duration::from_millis(20);
/// Server events held while the data channel is not open yet (`session.created` comes first).
const MAX_PENDING_MESSAGES: usize = 1024;
/// Lost caller packets concealed per gap, at most.
const MAX_CONCEALED: u64 = 5;
/// Opus RTP clock: 48 kHz, 960 ticks per 20 ms frame.
const RTP_TICKS_PER_FRAME: u64 = 960;

/// Everything one peer task needs.
pub struct PeerParams {
    pub id: String,
    pub rtc: Rtc,
    pub sockets: Vec<Arc<UdpSocket>>,
    pub session: SessionChannels,
    pub limits: Limits,
    pub hangup: oneshot::Receiver<()>,
}

/// Why a peer ended.
#[derive(Debug)]
pub enum PeerEnd {
    HungUp,
    Disconnected,
    ConnectTimeout,
    SessionEnded,
    Failed(String),
}

impl From<RtcError> for PeerEnd {
    fn from(e: RtcError) -> Self {
        PeerEnd::Failed(format!("webrtc: {e}"))
    }
}

impl From<CodecError> for PeerEnd {
    fn from(e: CodecError) -> Self {
        PeerEnd::Failed(format!("codec: {e}"))
    }
}

struct Datagram {
    at: Instant,
    source: SocketAddr,
    destination: SocketAddr,
    data: Vec<u8>,
}

/// Aborts the socket readers when the peer ends, however it ends.
struct Readers(Vec<JoinHandle<()>>);

impl Drop for Readers {
    fn drop(&mut self) {
        for r in &self.0 {
            r.abort();
        }
    }
}

fn spawn_readers(sockets: &[Arc<UdpSocket>], tx: mpsc::Sender<Datagram>) -> Readers {
    Readers(
        sockets
            .iter()
            .map(|socket| {
                let socket = socket.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(destination) = socket.local_addr() else {
                        return;
                    };
                    let mut buf = vec![0u8; 2000];
                    loop {
                        match socket.recv_from(&mut buf).await {
                            Ok((n, source)) => {
                                let d = Datagram {
                                    at: Instant::now(),
                                    source,
                                    destination,
                                    data: buf[..n].to_vec(),
                                };
                                if tx.send(d).await.is_err() {
                                    return;
                                }
                            }
                            // ICMP errors from an earlier send surface here: keep reading.
                            Err(e) => tracing::debug!("webrtc socket read: {e}"),
                        }
                    }
                })
            })
            .collect(),
    )
}

struct Peer {
    rtc: Rtc,
    sockets: Vec<Arc<UdpSocket>>,
    rtc_deadline: Instant,
    /// `Rtc` events waiting to be handled (collected while draining).
    events: VecDeque<Event>,
    connected: bool,
    audio: Option<(Mid, Option<Pt>)>,
    channel: Option<str0m::channel::ChannelId>,
    /// Messages for the data channel before it opened.
    pending: VecDeque<String>,
    next_event_id: u64,
    frames_sent: u64,
    /// Extended RTP sequence number of the last caller packet (gaps are concealed).
    last_seq: Option<u64>,
    /// Caller audio samples (48 kHz) passed to the session so far: its media clock.
    samples_in: u64,
    /// Reply audio (TTS rate) -> the playout's 48 kHz.
    reply_audio: ChunkResampler,
}

impl Peer {
    /// Decoded caller audio as a frame on the media clock, stamped with its arrival.
    fn caller_frame(&mut self, samples: Vec<f32>, arrival: Instant) -> AudioFrame {
        let at = self.samples_in;
        self.samples_in += samples.len() as u64;
        AudioFrame::new(samples, SAMPLE_RATE, at, arrival)
    }

    /// Drains `poll_output` to its timeout: datagrams go out, events are kept for later.
    fn drain(&mut self) -> Result<(), PeerEnd> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => {
                    self.rtc_deadline = t;
                    return Ok(());
                }
                Output::Transmit(t) => {
                    let socket = self
                        .sockets
                        .iter()
                        .find(|s| s.local_addr().is_ok_and(|a| a == t.source))
                        .or(self.sockets.first());
                    if let Some(s) = socket
                        && let Err(e) = s.try_send_to(&t.contents, t.destination)
                    {
                        // UDP: a full send buffer is packet loss, which RTP/SCTP recover from.
                        tracing::debug!("webrtc send to {}: {e}", t.destination);
                    }
                }
                Output::Event(e) => self.events.push_back(e),
            }
        }
    }

    fn input(&mut self, input: Input) -> Result<(), PeerEnd> {
        self.rtc.handle_input(input)?;
        self.drain()
    }

    /// Sends one text message on the data channel, or keeps it until the channel opens.
    fn send_text(&mut self, text: String) -> Result<(), PeerEnd> {
        let Some(id) = self.channel else {
            if self.pending.len() < MAX_PENDING_MESSAGES {
                self.pending.push_back(text);
            }
            return Ok(());
        };
        if let Some(mut ch) = self.rtc.channel(id) {
            match ch.write(false, text.as_bytes()) {
                Ok(true) => {}
                Ok(false) => tracing::warn!("webrtc data channel full: event dropped"),
                Err(e) => tracing::warn!("webrtc data channel write: {e}"),
            }
        }
        self.drain()
    }

    fn send_event(&mut self, event: &ServerEvent) -> Result<(), PeerEnd> {
        self.next_event_id += 1;
        let id = format!("evt_w{}", self.next_event_id);
        match protocol::encode_server(event, &id, Dialect::Ga) {
            Some(text) => self.send_text(text),
            None => Ok(()),
        }
    }

    /// OpenAI's WebRTC-only `output_audio_buffer.*` events (not part of the session's events).
    fn send_buffer_event(&mut self, kind: &str, response_id: &str) -> Result<(), PeerEnd> {
        self.next_event_id += 1;
        let text = serde_json::json!({
            "type": format!("output_audio_buffer.{kind}"),
            "event_id": format!("evt_w{}", self.next_event_id),
            "response_id": response_id,
        })
        .to_string();
        self.send_text(text)
    }

    /// Sends one Opus packet on the audio track (dropped by str0m until connected).
    fn send_audio(&mut self, packet: &[u8]) -> Result<(), PeerEnd> {
        let Some((mid, pt)) = self.audio else {
            return Ok(());
        };
        let pt = match pt {
            Some(pt) => pt,
            None => {
                let Some(writer) = self.rtc.writer(mid) else {
                    return Ok(());
                };
                let Some(pt) = writer
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::Opus)
                    .map(|p| p.pt())
                else {
                    return Err(PeerEnd::Failed("the browser offered no Opus".into()));
                };
                self.audio = Some((mid, Some(pt)));
                pt
            }
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return Ok(());
        };
        let rtp_time = MediaTime::new(
            self.frames_sent * RTP_TICKS_PER_FRAME,
            Frequency::FORTY_EIGHT_KHZ,
        );
        self.frames_sent += 1;
        writer.write(pt, Instant::now(), rtp_time, packet.to_vec())?;
        self.drain()
    }
}

/// Runs one peer until it hangs up, disconnects or fails; its session ends with it.
pub async fn run(params: PeerParams) -> PeerEnd {
    let PeerParams {
        id,
        rtc,
        sockets,
        session,
        limits,
        mut hangup,
    } = params;
    let SessionChannels {
        to_session,
        mut from_session,
        task: _session_task,
    } = session;
    let (net_tx, mut net_rx) = mpsc::channel(256);
    let _readers = spawn_readers(&sockets, net_tx);
    let (mut uplink, mut downlink) = match (Uplink::new(), Downlink::new()) {
        (Ok(u), Ok(d)) => (u, d),
        (Err(e), _) | (_, Err(e)) => return e.into(),
    };
    let mut peer = Peer {
        rtc,
        sockets,
        rtc_deadline: Instant::now(),
        events: VecDeque::new(),
        connected: false,
        audio: None,
        channel: None,
        pending: VecDeque::new(),
        next_event_id: 0,
        frames_sent: 0,
        last_seq: None,
        samples_in: 0,
        reply_audio: ChunkResampler::new(SAMPLE_RATE),
    };
    let mut playout = Playout::new();
    let mut frame = [0.0f32; FRAME];
    let connect_deadline = TokioInstant::now() + CONNECT_TIMEOUT;
    let mut next_frame = TokioInstant::now() + FRAME_PERIOD;

    let end = 'run: loop {
        if let Err(e) = peer.drain() {
            break e;
        }
        // Handle what the Rtc reported; handlers may mutate it (and drain again).
        while let Some(event) = peer.events.pop_front() {
            let step = on_rtc_event(
                &mut peer,
                event,
                &mut uplink,
                &mut playout,
                &to_session,
                &limits,
            )
            .await;
            match step {
                Ok(None) => {}
                Ok(Some(end)) => break 'run end,
                Err(end) => break 'run end,
            }
        }
        if !peer.rtc.is_alive() {
            break PeerEnd::Disconnected;
        }
        let rtc_deadline = TokioInstant::from_std(peer.rtc_deadline);
        let step: Result<(), PeerEnd> = tokio::select! {
            biased;
            _ = &mut hangup => break PeerEnd::HungUp,
            Some(d) = net_rx.recv() => match Receive::new(Protocol::Udp, d.source, d.destination, &d.data) {
                Ok(r) => peer.input(Input::Receive(d.at, r)),
                Err(e) => {
                    tracing::debug!("webrtc datagram from {} ignored: {e}", d.source);
                    Ok(())
                }
            },
            event = from_session.recv() => match event {
                None => break PeerEnd::SessionEnded,
                Some(event) => on_session_event(
                    &mut peer, event, &mut playout, &to_session,
                ).await,
            },
            _ = sleep_until(next_frame) => {
                next_frame += FRAME_PERIOD;
                let now = TokioInstant::now();
                // After a stall (a busy runtime), restart the clock instead of bursting.
                if next_frame + 3 * FRAME_PERIOD < now {
                    next_frame = now + FRAME_PERIOD;
                }
                play_frame(&mut peer, &mut playout, &mut downlink, &mut frame)
            },
            _ = sleep_until(rtc_deadline) => peer.input(Input::Timeout(Instant::now())),
            _ = sleep_until(connect_deadline), if !peer.connected => break PeerEnd::ConnectTimeout,
        };
        if let Err(end) = step {
            break end;
        }
    };
    // Tell the browser (SCTP shutdown, DTLS close_notify: its data channel closes at once),
    // then drop the state.
    if peer.connected && peer.rtc.close().is_ok() {
        let _ = peer.drain();
    }
    peer.rtc.disconnect();
    match &end {
        PeerEnd::Failed(why) => tracing::warn!(peer = %id, "webrtc peer failed: {why}"),
        other => tracing::info!(peer = %id, end = ?other, "webrtc peer ended"),
    }
    end
}

/// One 20 ms tick of the reply clock.
fn play_frame(
    peer: &mut Peer,
    playout: &mut Playout,
    downlink: &mut Downlink,
    frame: &mut [f32; FRAME],
) -> Result<(), PeerEnd> {
    if !peer.connected {
        return Ok(());
    }
    let notes = playout.tick(frame);
    let packet = downlink.frame(frame)?.to_vec();
    peer.send_audio(&packet)?;
    for note in notes {
        match note {
            Note::Event(e) => peer.send_event(&e)?,
            Note::Started { response_id } => peer.send_buffer_event("started", &response_id)?,
            Note::Stopped { response_id } => peer.send_buffer_event("stopped", &response_id)?,
        }
    }
    Ok(())
}

async fn on_rtc_event(
    peer: &mut Peer,
    event: Event,
    uplink: &mut Uplink,
    playout: &mut Playout,
    to_session: &mpsc::Sender<LegIn>,
    limits: &Limits,
) -> Result<Option<PeerEnd>, PeerEnd> {
    match event {
        Event::Connected => {
            peer.connected = true;
            tracing::info!("webrtc peer connected (ICE + DTLS)");
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            return Ok(Some(PeerEnd::Disconnected));
        }
        Event::MediaAdded(m) if m.kind == MediaKind::Audio && peer.audio.is_none() => {
            peer.audio = Some((m.mid, None));
        }
        Event::MediaData(d) => {
            let ours = peer.audio.is_some_and(|(mid, _)| mid == d.mid);
            if ours && d.params.spec().codec == Codec::Opus {
                let (first, last) = (**d.seq_range.start(), **d.seq_range.end());
                // Lost packets: one concealed 20 ms frame each (a long outage: a few, then
                // the stream just resumes).
                let lost = peer
                    .last_seq
                    .map_or(0, |prev| first.saturating_sub(prev + 1).min(MAX_CONCEALED));
                peer.last_seq = Some(last.max(peer.last_seq.unwrap_or(0)));
                for _ in 0..lost {
                    match uplink.conceal() {
                        Ok(samples) => {
                            if to_session
                                .send(LegIn::Audio(peer.caller_frame(samples, d.network_time)))
                                .await
                                .is_err()
                            {
                                return Ok(Some(PeerEnd::SessionEnded));
                            }
                        }
                        Err(e) => tracing::debug!("webrtc concealment failed: {e}"),
                    }
                }
                match uplink.packet(&d.data) {
                    // Stamped with the instant str0m was handed the datagram (our socket read).
                    Ok(samples) => {
                        if to_session
                            .send(LegIn::Audio(peer.caller_frame(samples, d.network_time)))
                            .await
                            .is_err()
                        {
                            return Ok(Some(PeerEnd::SessionEnded));
                        }
                    }
                    // One corrupt packet: skip it, the next one decodes.
                    Err(e) => tracing::debug!("webrtc opus packet dropped: {e}"),
                }
            }
        }
        Event::ChannelOpen(cid, label) if peer.channel.is_none() => {
            tracing::debug!(label, "webrtc data channel open");
            peer.channel = Some(cid);
            for text in std::mem::take(&mut peer.pending) {
                peer.send_text(text)?;
            }
        }
        Event::ChannelData(d) if Some(d.id) == peer.channel => {
            let inbound = match std::str::from_utf8(&d.data) {
                Err(_) => LegIn::Invalid(ErrorInfo::invalid_request(
                    "invalid_json",
                    "data channel messages must be UTF-8 JSON text",
                )),
                Ok(text) => match protocol::decode_client(text, limits) {
                    // The caller's own "stop the audio" (OpenAI's WebRTC
                    // `output_audio_buffer.clear`): this transport owns playout, so it is
                    // handled here and never reaches the session (which refuses it, its
                    // clients own playback). A cut reply is answered with
                    // `output_audio_buffer.cleared`.
                    Ok(msg) if msg.event == ClientEvent::OutputAudioClear => {
                        if playout.is_playing() {
                            cut_reply(peer, playout, to_session).await?;
                        }
                        return Ok(None);
                    }
                    Ok(msg) => LegIn::Client(keep_transport_formats(msg)),
                    Err(e) => LegIn::Invalid(e),
                },
            };
            if to_session.send(inbound).await.is_err() {
                return Ok(Some(PeerEnd::SessionEnded));
            }
        }
        Event::ChannelClose(cid) if Some(cid) == peer.channel => {
            return Ok(Some(PeerEnd::HungUp));
        }
        _ => {}
    }
    Ok(None)
}

/// The session's audio formats belong to this transport (pcm16 24 kHz behind Opus): a
/// client's `session.update` may change everything else.
fn keep_transport_formats(mut msg: ClientMessage) -> ClientMessage {
    if let ClientEvent::SessionUpdate(patch) = &mut msg.event {
        patch.input_format = None;
        patch.output_format = None;
    }
    msg
}

async fn on_session_event(
    peer: &mut Peer,
    event: ServerEvent,
    playout: &mut Playout,
    to_session: &mpsc::Sender<LegIn>,
) -> Result<(), PeerEnd> {
    // Reply audio arrives as f32 at the TTS rate: resampled once, straight to Opus's 48 kHz.
    if let ServerEvent::AudioOut { part, frame } = &event {
        match peer.reply_audio.resample(&frame.samples, frame.sample_rate) {
            Ok(samples) => playout.push_audio(&part.response_id, &part.item_id, samples.to_vec()),
            Err(e) => tracing::warn!(error = %e, "reply audio unusable"),
        }
        return Ok(());
    }
    // The session decided the caller interrupted (its echo guard applied): stop now.
    let barge_in = matches!(event, ServerEvent::StopPlayout);
    let cancelled_reply = matches!(&event, ServerEvent::ResponseDone(_));
    if !cancelled_reply && let Some(due) = playout.push_event(event.clone()) {
        peer.send_event(&due)?;
    }
    if barge_in && playout.is_playing() {
        cut_reply(peer, playout, to_session).await?;
    }
    // A cancelled reply's `response.done` goes out after the flush (not queued behind audio
    // that will never play).
    if cancelled_reply && let Some(due) = playout.push_event(event) {
        peer.send_event(&due)?;
    }
    Ok(())
}

/// Stops reply playout now (the next frame is silence), tells the caller
/// (`output_audio_buffer.cleared`) and the session (`Played` with what was
/// actually sent: the session keeps whichever cut is shorter).
async fn cut_reply(
    peer: &mut Peer,
    playout: &mut Playout,
    to_session: &mpsc::Sender<LegIn>,
) -> Result<(), PeerEnd> {
    let playing = playout.playing().map(str::to_owned);
    let (cut_items, due) = playout.flush();
    for e in &due {
        peer.send_event(e)?;
    }
    if let Some(r) = playing {
        peer.send_buffer_event("cleared", &r)?;
    }
    for cut in cut_items {
        let played = LegIn::Played {
            item_id: cut.item_id,
            audio_end_ms: cut.played_ms,
        };
        if to_session.send(played).await.is_err() {
            return Err(PeerEnd::SessionEnded);
        }
    }
    Ok(())
}
