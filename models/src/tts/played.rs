//! What the listener actually heard: maps a playback position back to the reply's text, so a
//! barge-in can cut the assistant's turn to what was played.

use super::engine::TtsChunk;

/// Text heard once `played` samples of one epoch's audio have been played. Chunks whose speech
/// ended before `played` count whole; inside the chunk being played, words count in proportion
/// to the share of its speech played (chunks carry no word timings, so this rounds down to a
/// whole word and can be off by a word or so).
pub fn played_text(chunks: &[TtsChunk], played: u64) -> String {
    let mut words: Vec<&str> = Vec::new();
    for chunk in chunks {
        if chunk.start_sample >= played {
            break;
        }
        let speech_end = chunk.start_sample + chunk.speech_samples as u64;
        let chunk_words: Vec<&str> = chunk.text.split_whitespace().collect();
        if played >= speech_end {
            words.extend(chunk_words);
        } else {
            let heard = (played - chunk.start_sample) as f64 / chunk.speech_samples.max(1) as f64;
            let n = (heard * chunk_words.len() as f64).floor() as usize;
            words.extend(&chunk_words[..n.min(chunk_words.len())]);
            break;
        }
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(start: u64, speech: usize, pause: usize, text: &str) -> TtsChunk {
        TtsChunk {
            epoch: 0,
            seq: 0,
            samples: vec![0.0; speech + pause],
            sample_rate: 1000,
            start_sample: start,
            speech_samples: speech,
            text: text.into(),
            last: false,
        }
    }

    #[test]
    fn whole_and_partial_chunks() {
        let chunks = [
            chunk(0, 1000, 200, "Sure,"),
            chunk(1200, 2000, 0, "I can book a table."),
        ];
        assert_eq!(played_text(&chunks, 0), "");
        assert_eq!(played_text(&chunks, 999), "");
        assert_eq!(played_text(&chunks, 1000), "Sure,");
        assert_eq!(played_text(&chunks, 1300), "Sure,");
        assert_eq!(played_text(&chunks, 1200 + 1000), "Sure, I can");
        assert_eq!(played_text(&chunks, 10_000), "Sure, I can book a table.");
    }
}
