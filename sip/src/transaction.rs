//! SIP transactions over UDP (RFC 3261 section 17, with the RFC 6026 "Accepted" state):
//! plain state machines that keep the last message to resend and their timers as instants.
//! Nothing here reads a clock: callers pass `now` and ask [`Transaction::next_deadline`].
//!
//! - Server INVITE: Proceeding --1xx--> Proceeding --2xx--> Accepted (the 2xx is resent at T1,
//!   2*T1, ... capped at T2 until the ACK arrives; Timer L = 64*T1 ends it; no ACK by then is
//!   [`Timeout::NoAck`]) --non-2xx--> Completed (Timer G resends, Timer H = 64*T1 waits for the
//!   ACK) --ACK--> Confirmed (Timer I = T4 absorbs ACK retransmissions) --> Terminated.
//! - Server non-INVITE: Trying --final--> Completed (Timer J = 64*T1 absorbs retransmitted
//!   requests by resending the response) --> Terminated.
//! - Client non-INVITE (our BYE): Trying (Timer E resends at T1 doubling to T2, Timer F = 64*T1
//!   is [`Timeout::NoResponse`]) --final--> Completed (Timer K = T4) --> Terminated.

use std::time::{Duration, Instant};

/// RFC 3261 timer bases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// Round-trip estimate (500 ms).
    pub t1: Duration,
    /// Largest retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Longest a message stays in the network (5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ServerInvite,
    ServerNonInvite,
    ClientNonInvite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Server: no final response yet. Client: request sent, no final response yet.
    Proceeding,
    /// Server INVITE: a 2xx was sent (RFC 6026).
    Accepted,
    Completed,
    Confirmed,
    Terminated,
}

/// What a fired timer asks of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerAction {
    /// Send these bytes again.
    Retransmit(Vec<u8>),
    /// The transaction failed (see [`Timeout`]) and is terminated.
    TimedOut(Timeout),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// A final response to an INVITE was never acknowledged.
    NoAck,
    /// Our request was never answered.
    NoResponse,
}

/// One transaction.
#[derive(Debug, Clone)]
pub struct Transaction {
    kind: Kind,
    state: State,
    timers: TimerConfig,
    /// The message to resend: the last response (server) or the request (client).
    last: Option<Vec<u8>>,
    /// Next retransmission and the interval after it.
    retransmit: Option<(Instant, Duration)>,
    /// When the current state ends (Timers H, I, J, K, L, F).
    ends_at: Option<Instant>,
    /// The state ends by failure (H, L without an ACK; F) rather than by design.
    ends_in_failure: bool,
    acked: bool,
}

impl Transaction {
    /// A server transaction for a request just received.
    pub fn server(kind: Kind, timers: TimerConfig) -> Self {
        debug_assert!(kind != Kind::ClientNonInvite);
        Transaction {
            kind,
            state: State::Proceeding,
            timers,
            last: None,
            retransmit: None,
            ends_at: None,
            ends_in_failure: false,
            acked: false,
        }
    }

    /// A client non-INVITE transaction for `request`, sent at `now` (the caller sends it).
    pub fn client(now: Instant, request: Vec<u8>, timers: TimerConfig) -> Self {
        Transaction {
            kind: Kind::ClientNonInvite,
            state: State::Proceeding,
            timers,
            last: Some(request),
            retransmit: Some((now + timers.t1, (timers.t1 * 2).min(timers.t2))),
            ends_at: Some(now + timers.t1 * 64),
            ends_in_failure: true,
            acked: false,
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The same request arrived again: the response to resend, if any (none while a server
    /// transaction has not responded, or was only answered by the TU's 2xx path and acked).
    pub fn on_retransmitted_request(&self) -> Option<&[u8]> {
        match self.state {
            State::Proceeding | State::Accepted | State::Completed => self.last.as_deref(),
            _ => None,
        }
    }

    /// The server sends a response (the caller transmits `bytes`).
    pub fn respond(&mut self, now: Instant, status: u16, bytes: Vec<u8>) {
        if self.kind == Kind::ClientNonInvite || self.state != State::Proceeding {
            return;
        }
        self.last = Some(bytes);
        if status < 200 {
            return;
        }
        let t = self.timers;
        match (self.kind, status) {
            (Kind::ServerInvite, 200..=299) => {
                self.state = State::Accepted;
                self.retransmit = Some((now + t.t1, (t.t1 * 2).min(t.t2)));
                self.ends_at = Some(now + t.t1 * 64);
                self.ends_in_failure = true;
            }
            (Kind::ServerInvite, _) => {
                self.state = State::Completed;
                self.retransmit = Some((now + t.t1, (t.t1 * 2).min(t.t2)));
                self.ends_at = Some(now + t.t1 * 64);
                self.ends_in_failure = true;
            }
            _ => {
                self.state = State::Completed;
                self.ends_at = Some(now + t.t1 * 64);
                self.ends_in_failure = false;
            }
        }
    }

    /// An ACK for this INVITE transaction's final response arrived. Returns true the first
    /// time (the caller then knows the call is confirmed).
    pub fn on_ack(&mut self, now: Instant) -> bool {
        if self.kind != Kind::ServerInvite || self.acked {
            return false;
        }
        match self.state {
            State::Accepted => {
                // Keep absorbing INVITE retransmissions until Timer L, but stop resending.
                self.retransmit = None;
                self.ends_in_failure = false;
            }
            State::Completed => {
                self.state = State::Confirmed;
                self.retransmit = None;
                self.ends_at = Some(now + self.timers.t4);
                self.ends_in_failure = false;
            }
            _ => return false,
        }
        self.acked = true;
        true
    }

    /// A response to our client transaction arrived.
    pub fn on_response(&mut self, now: Instant, status: u16) {
        if self.kind != Kind::ClientNonInvite || self.state != State::Proceeding {
            return;
        }
        if status < 200 {
            // A provisional response: keep resending at T2 (RFC 3261 17.1.2.2).
            if let Some((_, interval)) = &mut self.retransmit {
                *interval = self.timers.t2;
            }
            return;
        }
        self.state = State::Completed;
        self.retransmit = None;
        self.ends_at = Some(now + self.timers.t4);
        self.ends_in_failure = false;
    }

    /// The earliest instant at which [`Transaction::on_timeout`] has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.retransmit.map(|(at, _)| at), self.ends_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires due timers.
    pub fn on_timeout(&mut self, now: Instant) -> Option<TimerAction> {
        if self.state == State::Terminated {
            return None;
        }
        if let Some(end) = self.ends_at
            && now >= end
        {
            let failed = self.ends_in_failure;
            self.state = State::Terminated;
            self.retransmit = None;
            self.ends_at = None;
            return failed.then_some(TimerAction::TimedOut(match self.kind {
                Kind::ClientNonInvite => Timeout::NoResponse,
                _ => Timeout::NoAck,
            }));
        }
        if let Some((at, interval)) = self.retransmit
            && now >= at
        {
            let next_interval = (interval * 2).min(self.timers.t2);
            self.retransmit = Some((now + interval, next_interval));
            return self.last.clone().map(TimerAction::Retransmit);
        }
        None
    }

    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs timers up to `until` in 10 ms steps; returns (offset ms, action) of each firing.
    fn run(t: &mut Transaction, start: Instant, until: u64) -> Vec<(u64, TimerAction)> {
        let mut fired = Vec::new();
        let mut now_ms = 0;
        while now_ms <= until {
            while let Some(a) = t.on_timeout(start + ms(now_ms)) {
                fired.push((now_ms, a));
            }
            now_ms += 10;
        }
        fired
    }

    #[test]
    fn invite_2xx_is_resent_doubling_to_t2_until_timer_l() {
        let start = Instant::now();
        let mut t = Transaction::server(Kind::ServerInvite, TimerConfig::default());
        t.respond(start, 100, b"100".to_vec());
        assert_eq!(t.on_retransmitted_request(), Some(&b"100"[..]));
        t.respond(start, 200, b"200".to_vec());
        assert_eq!(t.state(), State::Accepted);
        let fired = run(&mut t, start, 40_000);
        let at: Vec<u64> = fired.iter().map(|(m, _)| *m).collect();
        // 0.5, 1.5, 3.5, 7.5, 11.5, ... every 4 s, then Timer L at 32 s.
        assert_eq!(&at[..5], &[500, 1500, 3500, 7500, 11500]);
        assert_eq!(*at.last().unwrap(), 32_000);
        assert_eq!(
            fired.last().unwrap().1,
            TimerAction::TimedOut(Timeout::NoAck)
        );
        assert!(
            fired[..fired.len() - 1]
                .iter()
                .all(|(_, a)| *a == TimerAction::Retransmit(b"200".to_vec()))
        );
        assert!(t.is_terminated());
    }

    #[test]
    fn ack_stops_2xx_retransmission_and_timer_l_ends_quietly() {
        let start = Instant::now();
        let mut t = Transaction::server(Kind::ServerInvite, TimerConfig::default());
        t.respond(start, 200, b"200".to_vec());
        assert_eq!(
            t.on_timeout(start + ms(500)),
            Some(TimerAction::Retransmit(b"200".to_vec()))
        );
        assert!(t.on_ack(start + ms(600)));
        assert!(
            !t.on_ack(start + ms(700)),
            "a retransmitted ACK is not news"
        );
        // Retransmitted INVITEs are still answered with the 2xx until Timer L.
        assert_eq!(t.on_retransmitted_request(), Some(&b"200"[..]));
        let fired = run(&mut t, start + ms(600), 40_000);
        assert!(fired.is_empty(), "{fired:?}");
        assert!(t.is_terminated());
    }

    #[test]
    fn invite_error_response_waits_for_ack_with_timers_g_h_i() {
        let start = Instant::now();
        let mut t = Transaction::server(Kind::ServerInvite, TimerConfig::default());
        t.respond(start, 487, b"487".to_vec());
        assert_eq!(t.state(), State::Completed);
        assert_eq!(t.next_deadline(), Some(start + ms(500)));
        assert!(matches!(
            t.on_timeout(start + ms(500)),
            Some(TimerAction::Retransmit(_))
        ));
        assert!(t.on_ack(start + ms(800)));
        assert_eq!(t.state(), State::Confirmed);
        assert_eq!(t.next_deadline(), Some(start + ms(800) + ms(5000)));
        assert_eq!(t.on_timeout(start + ms(5800)), None);
        assert!(t.is_terminated());

        // Without an ACK, Timer H fails it after 64*T1.
        let mut t = Transaction::server(Kind::ServerInvite, TimerConfig::default());
        t.respond(start, 486, b"486".to_vec());
        let fired = run(&mut t, start, 33_000);
        assert_eq!(
            fired.last().cloned(),
            Some((32_000, TimerAction::TimedOut(Timeout::NoAck)))
        );
    }

    #[test]
    fn non_invite_server_absorbs_retransmissions_until_timer_j() {
        let start = Instant::now();
        let mut t = Transaction::server(Kind::ServerNonInvite, TimerConfig::default());
        assert_eq!(t.on_retransmitted_request(), None);
        t.respond(start, 200, b"200".to_vec());
        assert_eq!(t.on_retransmitted_request(), Some(&b"200"[..]));
        assert!(
            run(&mut t, start, 40_000).is_empty(),
            "no retransmissions over UDP"
        );
        assert!(t.is_terminated());
        assert_eq!(t.on_retransmitted_request(), None);
    }

    #[test]
    fn client_request_timers_e_and_f() {
        let start = Instant::now();
        let mut t = Transaction::client(start, b"BYE".to_vec(), TimerConfig::default());
        let fired = run(&mut t, start, 33_000);
        let at: Vec<u64> = fired.iter().map(|(m, _)| *m).collect();
        assert_eq!(&at[..4], &[500, 1500, 3500, 7500]);
        assert_eq!(
            fired.last().unwrap(),
            &(32_000, TimerAction::TimedOut(Timeout::NoResponse))
        );

        let mut t = Transaction::client(start, b"BYE".to_vec(), TimerConfig::default());
        t.on_response(start + ms(100), 200);
        assert_eq!(t.state(), State::Completed);
        assert!(run(&mut t, start + ms(100), 10_000).is_empty());
        assert!(t.is_terminated());
    }
}
