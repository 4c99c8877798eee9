//! RTP/RTCP port pairs from the configured range: an even port for RTP, the odd one above for
//! RTCP (RFC 3550 11). The OS is the bookkeeper: a pair is free when both bind, and returns to
//! the pool when the call's sockets drop.

use std::net::{IpAddr, SocketAddr, UdpSocket};

pub struct RtpPorts {
    min: u16,
    max: u16,
    next: u16,
}

impl RtpPorts {
    pub fn new(min: u16, max: u16) -> Self {
        let min = min + (min % 2);
        RtpPorts {
            min,
            max,
            next: min,
        }
    }

    /// Binds the next free pair on `ip`, trying each pair of the range at most once.
    pub fn bind(&mut self, ip: IpAddr) -> Option<(UdpSocket, UdpSocket)> {
        let pairs = usize::from((self.max.saturating_sub(self.min)) / 2 + 1);
        for _ in 0..pairs {
            let port = self.next;
            self.next = if port.saturating_add(2) > self.max.saturating_sub(1) {
                self.min
            } else {
                port + 2
            };
            let Ok(rtp) = UdpSocket::bind(SocketAddr::new(ip, port)) else {
                continue;
            };
            let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(ip, port + 1)) else {
                continue;
            };
            if rtp.set_nonblocking(true).is_ok() && rtcp.set_nonblocking(true).is_ok() {
                return Some((rtp, rtcp));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_odd_and_exhaust_cleanly() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut ports = RtpPorts::new(41001, 41005);
        let (a, a1) = ports.bind(ip).expect("first pair");
        let (b, _b1) = ports.bind(ip).expect("second pair");
        assert_eq!(a.local_addr().unwrap().port(), 41002);
        assert_eq!(a1.local_addr().unwrap().port(), 41003);
        assert_eq!(b.local_addr().unwrap().port(), 41004);
        assert!(ports.bind(ip).is_none(), "41006 is outside the range");
        drop((a, a1));
        assert_eq!(
            ports.bind(ip).unwrap().0.local_addr().unwrap().port(),
            41002
        );
    }
}
