//! RTP and RTCP packets (RFC 3550), the outgoing G.711 packetizer and RFC 4733 DTMF events.
//!
//! Parsing is strict: version 2 only; the CSRC list, header extension and padding must fit in
//! the datagram; an RTP packet must carry a payload. RTCP compound packets are checked the way
//! RFC 3550 appendix A.2 suggests (version, lengths that add up exactly, first packet SR/RR).

/// Bytes of the fixed RTP header.
pub const HEADER_LEN: usize = 12;
/// Largest datagram accepted (anything larger is not a phone call).
pub const MAX_PACKET: usize = 1500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("packet of {0} bytes is shorter than its headers")]
    TooShort(usize),
    #[error("packet of {0} bytes is larger than {MAX_PACKET}")]
    TooLarge(usize),
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    #[error("header extension runs past the packet")]
    BadExtension,
    #[error("padding count {0} is zero or larger than the payload")]
    BadPadding(u8),
    #[error("no payload")]
    Empty,
    #[error("RTCP length field does not match the datagram")]
    BadRtcpLength,
    #[error("RTCP packet type {0} cannot start a compound packet")]
    BadRtcpType(u8),
    #[error("telephone-event payload is {0} bytes, expected 4")]
    BadEvent(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub header: RtpHeader,
    pub payload: &'a [u8],
}

/// True when the second byte says RTCP (SR, RR, SDES, BYE, APP: 200..=204), which RFC 5761
/// uses to tell the two apart on one port.
pub fn looks_like_rtcp(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && (200..=204).contains(&bytes[1])
}

/// Parses one RTP packet.
pub fn parse(bytes: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    if bytes.len() > MAX_PACKET {
        return Err(RtpError::TooLarge(bytes.len()));
    }
    if bytes.len() < HEADER_LEN {
        return Err(RtpError::TooShort(bytes.len()));
    }
    let version = bytes[0] >> 6;
    if version != 2 {
        return Err(RtpError::BadVersion(version));
    }
    let padding = bytes[0] & 0x20 != 0;
    let extension = bytes[0] & 0x10 != 0;
    let csrc_count = usize::from(bytes[0] & 0x0f);
    let mut start = HEADER_LEN + 4 * csrc_count;
    if bytes.len() < start {
        return Err(RtpError::TooShort(bytes.len()));
    }
    if extension {
        if bytes.len() < start + 4 {
            return Err(RtpError::BadExtension);
        }
        let words = usize::from(u16::from_be_bytes([bytes[start + 2], bytes[start + 3]]));
        start += 4 + 4 * words;
        if bytes.len() < start {
            return Err(RtpError::BadExtension);
        }
    }
    let mut end = bytes.len();
    if padding {
        let count = bytes[end - 1];
        if count == 0 || usize::from(count) > end - start {
            return Err(RtpError::BadPadding(count));
        }
        end -= usize::from(count);
    }
    if end == start {
        return Err(RtpError::Empty);
    }
    Ok(RtpPacket {
        header: RtpHeader {
            marker: bytes[1] & 0x80 != 0,
            payload_type: bytes[1] & 0x7f,
            sequence: u16::from_be_bytes([bytes[2], bytes[3]]),
            timestamp: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            ssrc: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        },
        payload: &bytes[start..end],
    })
}

/// Writes a plain RTP packet (no CSRC, extension or padding) into `out`.
pub fn write(header: &RtpHeader, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(0x80);
    out.push((u8::from(header.marker) << 7) | (header.payload_type & 0x7f));
    out.extend_from_slice(&header.sequence.to_be_bytes());
    out.extend_from_slice(&header.timestamp.to_be_bytes());
    out.extend_from_slice(&header.ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

/// What a valid RTCP compound packet held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtcpSummary {
    pub packets: usize,
    pub sender_reports: usize,
    pub receiver_reports: usize,
    pub byes: usize,
}

/// Validates an RTCP compound packet and counts what it holds.
pub fn parse_rtcp(bytes: &[u8]) -> Result<RtcpSummary, RtpError> {
    if bytes.len() > MAX_PACKET {
        return Err(RtpError::TooLarge(bytes.len()));
    }
    if bytes.len() < 8 {
        return Err(RtpError::TooShort(bytes.len()));
    }
    let mut summary = RtcpSummary::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(RtpError::BadRtcpLength);
        }
        let version = rest[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let kind = rest[1];
        if summary.packets == 0 && !(kind == 200 || kind == 201) {
            return Err(RtpError::BadRtcpType(kind));
        }
        let len = 4 * (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1);
        if len > rest.len() {
            return Err(RtpError::BadRtcpLength);
        }
        // Padding is only allowed on the last packet of a compound.
        if rest[0] & 0x20 != 0 && len != rest.len() {
            return Err(RtpError::BadPadding(rest[len - 1]));
        }
        match kind {
            200 => summary.sender_reports += 1,
            201 => summary.receiver_reports += 1,
            203 => summary.byes += 1,
            _ => {}
        }
        summary.packets += 1;
        rest = &rest[len..];
    }
    Ok(summary)
}

/// An RTCP compound packet: a sender report (no report blocks) and an SDES with our CNAME.
/// `ntp` is the 64-bit NTP timestamp of `rtp_timestamp` (wall clock, passed in).
pub fn sender_report(
    ssrc: u32,
    ntp: u64,
    rtp_timestamp: u32,
    packets: u32,
    octets: u32,
    cname: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&[0x80, 200, 0, 6]);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&ntp.to_be_bytes());
    out.extend_from_slice(&rtp_timestamp.to_be_bytes());
    out.extend_from_slice(&packets.to_be_bytes());
    out.extend_from_slice(&octets.to_be_bytes());
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    // SDES chunk: SSRC, CNAME item, end marker, padded to 32 bits.
    let mut chunk = ssrc.to_be_bytes().to_vec();
    chunk.push(1);
    chunk.push(cname.len() as u8); // at most 255 by the slice above
    chunk.extend_from_slice(cname);
    chunk.push(0);
    while !chunk.len().is_multiple_of(4) {
        chunk.push(0);
    }
    let words = (chunk.len() + 4) / 4 - 1;
    out.extend_from_slice(&[0x81, 202]);
    out.extend_from_slice(&(words as u16).to_be_bytes());
    out.extend_from_slice(&chunk);
    out
}

/// One RFC 4733 telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    /// In timestamp units since the event's start.
    pub duration: u16,
}

pub fn parse_dtmf(payload: &[u8]) -> Result<DtmfEvent, RtpError> {
    // Several events may be stacked (RFC 4733 2.5.1.4, redundancy); the first is current.
    if payload.len() < 4 || !payload.len().is_multiple_of(4) {
        return Err(RtpError::BadEvent(payload.len()));
    }
    Ok(DtmfEvent {
        event: payload[0],
        end: payload[1] & 0x80 != 0,
        volume: payload[1] & 0x3f,
        duration: u16::from_be_bytes([payload[2], payload[3]]),
    })
}

/// The key of a DTMF event code (0-9, *, #, A-D); other events (flash, tones) have none.
pub fn dtmf_key(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// Turns the stream of telephone-event packets (each event is sent many times, with the
/// same RTP timestamp, the end packet three times) into one key press per event.
#[derive(Debug, Default)]
pub struct DtmfDetector {
    last_timestamp: Option<u32>,
}

impl DtmfDetector {
    /// The key pressed, the first time a packet of a new event is seen.
    pub fn on_packet(&mut self, timestamp: u32, event: &DtmfEvent) -> Option<char> {
        if self.last_timestamp == Some(timestamp) {
            return None;
        }
        self.last_timestamp = Some(timestamp);
        dtmf_key(event.event)
    }
}

/// The outgoing stream of one call: sequence numbers, timestamps and marker bits.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: u32,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    packets: u32,
    octets: u32,
    buf: Vec<u8>,
}

impl RtpSender {
    /// Random `ssrc`, `sequence` and `timestamp` starts are the caller's job (RFC 3550 5.1).
    pub fn new(ssrc: u32, payload_type: u8, sequence: u16, timestamp: u32) -> Self {
        RtpSender {
            ssrc,
            payload_type,
            sequence,
            timestamp,
            packets: 0,
            octets: 0,
            buf: Vec::with_capacity(HEADER_LEN + 160),
        }
    }

    /// The next packet carrying `payload` (G.711: one byte per sample at 8 kHz). `marker`
    /// starts a talkspurt. The returned bytes stay valid until the next call.
    pub fn packet(&mut self, payload: &[u8], marker: bool) -> &[u8] {
        let header = RtpHeader {
            marker,
            payload_type: self.payload_type,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
        };
        write(&header, payload, &mut self.buf);
        self.sequence = self.sequence.wrapping_add(1);
        // Each byte is one 8 kHz sample; a packet is at most MAX_PACKET bytes.
        self.timestamp = self.timestamp.wrapping_add(payload.len() as u32);
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload.len() as u32);
        &self.buf
    }

    /// Media time passes without a packet (on hold): timestamps keep the sampling clock.
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Timestamp the next packet will carry.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    pub fn packets(&self) -> u32 {
        self.packets
    }

    pub fn octets(&self) -> u32 {
        self.octets
    }

    pub fn set_payload_type(&mut self, pt: u8) {
        self.payload_type = pt;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_packets_roundtrip_with_sequence_timestamp_and_marker() {
        let mut s = RtpSender::new(0xdead_beef, 0, 65_535, u32::MAX - 100);
        let first = s.packet(&[0xff; 160], true).to_vec();
        let second = s.packet(&[0x7f; 160], false).to_vec();
        let a = parse(&first).unwrap();
        let b = parse(&second).unwrap();
        assert!(a.header.marker && !b.header.marker);
        assert_eq!((a.header.sequence, b.header.sequence), (65_535, 0));
        assert_eq!(b.header.timestamp, a.header.timestamp.wrapping_add(160));
        assert_eq!(a.header.ssrc, 0xdead_beef);
        assert_eq!(b.payload, &[0x7f; 160][..]);
        s.skip(320);
        let third = parse(s.packet(&[0; 160], true)).unwrap().header;
        assert_eq!(third.timestamp, b.header.timestamp.wrapping_add(160 + 320));
        assert_eq!((s.packets(), s.octets()), (3, 480));
    }

    #[test]
    fn csrc_extension_and_padding_are_skipped() {
        let mut p = vec![0x80 | 0x20 | 0x10 | 1, 8, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9];
        p.extend_from_slice(&[1, 2, 3, 4]); // CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // extension, one word
        p.extend_from_slice(&[5, 6, 7]); // payload
        p.extend_from_slice(&[0, 0, 3]); // padding of 3
        let r = parse(&p).unwrap();
        assert_eq!(r.payload, &[5, 6, 7]);
        assert_eq!(r.header.payload_type, 8);
    }

    #[test]
    fn malformed_rtp_is_a_typed_error() {
        assert_eq!(parse(&[0x80; 5]), Err(RtpError::TooShort(5)));
        let mut v1 = vec![0x40, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff];
        assert_eq!(parse(&v1), Err(RtpError::BadVersion(1)));
        v1[0] = 0x8f; // 15 CSRCs that are not there
        assert_eq!(parse(&v1), Err(RtpError::TooShort(13)));
        let ext = [0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0xff, 0xff];
        assert_eq!(parse(&ext), Err(RtpError::BadExtension));
        let pad = [0xa0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 200];
        assert_eq!(parse(&pad), Err(RtpError::BadPadding(200)));
        let empty = [0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(parse(&empty), Err(RtpError::Empty));
        assert_eq!(
            parse(&vec![0x80; MAX_PACKET + 1]),
            Err(RtpError::TooLarge(MAX_PACKET + 1))
        );
    }

    #[test]
    fn rtcp_sender_report_validates_and_bad_lengths_do_not() {
        let sr = sender_report(7, 1 << 40, 1234, 10, 1600, "antiphon@host");
        assert!(looks_like_rtcp(&sr));
        assert_eq!(
            parse_rtcp(&sr).unwrap(),
            RtcpSummary {
                packets: 2,
                sender_reports: 1,
                receiver_reports: 0,
                byes: 0
            }
        );
        let mut cut = sr.clone();
        cut.truncate(sr.len() - 4);
        assert_eq!(parse_rtcp(&cut), Err(RtpError::BadRtcpLength));
        let mut sdes_first = sr.clone();
        sdes_first[1] = 202;
        assert_eq!(parse_rtcp(&sdes_first), Err(RtpError::BadRtcpType(202)));
    }

    #[test]
    fn dtmf_events_become_one_key_press_each() {
        let mut d = DtmfDetector::default();
        let five = parse_dtmf(&[5, 10, 0, 160]).unwrap();
        assert_eq!(d.on_packet(1000, &five), Some('5'));
        assert_eq!(d.on_packet(1000, &five), None, "same event, next packet");
        let end = parse_dtmf(&[5, 0x80 | 10, 3, 0x20]).unwrap();
        assert!(end.end);
        assert_eq!(d.on_packet(1000, &end), None);
        let hash = parse_dtmf(&[11, 10, 0, 160]).unwrap();
        assert_eq!(d.on_packet(2600, &hash), Some('#'));
        assert_eq!(parse_dtmf(&[1, 2, 3]), Err(RtpError::BadEvent(3)));
        assert_eq!(dtmf_key(16), None);
        assert_eq!(dtmf_key(15), Some('D'));
    }
}
