//! RTTM lines (NIST Rich Transcription Time Marked), one per labelled segment.

use super::online::Segment;

/// `SPEAKER file 1 start dur <NA> <NA> label <NA> <NA>`, times in seconds with 3 decimals.
pub fn rttm_line(file_id: &str, seg: &Segment) -> String {
    format!(
        "SPEAKER {file_id} 1 {:.3} {:.3} <NA> <NA> {} <NA> <NA>",
        seg.start_s,
        (seg.end_s - seg.start_s).max(0.0),
        seg.label
    )
}

/// The RTTM file id: whitespace would split the fields, so it becomes `_`.
pub fn file_id(name: &str) -> String {
    let id: String = name
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    if id.is_empty() { "file".into() } else { id }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_a_segment() {
        let seg = Segment {
            start_s: 1.5,
            end_s: 3.25,
            label: "S2".into(),
        };
        assert_eq!(
            rttm_line(&file_id("a b"), &seg),
            "SPEAKER a_b 1 1.500 1.750 <NA> <NA> S2 <NA> <NA>"
        );
    }
}
