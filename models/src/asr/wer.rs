//! Word error rate with a small English normaliser, for accuracy tests and benchmarks.
//!
//! Normalisation: lower case, punctuation removed (apostrophes inside words kept), hyphens split
//! words, a few honorific abbreviations spelled out ("mr" -> "mister") and whole numbers spelled
//! out in words ("42" -> "forty two"), so "Mr. Smith's 2 dogs" and "mister smith's two dogs"
//! compare equal.

/// Normalised words of `text`.
pub fn normalize(text: &str) -> Vec<String> {
    let lowered = text.to_lowercase();
    let mut cleaned = String::with_capacity(lowered.len());
    let chars: Vec<char> = lowered.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let keep_apostrophe = (c == '\'' || c == '’')
            && i > 0
            && chars[i - 1].is_alphanumeric()
            && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
        let digit_group_comma = c == ','
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if digit_group_comma {
            continue;
        }
        if c.is_alphanumeric() {
            cleaned.push(c);
        } else if keep_apostrophe {
            cleaned.push('\'');
        } else {
            cleaned.push(' ');
        }
    }
    let mut words = Vec::new();
    for word in cleaned.split_whitespace() {
        match word {
            "mr" => words.push("mister".to_owned()),
            "mrs" => words.push("missus".to_owned()),
            "dr" => words.push("doctor".to_owned()),
            _ => match word.parse::<u64>() {
                Ok(n) if word.len() <= 12 => words.extend(number_words(n)),
                _ => words.push(word.to_owned()),
            },
        }
    }
    words
}

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// `n` spelled out as separate words ("one hundred twenty three").
fn number_words(n: u64) -> Vec<String> {
    let mut out = Vec::new();
    if n == 0 {
        out.push(ONES[0].to_owned());
        return out;
    }
    let scales = [
        (1_000_000_000, "billion"),
        (1_000_000, "million"),
        (1_000, "thousand"),
    ];
    let mut rest = n;
    for (scale, name) in scales {
        if rest >= scale {
            out.extend(below_thousand(rest / scale));
            out.push(name.to_owned());
            rest %= scale;
        }
    }
    if rest > 0 {
        out.extend(below_thousand(rest));
    }
    out
}

fn below_thousand(n: u64) -> Vec<String> {
    let mut out = Vec::new();
    let (hundreds, rest) = (n / 100, n % 100);
    if hundreds > 0 {
        out.extend(below_thousand(hundreds));
        out.push("hundred".to_owned());
    }
    if rest >= 20 {
        out.push(TENS[(rest / 10) as usize].to_owned());
        if rest % 10 > 0 {
            out.push(ONES[(rest % 10) as usize].to_owned());
        }
    } else if rest > 0 {
        out.push(ONES[rest as usize].to_owned());
    }
    out
}

/// Word-level edit distance between two word sequences.
pub fn word_errors(reference: &[String], hypothesis: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=hypothesis.len()).collect();
    let mut cur = vec![0; hypothesis.len() + 1];
    for (i, r) in reference.iter().enumerate() {
        cur[0] = i + 1;
        for (j, h) in hypothesis.iter().enumerate() {
            let substitute = prev[j] + usize::from(r != h);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[hypothesis.len()]
}

/// Accumulates errors over many utterances (corpus WER = total errors / total reference words).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct WerTally {
    pub errors: usize,
    pub reference_words: usize,
}

impl WerTally {
    /// Adds one utterance and returns its own WER.
    pub fn add(&mut self, reference: &str, hypothesis: &str) -> f64 {
        let r = normalize(reference);
        let h = normalize(hypothesis);
        let errors = word_errors(&r, &h);
        self.errors += errors;
        self.reference_words += r.len();
        ratio(errors, r.len())
    }

    pub fn wer(&self) -> f64 {
        ratio(self.errors, self.reference_words)
    }
}

fn ratio(errors: usize, words: usize) -> f64 {
    if words == 0 {
        if errors == 0 { 0.0 } else { 1.0 }
    } else {
        errors as f64 / words as f64
    }
}

/// WER of one hypothesis against one reference, both normalised.
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    WerTally::default().add(reference, hypothesis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_punctuation_abbreviations_and_numbers() {
        assert_eq!(
            normalize("Mr. Smith's 2 dogs, well-fed!"),
            ["mister", "smith's", "two", "dogs", "well", "fed"]
        );
        assert_eq!(
            normalize("1984 and 7,000"),
            [
                "one", "thousand", "nine", "hundred", "eighty", "four", "and", "seven", "thousand"
            ]
        );
        assert_eq!(
            normalize("21 100 1001"),
            ["twenty", "one", "one", "hundred", "one", "thousand", "one"]
        );
    }

    #[test]
    fn counts_substitutions_insertions_deletions() {
        let w = |s: &str| normalize(s);
        assert_eq!(word_errors(&w("a b c"), &w("a b c")), 0);
        assert_eq!(word_errors(&w("a b c"), &w("a x c")), 1);
        assert_eq!(word_errors(&w("a b c"), &w("a b")), 1);
        assert_eq!(word_errors(&w("a b c"), &w("a b c d e")), 2);
        assert_eq!(word_errors(&w("a b c"), &w("")), 3);
        assert_eq!(word_errors(&w(""), &w("x")), 1);
    }

    #[test]
    fn wer_is_errors_over_reference_words() {
        assert_eq!(wer("Hello, World.", "hello world"), 0.0);
        assert!((wer("the cat sat down", "the cat sat") - 0.25).abs() < 1e-9);
        let mut tally = WerTally::default();
        tally.add("a b c d", "a b c d");
        tally.add("e f", "e g");
        assert!((tally.wer() - 1.0 / 6.0).abs() < 1e-9);
        assert_eq!(wer("", ""), 0.0);
    }
}
