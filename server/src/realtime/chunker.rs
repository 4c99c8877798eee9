//! Cuts a stream of LLM tokens into text chunks for TTS: a short first chunk (the first clause,
//! so speech starts early), then natural sentence-sized chunks.

/// Streaming text chunker. Feed tokens with [`Chunker::push`], drain the rest with `flush`.
#[derive(Debug, Default)]
pub struct Chunker {
    pending: String,
    emitted_any: bool,
}

/// First chunk: cut at a clause mark once it has this many words, or after `FIRST_MAX_WORDS`.
const FIRST_MIN_WORDS: usize = 2;
const FIRST_MAX_WORDS: usize = 10;
/// Later chunks: cut at a sentence end, or at a clause mark past `LATER_CLAUSE_WORDS`, or
/// after `LATER_MAX_WORDS` whatever comes.
const LATER_CLAUSE_WORDS: usize = 12;
const LATER_MAX_WORDS: usize = 40;

impl Chunker {
    pub fn new() -> Self {
        Chunker::default()
    }

    /// Adds a token; returns every chunk now complete, in order.
    pub fn push(&mut self, token: &str) -> Vec<String> {
        self.pending.push_str(token);
        let mut out = Vec::new();
        while let Some(cut) = self.find_cut() {
            let chunk: String = self.pending.drain(..cut).collect();
            if !chunk.trim().is_empty() {
                out.push(chunk);
                self.emitted_any = true;
            }
        }
        out
    }

    /// Whatever text remains, as a final chunk.
    pub fn flush(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.pending);
        (!rest.trim().is_empty()).then_some(rest)
    }

    /// Byte index just after the mark where the next chunk ends, if one is complete. A mark
    /// only counts once the next character (whitespace) has arrived, so "3.5" is not cut.
    fn find_cut(&self) -> Option<usize> {
        let mut words = 0;
        let mut in_word = false;
        let mut prev: Option<(usize, char)> = None;
        for (i, ch) in self.pending.char_indices() {
            if ch.is_whitespace() {
                if in_word {
                    words += 1;
                    in_word = false;
                }
                if let Some((pi, pc)) = prev {
                    let end = pi + pc.len_utf8();
                    let sentence = matches!(pc, '.' | '!' | '?');
                    let clause = sentence || matches!(pc, ',' | ';' | ':' | '—');
                    if !self.emitted_any {
                        if (clause && words >= FIRST_MIN_WORDS) || words >= FIRST_MAX_WORDS {
                            return Some(end);
                        }
                    } else if sentence
                        || (clause && words >= LATER_CLAUSE_WORDS)
                        || words >= LATER_MAX_WORDS
                    {
                        return Some(end);
                    }
                }
            } else {
                in_word = true;
            }
            prev = Some((i, ch));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tokens: &[&str]) -> Vec<String> {
        let mut c = Chunker::new();
        let mut out = Vec::new();
        for t in tokens {
            out.extend(c.push(t));
        }
        out.extend(c.flush());
        out
    }

    #[test]
    fn first_clause_is_cut_early_then_sentences() {
        let out = run(&[
            "Sure", ",", " I", " can", " help", ",", " of", " course", ".", " The", " answer",
            " is", " 3", ".", "5", " metres", ".", " Bye", "!",
        ]);
        assert_eq!(
            out,
            [
                "Sure, I can help,",
                " of course.",
                " The answer is 3.5 metres.",
                " Bye!"
            ]
        );
    }

    #[test]
    fn long_first_clause_is_cut_by_word_count() {
        let text = "one two three four five six seven eight nine ten eleven twelve";
        let tokens: Vec<String> = text
            .split(' ')
            .enumerate()
            .map(|(i, w)| {
                if i == 0 {
                    w.to_string()
                } else {
                    format!(" {w}")
                }
            })
            .collect();
        let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let out = run(&refs);
        assert_eq!(out[0], "one two three four five six seven eight nine ten");
        assert_eq!(out.concat(), text);
    }

    #[test]
    fn nothing_lost_and_no_empty_chunks() {
        let out = run(&["Hi", ".", " ", " ", "Yes", "."]);
        assert_eq!(
            out.concat().split_whitespace().collect::<Vec<_>>(),
            ["Hi.", "Yes."]
        );
        assert!(out.iter().all(|c| !c.trim().is_empty()));
    }
}
