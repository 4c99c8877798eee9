//! A session whose transport is a pair of bounded channels: the legs that speak another
//! protocol (Twilio Media Streams, SIP/RTP, WebRTC) send [`LegIn`]s (caller audio as f32
//! frames stamped at their socket, DTMF keys, what their playout played, the WebRTC data
//! channel's Realtime events) and get the server events back (reply audio as deltas in the
//! session's output format), owning pacing and playout themselves.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{End, LegIn, SessionIo, SessionParams};
use crate::session::events::{ClientEvent, ClientMessage, ServerEvent};

/// Room for this many inputs / events in each direction; a full inbound queue makes the
/// transport wait (or drop, its choice), a full outbound queue for `send_timeout` ends the session.
pub const CHANNEL_DEPTH: usize = 256;

/// The transport's ends of a channel session.
pub struct SessionChannels {
    /// Caller input. Dropping it ends the session (as a hang-up).
    pub to_session: mpsc::Sender<LegIn>,
    /// Every server event, in order; audio deltas are in the session's output format.
    pub from_session: mpsc::Receiver<ServerEvent>,
    /// The session task; yields why it ended.
    pub task: JoinHandle<End>,
}

impl LegIn {
    /// A client event the transport generated itself (no client `event_id`).
    pub fn client(event: ClientEvent) -> Self {
        LegIn::Client(ClientMessage {
            event_id: None,
            event,
        })
    }
}

struct ChannelIo {
    inbound: mpsc::Receiver<LegIn>,
    outbound: mpsc::Sender<ServerEvent>,
    send_timeout: Duration,
}

impl SessionIo for ChannelIo {
    async fn recv(&mut self) -> LegIn {
        // `mpsc::Receiver::recv` is cancel-safe.
        self.inbound.recv().await.unwrap_or(LegIn::Closed)
    }

    async fn send(&mut self, event: &ServerEvent) -> Result<bool, End> {
        match tokio::time::timeout(self.send_timeout, self.outbound.send(event.clone())).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(_)) => Err(End::ClientGone),
            Err(_) => Err(End::SendTimeout),
        }
    }
}

/// Starts a session on the current tokio runtime and returns the transport's ends.
pub fn spawn(mut params: SessionParams) -> SessionChannels {
    // These transports encode and pace reply audio themselves.
    params.settings.frames_out = true;
    let (to_session, inbound) = mpsc::channel(CHANNEL_DEPTH);
    let (outbound, from_session) = mpsc::channel(CHANNEL_DEPTH);
    let io = ChannelIo {
        inbound,
        outbound,
        send_timeout: params.send_timeout,
    };
    let task = tokio::spawn(super::run(io, params));
    SessionChannels {
        to_session,
        from_session,
        task,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::app::AppState;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::session::events::{AudioFormat, ClientEvent, ErrorInfo, ServerEvent};
    use antiphon_audio::frame::AudioFrame;

    fn state(max_sessions: usize) -> AppState {
        let mut config = Config::default();
        config.server.max_sessions = crate::config::SessionLimit::Fixed(max_sessions);
        AppState::new(config, Arc::new(Metrics::new()), None)
    }

    async fn next(ch: &mut SessionChannels) -> ServerEvent {
        tokio::time::timeout(Duration::from_secs(5), ch.from_session.recv())
            .await
            .expect("an event within 5 s")
            .expect("session still open")
    }

    #[tokio::test]
    async fn channel_session_speaks_realtime_events_in_the_admitted_format() {
        let state = state(1);
        let params = state
            .admit("test", (AudioFormat::G711Ulaw, AudioFormat::G711Ulaw))
            .expect("admitted");
        let mut ch = spawn(params);
        match next(&mut ch).await {
            ServerEvent::SessionCreated(c) => {
                assert_eq!(c.input_format, AudioFormat::G711Ulaw);
                assert_eq!(c.output_format, AudioFormat::G711Ulaw);
            }
            other => panic!("expected session.created, got {other:?}"),
        }
        // The one permit is held by the live session.
        assert!(
            state
                .admit("test", (AudioFormat::Pcm16, AudioFormat::Pcm16))
                .is_err()
        );

        // 200 ms of silence as a leg's f32 frame, committed by hand, becomes a user item.
        let frame = AudioFrame::silence(1600, 8000, 0, std::time::Instant::now());
        ch.to_session.send(LegIn::Audio(frame)).await.unwrap();
        ch.to_session
            .send(LegIn::client(ClientEvent::AudioCommit))
            .await
            .unwrap();
        let mut committed = false;
        for _ in 0..10 {
            if let ServerEvent::AudioCommitted { .. } = next(&mut ch).await {
                committed = true;
                break;
            }
        }
        assert!(committed, "input_audio_buffer.committed expected");

        // A transport's own parse error reaches the caller as an error event.
        ch.to_session
            .send(LegIn::Invalid(ErrorInfo::invalid_request(
                "bad_frame",
                "not a frame",
            )))
            .await
            .unwrap();
        let mut saw_error = false;
        for _ in 0..10 {
            if let ServerEvent::Error(e) = next(&mut ch).await {
                assert_eq!(e.code, "bad_frame");
                saw_error = true;
                break;
            }
        }
        assert!(saw_error);

        // Hanging up ends the task and frees the admission permit.
        drop(ch.to_session);
        let end = tokio::time::timeout(Duration::from_secs(5), ch.task)
            .await
            .expect("session ends")
            .expect("no panic");
        assert_eq!(end, End::ClientGone);
        assert!(
            state
                .admit("test", (AudioFormat::Pcm16, AudioFormat::Pcm16))
                .is_ok()
        );
    }
}
