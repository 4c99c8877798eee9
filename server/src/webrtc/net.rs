//! UDP sockets of one peer: one per ICE host candidate address, each bound to that address
//! (so a datagram's destination, which str0m matches against its candidates, is known).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;

use tokio::net::UdpSocket;

use crate::config::WebRtcConfig;

/// The addresses to offer: configured ones, or loopback plus, when the server may be reached
/// from other machines (`networked`: it has API keys), the default route's interface address.
/// Without keys nothing listens beyond this machine (config validation holds the rest).
pub fn candidate_ips(config: &WebRtcConfig, networked: bool) -> Vec<IpAddr> {
    if !config.candidate_ips.is_empty() {
        return config.candidate_ips.clone();
    }
    let mut ips = Vec::new();
    if networked && let Some(ip) = default_route_ip() {
        ips.push(ip);
    }
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if !ips.contains(&loopback) {
        ips.push(loopback);
    }
    ips
}

/// The local address the kernel would use to reach a public address. A UDP `connect` only
/// picks a route; nothing is sent, so this works offline as long as a default route exists.
fn default_route_ip() -> Option<IpAddr> {
    let s = StdUdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    // TEST-NET-1 (RFC 5737): never routed on the internet, only used to pick the route.
    s.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// Binds one socket on `ip`: on an ephemeral port, or the first free port of `range`.
pub async fn bind(ip: IpAddr, range: Option<[u16; 2]>) -> std::io::Result<Arc<UdpSocket>> {
    let Some([lo, hi]) = range else {
        return UdpSocket::bind(SocketAddr::new(ip, 0)).await.map(Arc::new);
    };
    let mut last = None;
    for port in lo..=hi {
        match UdpSocket::bind(SocketAddr::new(ip, port)).await {
            Ok(s) => return Ok(Arc::new(s)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("empty webrtc.port_range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_inside_the_configured_range() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let a = bind(ip, None).await.unwrap();
        let port = a.local_addr().unwrap().port();
        assert_ne!(port, 0);
        // The first port of the range is taken by `a`: the next one is used.
        let next = port.checked_add(1).unwrap_or(port - 1);
        let (lo, hi) = (port.min(next), port.max(next));
        let b = bind(ip, Some([lo, hi])).await.unwrap();
        let got = b.local_addr().unwrap().port();
        assert!((lo..=hi).contains(&got) && got != port);
        // A range with every port taken fails with the bind error.
        assert!(bind(ip, Some([port, port])).await.is_err());
    }

    #[test]
    fn configured_candidates_win_and_defaults_include_loopback() {
        let configured = WebRtcConfig {
            candidate_ips: vec!["10.1.2.3".parse().unwrap()],
            ..WebRtcConfig::default()
        };
        assert_eq!(candidate_ips(&configured, true), configured.candidate_ips);
        let ips = candidate_ips(&WebRtcConfig::default(), true);
        assert!(ips.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
        // Issue 17: a server without keys binds media on loopback only.
        let ips = candidate_ips(&WebRtcConfig::default(), false);
        assert!(ips.iter().all(IpAddr::is_loopback), "{ips:?}");
    }
}
