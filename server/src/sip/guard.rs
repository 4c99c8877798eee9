//! Admission of new INVITEs before the SIP endpoint sees them (sans-IO).
//!
//! Every INVITE the endpoint answers costs a 100 Trying and a final response that is
//! retransmitted until the caller's ACK, for up to 32 s (RFC 3261 Timer G/H): to a spoofed
//! source that is ~10x the bytes received. So new INVITEs are limited per source IP before the
//! endpoint: a token bucket on their rate and a cap on calls not yet confirmed by an ACK (each
//! also holds RTP ports). What is over a limit is dropped without an answer, which is what
//! keeps the server from amplifying. Retransmissions of an INVITE already let through pass (the
//! endpoint absorbs them); the ACK, CANCEL or BYE of a pending call confirms or ends it here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use antiphon_sip::Message;
use antiphon_sip::message::Method;

/// How long a let-through INVITE counts as unconfirmed without an ACK: the endpoint gives up
/// on it after Timer H (64 x T1 = 32 s).
const UNCONFIRMED_FOR: Duration = Duration::from_secs(33);

/// Sources tracked at once; past this, idle ones are forgotten and, if none is idle, new
/// sources' INVITEs are dropped (a flood of spoofed addresses cannot grow memory).
pub const MAX_SOURCES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardLimits {
    /// Sustained new INVITEs per second from one IP.
    pub invites_per_second: f64,
    /// INVITEs one IP may send at once after being quiet.
    pub burst: u32,
    /// Calls from one IP offered but not yet acknowledged.
    pub max_unconfirmed: usize,
}

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Over the INVITE rate of its source.
    DropRate,
    /// Its source already has `max_unconfirmed` calls waiting for their ACK.
    DropUnconfirmed,
    /// Too many sources are being tracked.
    DropSources,
}

impl Verdict {
    /// The `reason` label of `antiphon_sip_invites_dropped_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Verdict::Pass => "none",
            Verdict::DropRate => "rate",
            Verdict::DropUnconfirmed => "unconfirmed",
            Verdict::DropSources => "sources",
        }
    }
}

struct Source {
    tokens: f64,
    refilled: Instant,
    /// Call-IDs let through and not yet acknowledged, with when they stop counting.
    unconfirmed: Vec<(String, Instant)>,
}

pub struct InviteGuard {
    limits: GuardLimits,
    sources: HashMap<IpAddr, Source>,
}

impl InviteGuard {
    pub fn new(limits: GuardLimits) -> Self {
        InviteGuard {
            limits,
            sources: HashMap::new(),
        }
    }

    /// Calls offered by any source and not yet acknowledged (for capacity: each may still
    /// become a session).
    pub fn unconfirmed(&self) -> usize {
        self.sources.values().map(|s| s.unconfirmed.len()).sum()
    }

    /// Judges one datagram from `source`. Anything that is not a SIP request (or does not
    /// parse) passes: the endpoint drops malformed input without answering.
    pub fn check(&mut self, now: Instant, source: IpAddr, bytes: &[u8]) -> Verdict {
        let Ok(Message::Request(req)) = Message::parse(bytes) else {
            return Verdict::Pass;
        };
        let Some(call_id) = req.headers.get("Call-ID") else {
            return Verdict::Pass;
        };
        match req.method {
            Method::Invite if req.headers.tag("To").is_none() => {
                self.check_invite(now, source, call_id)
            }
            // The call is confirmed (ACK) or over (CANCEL, BYE): it no longer waits.
            Method::Ack | Method::Cancel | Method::Bye => {
                if let Some(s) = self.sources.get_mut(&source) {
                    s.unconfirmed.retain(|(id, _)| id != call_id);
                }
                Verdict::Pass
            }
            _ => Verdict::Pass,
        }
    }

    fn check_invite(&mut self, now: Instant, source: IpAddr, call_id: &str) -> Verdict {
        if !self.sources.contains_key(&source) && self.sources.len() >= MAX_SOURCES {
            self.forget_idle(now);
            if self.sources.len() >= MAX_SOURCES {
                return Verdict::DropSources;
            }
        }
        let limits = self.limits;
        let s = self.sources.entry(source).or_insert(Source {
            tokens: f64::from(limits.burst),
            refilled: now,
            unconfirmed: Vec::new(),
        });
        s.unconfirmed.retain(|(_, until)| *until > now);
        if s.unconfirmed.iter().any(|(id, _)| id == call_id) {
            return Verdict::Pass; // a retransmission: the endpoint answers it from its transaction
        }
        let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
        s.tokens = (s.tokens + elapsed * limits.invites_per_second).min(f64::from(limits.burst));
        s.refilled = now;
        if s.unconfirmed.len() >= limits.max_unconfirmed {
            return Verdict::DropUnconfirmed;
        }
        if s.tokens < 1.0 {
            return Verdict::DropRate;
        }
        s.tokens -= 1.0;
        s.unconfirmed
            .push((call_id.to_string(), now + UNCONFIRMED_FOR));
        Verdict::Pass
    }

    /// Forgets sources with nothing pending and a full bucket (they are as if never seen).
    pub fn forget_idle(&mut self, now: Instant) {
        let limits = self.limits;
        self.sources.retain(|_, s| {
            s.unconfirmed.retain(|(_, until)| *until > now);
            let refill = now.saturating_duration_since(s.refilled).as_secs_f64();
            let full = s.tokens + refill * limits.invites_per_second >= f64::from(limits.burst);
            !(s.unconfirmed.is_empty() && full)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: GuardLimits = GuardLimits {
        invites_per_second: 2.0,
        burst: 4,
        max_unconfirmed: 3,
    };

    fn request(method: &str, call_id: &str, to_tag: bool) -> Vec<u8> {
        let to = if to_tag {
            "<sip:bot@127.0.0.1>;tag=abc"
        } else {
            "<sip:bot@127.0.0.1>"
        };
        format!(
            "{method} sip:bot@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-{call_id}\r\n\
             From: <sip:caller@10.0.0.9>;tag=1\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 {method}\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn unacknowledged_invites_from_one_source_are_capped_and_retransmissions_pass() {
        let mut g = InviteGuard::new(LIMITS);
        let t = Instant::now();
        for n in 0..3 {
            let invite = request("INVITE", &format!("c{n}"), false);
            assert_eq!(g.check(t, ip(9), &invite), Verdict::Pass);
        }
        // A retransmission of a pending INVITE is not a new call.
        assert_eq!(
            g.check(t, ip(9), &request("INVITE", "c1", false)),
            Verdict::Pass
        );
        assert_eq!(
            g.check(t, ip(9), &request("INVITE", "c3", false)),
            Verdict::DropUnconfirmed
        );
        // Another source is not affected.
        assert_eq!(
            g.check(t, ip(10), &request("INVITE", "d0", false)),
            Verdict::Pass
        );
        assert_eq!(g.unconfirmed(), 4);
        // An ACK confirms one call and frees its place.
        assert_eq!(
            g.check(t, ip(9), &request("ACK", "c0", true)),
            Verdict::Pass
        );
        assert_eq!(
            g.check(t, ip(9), &request("INVITE", "c3", false)),
            Verdict::Pass
        );
        // Unacknowledged calls stop counting once the endpoint has given up on them.
        let later = t + UNCONFIRMED_FOR + Duration::from_secs(1);
        assert_eq!(
            g.check(later, ip(9), &request("INVITE", "c4", false)),
            Verdict::Pass
        );
    }

    #[test]
    fn a_burst_over_the_rate_is_dropped_until_the_bucket_refills() {
        let mut g = InviteGuard::new(GuardLimits {
            max_unconfirmed: 100,
            ..LIMITS
        });
        let t = Instant::now();
        let verdicts: Vec<Verdict> = (0..6)
            .map(|n| g.check(t, ip(9), &request("INVITE", &format!("c{n}"), false)))
            .collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Pass).count(), 4);
        assert_eq!(verdicts[4], Verdict::DropRate);
        // Two per second: after one second two more pass, the third does not.
        let t1 = t + Duration::from_secs(1);
        assert_eq!(
            g.check(t1, ip(9), &request("INVITE", "e0", false)),
            Verdict::Pass
        );
        assert_eq!(
            g.check(t1, ip(9), &request("INVITE", "e1", false)),
            Verdict::Pass
        );
        assert_eq!(
            g.check(t1, ip(9), &request("INVITE", "e2", false)),
            Verdict::DropRate
        );
    }

    #[test]
    fn in_dialog_requests_and_garbage_always_pass() {
        let mut g = InviteGuard::new(GuardLimits {
            burst: 1,
            max_unconfirmed: 1,
            ..LIMITS
        });
        let t = Instant::now();
        assert_eq!(
            g.check(t, ip(9), &request("INVITE", "c0", false)),
            Verdict::Pass
        );
        // A re-INVITE (To tag), OPTIONS, BYE and non-SIP bytes are not new calls.
        assert_eq!(
            g.check(t, ip(9), &request("INVITE", "c0", true)),
            Verdict::Pass
        );
        assert_eq!(
            g.check(t, ip(9), &request("OPTIONS", "o1", false)),
            Verdict::Pass
        );
        assert_eq!(g.check(t, ip(9), b"\x80\x00garbage"), Verdict::Pass);
        assert_eq!(
            g.check(t, ip(9), &request("BYE", "c0", true)),
            Verdict::Pass
        );
        assert_eq!(g.unconfirmed(), 0);
    }

    #[test]
    fn the_sources_tracked_are_bounded() {
        let mut g = InviteGuard::new(LIMITS);
        let t = Instant::now();
        let mut dropped = 0;
        for n in 0..(MAX_SOURCES as u32 + 10) {
            let source = IpAddr::from((0x0a00_0000 + n).to_be_bytes());
            if g.check(t, source, &request("INVITE", "x", false)) == Verdict::DropSources {
                dropped += 1;
            }
        }
        assert_eq!(dropped, 10);
        // Once their calls have expired, the old sources are forgotten and new ones admitted.
        let later = t + UNCONFIRMED_FOR + Duration::from_secs(10);
        assert_eq!(
            g.check(
                later,
                IpAddr::from([192, 168, 0, 1]),
                &request("INVITE", "y", false)
            ),
            Verdict::Pass
        );
        assert!(g.sources.len() < 10);
    }
}
