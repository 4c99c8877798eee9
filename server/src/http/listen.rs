//! The HTTP listener's accept loop, with the two limits `axum::serve` lacks: a cap on open
//! connections and a header-read timeout.
//!
//! - At `max_connections` open (WebSockets included: the permit lives as long as the socket),
//!   a new connection is answered `503` with a JSON error and closed at once, so the process
//!   keeps file descriptors for `/healthz` and the calls it already has.
//! - A connection that does not finish a request head within `header_read_timeout` is closed,
//!   whether it is new, idle between keep-alive requests, or sending its headers byte by byte.
//!
//! HTTP/1.1 only (as before: axum's `http2` feature is off); upgrades (WebSocket) work.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::metrics::{Counter, Gauge, Metrics};

/// The `transport` label of the listener's own metrics.
const TRANSPORT: &str = "http";

/// How long connections still serving a request get after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct ListenLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in progress
/// finish (upgraded WebSockets are not waited for).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Each connection task holds a receiver: the sender sees them all gone when they finish.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, mostly: wait for some to close instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.add(Counter::HttpConnectionsRefused, TRANSPORT, &[], 1);
            tracing::warn!(%peer, max = limits.max_connections, "connection refused: server.max_connections open");
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Counted::new(stream, permit, metrics.clone()));
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(io, service).with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let stopping = async {
                // The `Ref` it yields is not `Send`: dropped here, before any other await.
                let _ = stop.wait_for(|stopping| *stopping).await;
            };
            let finished = tokio::select! {
                r = conn.as_mut() => Some(r),
                () = stopping => None,
            };
            let result = match finished {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(stop_rx);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, stop_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still busy after the shutdown grace; closing them");
    }
}

/// Answers a connection over the cap and closes it (bounded in time: a peer that does not
/// read cannot keep it).
async fn refuse(mut stream: TcpStream) {
    let body = serde_json::json!({"error": {
        "type": "server_error",
        "code": "too_many_connections",
        "message": "the server has as many connections open as it allows; try again later",
    }})
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// A TCP stream that holds one connection permit (and counts itself in the gauge) for as long
/// as it lives, through a WebSocket upgrade too.
struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Counted {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.gauge_add(Gauge::HttpConnections, TRANSPORT, &[], 1);
        Counted {
            stream,
            _permit: permit,
            metrics,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.metrics
            .gauge_add(Gauge::HttpConnections, TRANSPORT, &[], -1);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
