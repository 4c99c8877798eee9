//! The Realtime API's own transport: JSON text events over a WebSocket.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};

use crate::realtime::protocol::{self, Dialect};
use crate::session::events::Limits;
use crate::session::events::{ErrorInfo, ServerEvent};
use crate::session::{End, LegIn, SessionIo, SessionParams};

/// A Realtime WebSocket as a session transport.
pub struct WebSocketIo {
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
    dialect: Dialect,
    limits: Limits,
    send_timeout: Duration,
    next_event: u64,
}

impl WebSocketIo {
    pub fn new(
        socket: WebSocket,
        dialect: Dialect,
        limits: Limits,
        send_timeout: Duration,
    ) -> Self {
        let (sink, stream) = socket.split();
        WebSocketIo {
            sink,
            stream,
            dialect,
            limits,
            send_timeout,
            next_event: 0,
        }
    }
}

impl WebSocketIo {
    /// The client broke the WebSocket protocol (a frame over the size limit, a bad frame):
    /// say why in a Close frame before the connection goes, rather than only dropping it.
    async fn close_after_read_error(&mut self, error: &axum::Error) {
        tracing::debug!(%error, "websocket read failed");
        let Some(frame) = close_for_read_error(error) else {
            return; // the peer is gone: nobody to tell
        };
        // Best effort, bounded: the peer may not be reading.
        let _ = tokio::time::timeout(
            self.send_timeout,
            self.sink.send(Message::Close(Some(frame))),
        )
        .await;
    }
}

/// The Close frame that answers a failed WebSocket read: 1009 for a message over the size
/// limit, 1002 for another protocol violation, `None` when the connection itself is gone
/// (reset, or closed without the closing handshake). Shared with the Twilio leg.
pub(crate) fn close_for_read_error(error: &axum::Error) -> Option<CloseFrame> {
    let text = error.to_string();
    // tungstenite's wording: "Space limit exceeded: Message too long: …" for a size limit,
    // "… Connection reset without closing handshake" or an IO error for a vanished peer.
    let gone = text.contains("without closing handshake")
        || text.contains("IO error")
        || text.contains("closed connection");
    if gone {
        return None;
    }
    let too_big = text.contains("too long") || text.contains("Space limit");
    let (code, reason) = if too_big {
        (close_code::SIZE, "message larger than the server accepts")
    } else {
        (close_code::PROTOCOL, "WebSocket protocol error")
    };
    Some(CloseFrame {
        code,
        reason: reason.into(),
    })
}

impl SessionIo for WebSocketIo {
    async fn recv(&mut self) -> LegIn {
        // Cancel-safe: each `next()` is, and nothing is held between iterations.
        loop {
            return match self.stream.next().await {
                None | Some(Ok(Message::Close(_))) => LegIn::Closed,
                Some(Err(e)) => {
                    self.close_after_read_error(&e).await;
                    LegIn::Closed
                }
                Some(Ok(Message::Text(text))) => {
                    match protocol::decode_client(text.as_str(), &self.limits) {
                        Ok(m) => LegIn::Client(m),
                        Err(e) => LegIn::Invalid(e),
                    }
                }
                Some(Ok(Message::Binary(_))) => LegIn::Invalid(ErrorInfo::invalid_request(
                    "binary_not_supported",
                    "binary WebSocket messages are not part of the protocol; send JSON text events",
                )),
                // axum answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            };
        }
    }

    async fn send(&mut self, event: &ServerEvent) -> Result<bool, End> {
        self.next_event += 1;
        let id = format!("event_{}", self.next_event);
        let Some(text) = protocol::encode_server(event, &id, self.dialect) else {
            return Ok(false);
        };
        match tokio::time::timeout(
            self.send_timeout,
            self.sink.send(Message::Text(text.into())),
        )
        .await
        {
            Ok(Ok(())) => Ok(true),
            Ok(Err(_)) => Err(End::ClientGone),
            Err(_) => Err(End::SendTimeout),
        }
    }

    async fn finish(&mut self, end: End) {
        // The server ends these two; the `error` event already said why.
        let frame = match end {
            End::ServerShutdown => CloseFrame {
                code: close_code::AWAY,
                reason: "server shutting down".into(),
            },
            End::IdleTimeout => CloseFrame {
                code: close_code::NORMAL,
                reason: "session idle".into(),
            },
            End::ClientGone | End::SendTimeout => return,
        };
        let _ = tokio::time::timeout(
            self.send_timeout,
            self.sink.send(Message::Close(Some(frame))),
        )
        .await;
    }
}

/// Runs a Realtime WebSocket session to its end. Spawned by the HTTP layer after the upgrade.
pub async fn run(socket: WebSocket, dialect: Dialect, params: SessionParams) {
    let io = WebSocketIo::new(socket, dialect, params.settings.limits, params.send_timeout);
    crate::session::run(io, params).await;
}
