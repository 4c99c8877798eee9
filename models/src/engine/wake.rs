//! Telling a session that its engine output is ready, so it can wait instead of polling.
//!
//! Engines deliver per-session output (ASR events, LLM tokens, TTS audio, speaker embeddings)
//! through std channels. A [`Wake`] registered with a session's handle is called by the engine
//! thread right after each delivery; the session's task waits on it (for example a
//! `tokio::sync::Notify`) and then drains the channel without blocking. Without one, callers
//! poll or block on the channel as before.

use std::sync::Arc;
use std::sync::mpsc::{SendError, Sender, SyncSender, TrySendError};

/// A callback an engine thread calls when it delivered output. Must be cheap and must not
/// block (it runs on the engine thread).
#[derive(Clone)]
pub struct Wake(Arc<dyn Fn() + Send + Sync>);

impl Wake {
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Self {
        Wake(Arc::new(f))
    }

    pub fn wake(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wake")
    }
}

/// A channel sender that calls its [`Wake`] (if any) after each successful send.
#[derive(Debug)]
pub struct WakingSender<S> {
    inner: S,
    wake: Option<Wake>,
}

impl<S: Clone> Clone for WakingSender<S> {
    fn clone(&self) -> Self {
        WakingSender {
            inner: self.inner.clone(),
            wake: self.wake.clone(),
        }
    }
}

impl<S> WakingSender<S> {
    pub fn new(inner: S, wake: Option<Wake>) -> Self {
        WakingSender { inner, wake }
    }

    fn woke<R, E>(&self, r: Result<R, E>) -> Result<R, E> {
        if r.is_ok()
            && let Some(w) = &self.wake
        {
            w.wake();
        }
        r
    }
}

impl<T> WakingSender<SyncSender<T>> {
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.woke(self.inner.try_send(value))
    }

    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.woke(self.inner.send(value))
    }
}

impl<T> WakingSender<Sender<T>> {
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.woke(self.inner.send(value))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc::{channel, sync_channel};

    use super::*;

    #[test]
    fn wakes_after_each_delivered_value_only() {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let wake = Wake::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        let (tx, rx) = sync_channel(1);
        let tx = WakingSender::new(tx, Some(wake.clone()));
        assert!(tx.try_send(1).is_ok());
        assert!(tx.try_send(2).is_err(), "full");
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(rx.try_recv(), Ok(1));
        let (tx, rx) = channel();
        let tx = WakingSender::new(tx, Some(wake));
        drop(rx);
        assert!(tx.send(3).is_err(), "disconnected");
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let (tx, rx) = channel();
        WakingSender::new(tx, None)
            .send(4)
            .expect("no wake, still sent");
        assert_eq!(rx.recv(), Ok(4));
    }
}
