//! SDP offer/answer (RFC 4566, RFC 3264) for one G.711 audio stream with RFC 4733
//! telephone-events. The first `m=audio` line over `RTP/AVP` that offers PCMU or PCMA is
//! accepted (codec in the offerer's order of preference); every other media line is refused
//! with port 0, as RFC 3264 section 6 requires. Hold is read from the direction attribute
//! (`sendonly`/`inactive`) or the RFC 2543 style `c=IN IP4 0.0.0.0`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Most bytes of SDP looked at.
pub const MAX_SDP_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP body is empty, too large or not UTF-8")]
    Unreadable,
    #[error("SDP line {0:?} is malformed")]
    BadLine(String),
    #[error("no audio stream offered")]
    NoAudio,
    #[error("no connection address for the audio stream")]
    NoConnection,
    #[error("neither PCMU nor PCMA offered")]
    NoCommonCodec,
}

/// The G.711 law of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The answer's direction for an offer's (RFC 3264 6.1).
    fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MediaLine {
    media: String,
    port: u16,
    proto: String,
    formats: Vec<String>,
    connection: Option<IpAddr>,
    rtpmap: Vec<(u8, String)>,
    direction: Option<Direction>,
}

/// What was agreed for the call's audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: Codec,
    pub payload_type: u8,
    /// The telephone-event payload type, when the offer had one.
    pub telephone_event: Option<u8>,
    /// Where the offerer wants our RTP (before symmetric-RTP latching).
    pub remote: SocketAddr,
    /// Our direction in the answer.
    pub direction: Direction,
    /// Every media line of the offer, to mirror in the answer.
    lines: Vec<MediaLine>,
    audio_index: usize,
}

impl Negotiated {
    /// The caller put us on hold: we must not send audio.
    pub fn on_hold(&self) -> bool {
        matches!(self.direction, Direction::RecvOnly | Direction::Inactive)
    }
}

fn parse_connection(value: &str) -> Result<IpAddr, SdpError> {
    let bad = || SdpError::BadLine(format!("c={value}"));
    let mut parts = value.split_ascii_whitespace();
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("IN"), Some("IP4" | "IP6"), Some(addr), None) => {
            // A multicast TTL suffix (addr/ttl) is not a unicast phone call.
            addr.parse().map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// Parses an offer and picks the codec; `Err(NoCommonCodec)` becomes a 488.
pub fn negotiate(body: &[u8]) -> Result<Negotiated, SdpError> {
    if body.is_empty() || body.len() > MAX_SDP_BYTES {
        return Err(SdpError::Unreadable);
    }
    let text = std::str::from_utf8(body).map_err(|_| SdpError::Unreadable)?;
    let mut session_connection = None;
    let mut session_direction = None;
    let mut lines: Vec<MediaLine> = Vec::new();
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let (kind, value) = line
            .split_once('=')
            .filter(|(k, _)| k.len() == 1)
            .ok_or_else(|| SdpError::BadLine(line.chars().take(80).collect()))?;
        match kind {
            "m" => {
                let mut parts = value.split_ascii_whitespace();
                let (Some(media), Some(port), Some(proto)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(SdpError::BadLine(format!("m={value}")));
                };
                // `port/count` is for layered multicast; one port is all a call uses.
                let port: u16 = port
                    .split('/')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| SdpError::BadLine(format!("m={value}")))?;
                lines.push(MediaLine {
                    media: media.to_string(),
                    port,
                    proto: proto.to_string(),
                    formats: parts.map(str::to_string).collect(),
                    connection: None,
                    rtpmap: Vec::new(),
                    direction: None,
                });
            }
            "c" => {
                let addr = parse_connection(value)?;
                match lines.last_mut() {
                    Some(m) => m.connection = Some(addr),
                    None => session_connection = Some(addr),
                }
            }
            "a" => {
                let direction = match value {
                    "sendrecv" => Some(Direction::SendRecv),
                    "sendonly" => Some(Direction::SendOnly),
                    "recvonly" => Some(Direction::RecvOnly),
                    "inactive" => Some(Direction::Inactive),
                    _ => None,
                };
                if let Some(d) = direction {
                    match lines.last_mut() {
                        Some(m) => m.direction = Some(d),
                        None => session_direction = Some(d),
                    }
                } else if let Some(map) = value.strip_prefix("rtpmap:")
                    && let Some(m) = lines.last_mut()
                {
                    let (pt, enc) = map
                        .split_once(' ')
                        .ok_or_else(|| SdpError::BadLine(format!("a={value}")))?;
                    let pt: u8 = pt
                        .parse()
                        .ok()
                        .filter(|p| *p < 128)
                        .ok_or_else(|| SdpError::BadLine(format!("a={value}")))?;
                    m.rtpmap.push((pt, enc.trim().to_ascii_lowercase()));
                }
            }
            _ => {}
        }
    }
    let audio_index = lines
        .iter()
        .position(|m| m.media == "audio" && m.proto == "RTP/AVP" && m.port != 0)
        .ok_or(SdpError::NoAudio)?;
    let audio = &lines[audio_index];
    let connection = audio
        .connection
        .or(session_connection)
        .ok_or(SdpError::NoConnection)?;
    let encoding = |pt: u8| {
        audio
            .rtpmap
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, e)| e.as_str())
    };
    let mut chosen = None;
    let mut telephone_event = None;
    for fmt in &audio.formats {
        let Ok(pt) = fmt.parse::<u8>() else { continue };
        if pt >= 128 {
            continue;
        }
        let codec = match (pt, encoding(pt)) {
            (_, Some("pcmu/8000" | "pcmu/8000/1")) | (0, None) => Some(Codec::Pcmu),
            (_, Some("pcma/8000" | "pcma/8000/1")) | (8, None) => Some(Codec::Pcma),
            (_, Some(e)) if e.starts_with("telephone-event/8000") => {
                telephone_event.get_or_insert(pt);
                None
            }
            _ => None,
        };
        if let Some(c) = codec
            && chosen.is_none()
        {
            chosen = Some((c, pt));
        }
    }
    let (codec, payload_type) = chosen.ok_or(SdpError::NoCommonCodec)?;
    let offered = audio
        .direction
        .or(session_direction)
        .unwrap_or(Direction::SendRecv);
    let mut direction = offered.reversed();
    if connection.is_unspecified() {
        // RFC 2543 hold: "send me nothing".
        direction = match direction {
            Direction::SendRecv | Direction::RecvOnly => Direction::RecvOnly,
            _ => Direction::Inactive,
        };
    }
    Ok(Negotiated {
        codec,
        payload_type,
        telephone_event,
        remote: SocketAddr::new(connection, audio.port),
        direction,
        audio_index,
        lines,
    })
}

/// The answer body: our address and port for the audio line, the others refused.
/// `version` must grow with each new answer in the dialog (o= line, RFC 3264 8).
pub fn answer(neg: &Negotiated, local: SocketAddr, session_id: u64, version: u64) -> String {
    let ip = local.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut s = format!(
        "v=0\r\no=antiphon {session_id} {version} IN {family} {ip}\r\ns=antiphon\r\nc=IN {family} {ip}\r\nt=0 0\r\n"
    );
    for (i, line) in neg.lines.iter().enumerate() {
        if i != neg.audio_index {
            let fmt = line.formats.first().map_or("0", String::as_str);
            s.push_str(&format!("m={} 0 {} {fmt}\r\n", line.media, line.proto));
            continue;
        }
        let pt = neg.payload_type;
        s.push_str(&format!("m=audio {} RTP/AVP {pt}", local.port()));
        if let Some(te) = neg.telephone_event {
            s.push_str(&format!(" {te}"));
        }
        s.push_str(&format!("\r\na=rtpmap:{pt} {}/8000\r\n", neg.codec.name()));
        if let Some(te) = neg.telephone_event {
            s.push_str(&format!(
                "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"
            ));
        }
        s.push_str(&format!("a=ptime:20\r\na={}\r\n", neg.direction.attr()));
    }
    s
}

/// A placeholder unspecified address, for tests and for "no media yet".
pub const UNSPECIFIED: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\nm=video 6002 RTP/AVP 96\r\n";

    #[test]
    fn picks_the_offerers_first_g711_and_telephone_event() {
        let n = negotiate(OFFER.as_bytes()).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.payload_type, 8);
        assert_eq!(n.telephone_event, Some(101));
        assert_eq!(n.remote, "127.0.0.1:6000".parse().unwrap());
        assert!(!n.on_hold());
        let a = answer(&n, "10.0.0.5:20000".parse().unwrap(), 7, 1);
        assert!(a.contains("c=IN IP4 10.0.0.5\r\n"), "{a}");
        assert!(a.contains("m=audio 20000 RTP/AVP 8 101\r\n"), "{a}");
        assert!(a.contains("a=rtpmap:8 PCMA/8000\r\n"));
        assert!(a.contains("a=sendrecv\r\n"));
        // The video line is refused, in its place.
        assert!(a.ends_with("m=video 0 RTP/AVP 96\r\n") || a.contains("m=video 0 RTP/AVP 96\r\n"));
        // The answer is itself acceptable SDP.
        assert_eq!(negotiate(a.as_bytes()).unwrap().codec, Codec::Pcma);
    }

    #[test]
    fn static_payload_types_without_rtpmap() {
        let n = negotiate(b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 18 0\r\n").unwrap();
        assert_eq!(
            (n.codec, n.payload_type, n.telephone_event),
            (Codec::Pcmu, 0, None)
        );
    }

    #[test]
    fn hold_by_direction_or_null_address() {
        let held = OFFER.replace("a=fmtp:101 0-15\r\n", "a=fmtp:101 0-15\r\na=sendonly\r\n");
        let n = negotiate(held.as_bytes()).unwrap();
        assert_eq!(n.direction, Direction::RecvOnly);
        assert!(n.on_hold());
        let null = OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        assert!(negotiate(null.as_bytes()).unwrap().on_hold());
        let inactive = OFFER.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n");
        assert_eq!(
            negotiate(inactive.as_bytes()).unwrap().direction,
            Direction::Inactive
        );
    }

    #[test]
    fn refuses_what_it_cannot_answer() {
        assert_eq!(
            negotiate(b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 18 9\r\n").unwrap_err(),
            SdpError::NoCommonCodec
        );
        assert_eq!(
            negotiate(b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 4000 RTP/AVP 0\r\n").unwrap_err(),
            SdpError::NoAudio
        );
        assert_eq!(
            negotiate(b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n").unwrap_err(),
            SdpError::NoConnection
        );
        assert!(matches!(
            negotiate(b"v=0\r\nc=IN IP4 nowhere\r\n").unwrap_err(),
            SdpError::BadLine(_)
        ));
        assert!(matches!(
            negotiate(b"v=0\r\nm=audio 99999 RTP/AVP 0\r\n").unwrap_err(),
            SdpError::BadLine(_)
        ));
        assert_eq!(negotiate(b"").unwrap_err(), SdpError::Unreadable);
    }
}
