//! Graceful drain, so a node can leave a fleet without dropping a call.
//!
//! On SIGTERM or SIGINT (or `POST /admin/drain`) the server stops admitting: every transport
//! refuses new sessions (`server_draining`, SIP 503 with Retry-After), `/readyz` answers 503
//! and the agent-check says `drain`, so balancers send new callers elsewhere. Calls in progress
//! go on until they end or `server.drain_grace_s` runs out; then each session still open tells
//! its caller (`error` event `server_shutting_down` on the Realtime protocols) and ends, and
//! the process exits 0. A second signal ends the grace at once.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// The drain state one server shares with its transports and sessions.
pub struct Drain {
    draining: AtomicBool,
    requested: Notify,
    grace_over: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            draining: AtomicBool::new(false),
            requested: Notify::new(),
            grace_over: watch::Sender::new(false),
        }
    }
}

impl Drain {
    /// Stops admission. `true` the first time (a drain cannot be undone: the process exits).
    pub fn start(&self) -> bool {
        let first = !self.draining.swap(true, Ordering::SeqCst);
        if first {
            // Stores a permit when nobody waits yet, so the request is never missed.
            self.requested.notify_one();
        }
        first
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Resolves once a drain has been started.
    pub async fn requested(&self) {
        if !self.is_draining() {
            self.requested.notified().await;
        }
    }

    /// The grace has run out: every session still open ends.
    pub fn end_grace(&self) {
        self.grace_over.send_replace(true);
    }

    /// What a session watches to learn that the grace ran out ([`grace_over`]).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.grace_over.subscribe()
    }
}

/// Resolves when the drain's grace runs out; never if the server's drain state is gone.
pub async fn grace_over(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|over| *over).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How long sessions told to end get to say so and close before the process exits anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);

/// Waits for a drain to be asked (`signal` or [`Drain::start`]), then for the calls in
/// progress to end (`open_calls() == 0`) or `grace` to run out, and returns when the process
/// may exit. `signal` resolves on each termination signal (it is called again for a second one).
pub async fn run<S, F>(
    drain: &Drain,
    grace: Duration,
    open_calls: impl Fn() -> usize,
    mut signal: S,
) where
    S: FnMut() -> F,
    F: Future<Output = ()>,
{
    tokio::select! {
        () = signal() => {
            drain.start();
        }
        () = drain.requested() => {}
    }
    tracing::info!(
        open = open_calls(),
        grace_s = grace.as_secs(),
        "draining: admitting no new sessions; waiting for the calls in progress \
         (a second SIGTERM or Ctrl-C ends them now)"
    );
    let deadline = Instant::now() + grace;
    let mut second_signal = std::pin::pin!(signal());
    loop {
        if open_calls() == 0 {
            tracing::info!("drained: no call left");
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = tokio::time::sleep_until(deadline) => break,
            () = &mut second_signal => {
                tracing::warn!("second termination signal: ending the calls now");
                break;
            }
        }
    }
    tracing::warn!(
        open = open_calls(),
        "drain grace over: ending the calls still open"
    );
    drain.end_grace();
    let give_up = Instant::now() + CLOSE_WAIT;
    while open_calls() > 0 && Instant::now() < give_up {
        tokio::time::sleep(POLL).await;
    }
}

/// Resolves on SIGTERM or SIGINT. Each call listens afresh (for the second signal).
pub fn termination_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Registered before the future is first polled, so a signal in between is not lost.
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                tracing::warn!("cannot listen for SIGTERM; only Ctrl-C drains");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn a_drain_waits_for_the_calls_in_progress_then_returns() {
        let drain = Arc::new(Drain::default());
        let open = Arc::new(AtomicUsize::new(2));
        let task = {
            let (drain, open) = (drain.clone(), open.clone());
            tokio::spawn(async move {
                run(
                    &drain,
                    Duration::from_secs(30),
                    || open.load(Ordering::SeqCst),
                    std::future::pending::<()>,
                )
                .await;
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!task.is_finished(), "no drain asked yet");
        assert!(drain.start());
        assert!(!drain.start(), "a second start is not a new drain");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!task.is_finished(), "two calls still open");
        open.store(0, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(task.is_finished());
        assert!(
            !*drain.watch().borrow(),
            "calls ended on their own: no grace ran out"
        );
    }

    #[tokio::test]
    async fn when_the_grace_runs_out_sessions_are_told_to_end() {
        let drain = Arc::new(Drain::default());
        let mut session = drain.watch();
        let open = Arc::new(AtomicUsize::new(1));
        let task = {
            let (drain, open) = (drain.clone(), open.clone());
            tokio::spawn(async move {
                run(
                    &drain,
                    Duration::from_millis(400),
                    || open.load(Ordering::SeqCst),
                    std::future::pending::<()>,
                )
                .await;
            })
        };
        drain.start();
        let ended_at = {
            let t0 = Instant::now();
            grace_over(&mut session).await;
            t0.elapsed()
        };
        assert!(ended_at >= Duration::from_millis(400), "{ended_at:?}");
        // The session closes: the drain returns soon after.
        open.store(0, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(task.is_finished());
    }

    #[tokio::test]
    async fn a_session_of_a_server_gone_never_sees_a_grace_end() {
        let rx = Drain::default().watch();
        let mut rx = rx;
        let waited = tokio::time::timeout(Duration::from_millis(300), grace_over(&mut rx)).await;
        assert!(waited.is_err());
    }
}
