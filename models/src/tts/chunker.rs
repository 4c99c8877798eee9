//! Sans-IO text chunker: LLM tokens in, speakable chunks out.
//!
//! The first chunk is cut early (at the first clause boundary, or after a few words if none
//! comes, though not right after a function word such as "the" or "to") so speech can start
//! while the sentence is still being written. The word cap then doubles with each chunk (2, 4,
//! 8, 16, … words by default; 3, 6, 12, … for a reply that starts while others are being
//! written) so the audio already queued always covers the time the next, longer chunk takes to
//! write and speak; chunks are cut at sentence ends, at clause boundaries
//! once they are long enough, or at their cap.
//! A boundary only counts once the next whitespace has arrived, so "3.14", "1,000" and
//! "Dr. Smith" are never split.

#[derive(Debug, Clone)]
pub struct ChunkerConfig {
    /// First chunk: cut after this many words even without punctuation.
    pub first_max_words: usize,
    /// The same while other replies are being written at once (see
    /// [`TextChunker::set_contended`]): the CPU is shared, so the next chunk takes longer to
    /// write and speak, and a longer first chunk keeps the audio from running dry meanwhile.
    pub first_max_words_contended: usize,
    /// First chunk: a clause boundary needs at least this many words before it.
    pub first_min_words: usize,
    /// Later chunks: a clause boundary (not a sentence end) needs this many words (or half
    /// the chunk's word cap, if that is less).
    pub clause_min_words: usize,
    /// Any chunk: cut at a word boundary after this many words. Chunk `k` (from 0) is capped
    /// at `first_max_words · 2^k` words until that reaches this.
    pub max_words: usize,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        Self {
            // Each word of the first chunk is a token or two of LLM time the caller waits
            // through before any audio (~40 ms each on 2 cores): 2 words alone, 3 when other
            // replies share the CPU (2 underran the 4-session loadtest: docs/BENCHMARKS.md).
            first_max_words: 2,
            first_max_words_contended: 3,
            first_min_words: 1,
            clause_min_words: 8,
            max_words: 40,
        }
    }
}

#[derive(Debug)]
pub struct TextChunker {
    config: ChunkerConfig,
    buffer: String,
    emitted: usize,
    ready: std::collections::VecDeque<String>,
    contended: bool,
}

/// Abbreviations whose period does not end a sentence.
const NON_FINAL: [&str; 20] = [
    "dr.", "mr.", "mrs.", "ms.", "prof.", "st.", "jr.", "sr.", "vs.", "etc.", "e.g.", "i.e.",
    "no.", "mt.", "ave.", "inc.", "ltd.", "co.", "gen.", "approx.",
];

impl TextChunker {
    pub fn new(config: ChunkerConfig) -> Self {
        Self {
            config,
            buffer: String::new(),
            emitted: 0,
            ready: Default::default(),
            contended: false,
        }
    }

    /// Whether other replies are being written at the same time as this one; decides the
    /// first chunk's word cap (and so the caps doubled from it) until the next `reset`.
    pub fn set_contended(&mut self, contended: bool) {
        self.contended = contended;
    }

    /// Appends text as it arrives (any split, even mid-word).
    pub fn push(&mut self, text: &str) {
        self.buffer.push_str(text);
        while let Some(cut) = self.find_cut() {
            let rest = self.buffer.split_off(cut);
            let chunk = std::mem::replace(&mut self.buffer, rest);
            self.buffer = self.buffer.trim_start().to_owned();
            self.emit(chunk);
        }
    }

    /// End of the reply: whatever is left becomes the last chunk.
    pub fn finish(&mut self) {
        let rest = std::mem::take(&mut self.buffer);
        self.emit(rest);
    }

    /// Next complete chunk, if any.
    pub fn poll(&mut self) -> Option<String> {
        self.ready.pop_front()
    }

    /// Drops buffered text (barge-in) and starts over with a short first chunk.
    pub fn reset(&mut self) {
        self.buffer.clear();
        self.ready.clear();
        self.emitted = 0;
    }

    fn emit(&mut self, chunk: String) {
        let chunk = chunk.trim();
        if chunk.chars().any(char::is_alphanumeric) {
            self.ready.push_back(chunk.to_owned());
            self.emitted += 1;
        }
    }

    /// Word cap of the next chunk: the first chunk's, doubled per chunk emitted.
    fn word_cap(&self) -> usize {
        let doublings = self.emitted.min(usize::BITS as usize - 1) as u32;
        let first = if self.contended {
            self.config
                .first_max_words_contended
                .max(self.config.first_max_words)
        } else {
            self.config.first_max_words
        };
        first
            .max(1)
            .saturating_mul(1usize.checked_shl(doublings).unwrap_or(usize::MAX))
            .min(self.config.max_words)
    }

    /// Byte offset to cut the buffer at, if a chunk is complete.
    fn find_cut(&self) -> Option<usize> {
        let first = self.emitted == 0;
        let cap = self.word_cap();
        let clause_min = if first {
            self.config.first_min_words
        } else {
            self.config.clause_min_words.min(cap.div_ceil(2))
        };
        let mut words = 0;
        let mut in_word = false;
        let mut word_start = 0;
        for (i, c) in self.buffer.char_indices() {
            if c.is_whitespace() {
                if in_word {
                    in_word = false;
                    words += 1;
                    let word = &self.buffer[word_start..i];
                    let end = boundary(word);
                    let cut = match end {
                        Boundary::Sentence => true,
                        Boundary::Clause => words >= clause_min,
                        Boundary::None => false,
                    } || (words >= cap && !leans_on_next(word))
                        || words >= cap + CAP_OVERRUN
                        || words >= self.config.max_words;
                    if cut {
                        return Some(i);
                    }
                }
            } else if !in_word {
                in_word = true;
                word_start = i;
            }
        }
        None
    }
}

/// Words a chunk may run past its word cap to avoid ending on a function word.
const CAP_OVERRUN: usize = 3;

/// Function words that lean on the next word: a chunk ending on one is spoken with the wrong
/// stress and a pause inside a phrase ("remember to | lock" heard as "remember, too,").
const LEANS_ON_NEXT: [&str; 48] = [
    "a", "an", "the", "to", "of", "at", "in", "on", "for", "with", "by", "from", "into", "about",
    "and", "or", "but", "nor", "if", "than", "as", "my", "your", "our", "their", "his", "her",
    "its", "this", "that", "these", "those", "is", "are", "was", "were", "be", "am", "will",
    "would", "can", "could", "should", "do", "does", "did", "i", "we",
];

fn leans_on_next(word: &str) -> bool {
    let bare: String = word
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '\'')
        .collect::<String>()
        .to_lowercase();
    LEANS_ON_NEXT.contains(&bare.as_str())
}

#[derive(Debug, PartialEq)]
enum Boundary {
    None,
    Clause,
    Sentence,
}

fn boundary(word: &str) -> Boundary {
    let trimmed = word.trim_end_matches(['"', '\'', ')', '”', '’']);
    match trimmed.chars().last() {
        Some('!' | '?' | '…') => Boundary::Sentence,
        Some('.') => {
            let lower = trimmed.to_lowercase();
            let initial = trimmed.len() == 2 && trimmed.starts_with(|c: char| c.is_uppercase());
            if NON_FINAL
                .iter()
                .any(|a| lower.ends_with(a) && lower.len() == a.len())
                || initial
            {
                Boundary::None
            } else {
                Boundary::Sentence
            }
        }
        Some(',' | ';' | ':' | '—' | '–') => Boundary::Clause,
        _ if word == "-" || word == "—" => Boundary::Clause,
        _ => Boundary::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks_of(tokens: &[&str]) -> Vec<String> {
        let mut c = TextChunker::new(ChunkerConfig::default());
        let mut out = Vec::new();
        for t in tokens {
            c.push(t);
            while let Some(x) = c.poll() {
                out.push(x);
            }
        }
        c.finish();
        while let Some(x) = c.poll() {
            out.push(x);
        }
        out
    }

    fn by_words(text: &str) -> Vec<String> {
        // Split like an LLM tokenizer: words with their leading space, punctuation apart.
        let mut tokens = Vec::new();
        for (i, w) in text.split(' ').enumerate() {
            let w = if i == 0 {
                w.to_owned()
            } else {
                format!(" {w}")
            };
            tokens.push(w);
        }
        tokens
    }

    #[test]
    fn first_chunk_cut_at_first_clause() {
        let toks =
            by_words("Sure, I can help with that. The store opens at nine, and it closes at five.");
        let refs: Vec<&str> = toks.iter().map(String::as_str).collect();
        assert_eq!(
            chunks_of(&refs),
            [
                "Sure,",
                "I can help with that.",
                "The store opens at nine,",
                "and it closes at five."
            ]
        );
        let toks = by_words("Well then, I can help with that today. Bye.");
        let refs: Vec<&str> = toks.iter().map(String::as_str).collect();
        assert_eq!(
            chunks_of(&refs),
            ["Well then,", "I can help with that today.", "Bye."]
        );
    }

    #[test]
    fn first_chunk_cut_after_a_few_words_without_punctuation() {
        let toks = by_words("the quick brown fox jumps over the lazy dog again and again");
        let refs: Vec<&str> = toks.iter().map(String::as_str).collect();
        assert_eq!(
            chunks_of(&refs),
            [
                "the quick",
                "brown fox jumps over",
                "the lazy dog again and again"
            ]
        );
    }

    #[test]
    fn a_contended_reply_starts_with_a_longer_chunk_until_reset() {
        let text = "the quick brown fox jumps over the lazy dog again and again";
        let first_chunk = |c: &mut TextChunker| {
            for t in by_words(text) {
                c.push(&t);
            }
            let first = c.poll();
            c.reset();
            first
        };
        let mut c = TextChunker::new(ChunkerConfig::default());
        assert_eq!(first_chunk(&mut c).as_deref(), Some("the quick"));
        c.set_contended(true);
        assert_eq!(first_chunk(&mut c).as_deref(), Some("the quick brown"));
        c.set_contended(false);
        assert_eq!(first_chunk(&mut c).as_deref(), Some("the quick"));
    }

    #[test]
    fn first_chunk_capped_by_words_does_not_end_on_a_function_word() {
        let config = ChunkerConfig {
            first_max_words: 4,
            ..ChunkerConfig::default()
        };
        let cut = |text: &str| {
            let mut c = TextChunker::new(config.clone());
            for t in by_words(text) {
                c.push(&t);
            }
            c.finish();
            c.poll().expect("a chunk")
        };
        // 4th word "to" leans on "lock": run on to the next content word.
        assert_eq!(
            cut("Did you remember to lock the front door tonight"),
            "Did you remember to lock"
        );
        assert_eq!(
            cut("Turn left at the next light and park behind the bank"),
            "Turn left at the next"
        );
        assert_eq!(
            cut("The restaurant on Main Street has a table"),
            "The restaurant on Main"
        );
        // Never more than CAP_OVERRUN words past the cap.
        assert_eq!(
            cut("one two three and of the a to go"),
            "one two three and of the a"
        );
    }

    #[test]
    fn the_word_cap_doubles_per_chunk_up_to_the_maximum() {
        let text: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
        let toks = by_words(&text.join(" "));
        let refs: Vec<&str> = toks.iter().map(String::as_str).collect();
        let sizes: Vec<usize> = chunks_of(&refs)
            .iter()
            .map(|c| c.split_whitespace().count())
            .collect();
        assert_eq!(sizes, [2, 4, 8, 16, 32, 40, 40, 40, 18]);
    }

    #[test]
    fn no_cut_inside_numbers_or_abbreviations() {
        let out = chunks_of(&[
            "Dr", ".", " Smith", " paid", " $", "1", ",", "000", ".", "50", " today", ".", " Then",
            " left", ".",
        ]);
        // The first chunk is cut by the word cap; "Dr." and "$1,000.50" stay whole.
        assert_eq!(out, ["Dr. Smith", "paid $1,000.50 today.", "Then left."]);
    }

    #[test]
    fn waits_for_whitespace_before_cutting() {
        let mut c = TextChunker::new(ChunkerConfig::default());
        c.push("Hello there,");
        assert_eq!(c.poll(), None, "a comma may still be 1,000");
        c.push(" friend");
        assert_eq!(c.poll().as_deref(), Some("Hello there,"));
    }

    #[test]
    fn long_text_without_punctuation_is_capped() {
        let text = vec!["word"; 100].join(" ");
        let out = chunks_of(&[text.as_str()]);
        assert!(
            out.iter().all(|c| c.split_whitespace().count() <= 40),
            "{out:?}"
        );
        assert_eq!(
            out.iter()
                .map(|c| c.split_whitespace().count())
                .sum::<usize>(),
            100
        );
    }

    #[test]
    fn reset_drops_pending_text() {
        let mut c = TextChunker::new(ChunkerConfig::default());
        c.push("one two three");
        c.reset();
        c.push("four five, six ");
        assert_eq!(c.poll().as_deref(), Some("four five,"));
    }
}
