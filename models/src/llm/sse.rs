//! Server-sent events, sans-IO: feed bytes, take out the `data:` payloads of complete events.

/// Incremental SSE parser. Only `data:` fields matter for chat completions; other fields and
/// comments are skipped. Multi-line data of one event is joined with `\n` (per the spec).
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Feed bytes; returns the data of every event completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&line, &mut out);
            } else {
                self.line.push(b);
            }
        }
        out
    }

    /// End of stream: an event not yet closed by a blank line still counts.
    pub fn finish(&mut self) -> Option<String> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            let mut out = Vec::new();
            self.line_done(&line, &mut out);
            if let Some(d) = out.pop() {
                return Some(d);
            }
        }
        self.data.take()
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<String>) {
        if line.is_empty() {
            if let Some(d) = self.data.take() {
                out.push(d);
            }
            return;
        }
        if line.starts_with(b":") {
            return; // comment / keep-alive
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        if field == b"data" {
            let v = String::from_utf8_lossy(value);
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(&v);
                }
                None => self.data = Some(v.into_owned()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_events_comments_and_crlf() {
        let mut p = SseParser::default();
        assert!(p.feed(b": keep-alive\n\ndata: {\"a\"").is_empty());
        assert_eq!(
            p.feed(b":1}\r\n\r\ndata: x\ndata: y\n\n"),
            vec!["{\"a\":1}".to_owned(), "x\ny".to_owned()]
        );
        assert_eq!(p.feed(b"event: foo\ndata:[DONE]"), Vec::<String>::new());
        assert_eq!(p.finish().as_deref(), Some("[DONE]"));
    }
}
