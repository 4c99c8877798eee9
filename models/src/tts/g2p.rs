//! Grapheme-to-phoneme in process: normalised text -> misaki phoneme string
//! ("həlˈO, wˈɜɹld."), words separated by spaces, clause punctuation kept.
//!
//! Order of attempts per word: the lexicon (as written, lower case, capitalised), the
//! possessive and inflection suffixes `-'s -s -es -ed -ing` on a lexicon stem, spelling out
//! short all-capital acronyms, a split into two lexicon words, and finally letter-to-sound rules.

use std::sync::Arc;

use super::letters::letters_to_sound;
use super::lexicon::Lexicon;

#[derive(Debug, Clone)]
pub struct G2p {
    lexicon: Arc<Lexicon>,
}

/// A word or a punctuation mark of the normalised text.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Word(&'a str),
    Punct(char),
}

impl G2p {
    pub fn new(lexicon: Arc<Lexicon>) -> Self {
        Self { lexicon }
    }

    /// Phonemes of already-normalised text.
    pub fn phonemize(&self, text: &str) -> String {
        let pieces = split(text);
        let mut out = String::new();
        for (i, piece) in pieces.iter().enumerate() {
            match piece {
                Piece::Word(w) => {
                    let next_word = pieces[i + 1..].iter().find_map(|p| match p {
                        Piece::Word(w) => Some(*w),
                        Piece::Punct(_) => None,
                    });
                    let ph = self.word(w, next_word);
                    if ph.is_empty() {
                        continue;
                    }
                    if !out.is_empty() && !out.ends_with(' ') {
                        out.push(' ');
                    }
                    out.push_str(&ph);
                }
                Piece::Punct(c) => {
                    let c = match c {
                        ';' | ':' => ',',
                        c => *c,
                    };
                    if !out.is_empty() && !out.ends_with([',', '.', '!', '?']) {
                        let trimmed = out.trim_end().len();
                        out.truncate(trimmed);
                        out.push(c);
                        out.push(' ');
                    }
                }
            }
        }
        out.trim_end().to_owned()
    }

    /// Phonemes of one word; `next` helps with "the" and "a".
    fn word(&self, word: &str, next: Option<&str>) -> String {
        let lower = word.to_lowercase();
        match lower.as_str() {
            // Function words the lexicon lists in their stressed citation form.
            "the" => {
                let before_vowel = next.is_some_and(|n| {
                    n.starts_with(|c: char| "aeiouAEIOU".contains(c))
                        || self.lookup(n).is_some_and(starts_with_vowel)
                });
                return if before_vowel { "ði" } else { "ðə" }.to_owned();
            }
            // The article, unstressed; a capital "A" alone at the end is the letter.
            "a" if word == "a" || next.is_some() => return "ɐ".to_owned(),
            _ => {}
        }
        if let Some(p) = self.lookup(word) {
            return p.to_owned();
        }
        if word.contains('-') {
            let parts: Vec<String> = word
                .split('-')
                .filter(|p| !p.is_empty())
                .map(|p| self.word(p, None))
                .collect();
            return parts.join(" ");
        }
        if let Some(p) = self.inflected(word) {
            return p;
        }
        if let Some(p) = self.acronym(word) {
            return p;
        }
        if let Some(p) = self.compound(&lower) {
            return p;
        }
        letters_to_sound(&lower).unwrap_or_default()
    }

    fn lookup(&self, word: &str) -> Option<&str> {
        let lex = &self.lexicon;
        lex.get(word)
            .or_else(|| lex.get(&word.to_lowercase()))
            .or_else(|| lex.get(&capitalise(word)))
    }

    /// -'s, -s, -es, -ed, -ing on a lexicon stem, with the suffix's sound chosen by the stem's end.
    fn inflected(&self, word: &str) -> Option<String> {
        let lower = word.to_lowercase();
        let w = lower.trim_end_matches('\'');
        if let Some(stem) = w.strip_suffix("'s").or_else(|| w.strip_suffix("s"))
            && stem.len() >= 2
        {
            let candidates = [
                stem.to_owned(),
                stem.strip_suffix('e').unwrap_or("").to_owned(),
            ];
            for (k, s) in candidates.iter().enumerate() {
                if s.is_empty() {
                    continue;
                }
                if let Some(p) = self.lookup(s) {
                    // "boxes": the "e" was part of the suffix.
                    let es = k == 1;
                    return Some(format!("{p}{}", plural_suffix(p, es)));
                }
            }
        }
        if let Some(stem) = w.strip_suffix("ed")
            && stem.len() >= 2
        {
            for s in stem_candidates(stem) {
                if let Some(p) = self.lookup(&s) {
                    return Some(format!("{p}{}", past_suffix(p)));
                }
            }
        }
        if let Some(stem) = w.strip_suffix("ing")
            && stem.len() >= 2
        {
            for s in stem_candidates(stem) {
                if let Some(p) = self.lookup(&s) {
                    return Some(format!("{p}ɪŋ"));
                }
            }
        }
        None
    }

    /// "NASA" is in the lexicon; "XQZ" is not, so it is spelled letter by letter.
    fn acronym(&self, word: &str) -> Option<String> {
        let len = word.chars().count();
        if !(2..=6).contains(&len) || !word.chars().all(|c| c.is_ascii_uppercase()) {
            return None;
        }
        let letters: Option<Vec<String>> = word
            .chars()
            .map(|c| self.lexicon.get(&c.to_string()).map(str::to_owned))
            .collect();
        letters.map(|l| l.join(" "))
    }

    /// Two lexicon words written as one ("bookstand", "catfish").
    fn compound(&self, lower: &str) -> Option<String> {
        if lower.len() < 6 || !lower.is_ascii() {
            return None;
        }
        (3..=lower.len() - 3).find_map(|i| {
            let (a, b) = lower.split_at(i);
            let pa = self.lexicon.get(a)?;
            let pb = self.lexicon.get(b)?;
            Some(format!("{pa}{}", pb.replace('ˈ', "ˌ")))
        })
    }
}

/// "run" from "runn", "make" from "mak", and the stem itself.
fn stem_candidates(stem: &str) -> Vec<String> {
    let mut out = vec![stem.to_owned(), format!("{stem}e")];
    let b = stem.as_bytes();
    if b.len() >= 3 && b[b.len() - 1] == b[b.len() - 2] {
        out.push(stem[..stem.len() - 1].to_owned());
    }
    if let Some(s) = stem.strip_suffix('i') {
        out.push(format!("{s}y"));
    }
    out
}

fn last_phone(p: &str) -> Option<char> {
    p.chars().rev().find(|c| !matches!(c, 'ˈ' | 'ˌ' | 'ː'))
}

fn starts_with_vowel(p: &str) -> bool {
    p.chars()
        .find(|c| !matches!(c, 'ˈ' | 'ˌ'))
        .is_some_and(|c| "AIOWYaeiouæɑɔəɛɜɪʊʌᵊ".contains(c))
}

fn plural_suffix(p: &str, es: bool) -> &'static str {
    match last_phone(p) {
        Some('s' | 'z' | 'ʃ' | 'ʒ' | 'ʧ' | 'ʤ') => "ᵻz",
        _ if es => "ᵻz",
        Some('p' | 't' | 'k' | 'f' | 'θ') => "s",
        _ => "z",
    }
}

fn past_suffix(p: &str) -> &'static str {
    match last_phone(p) {
        Some('t' | 'd') => "ᵻd",
        Some('p' | 'k' | 'f' | 'θ' | 's' | 'ʃ' | 'ʧ') => "t",
        _ => "d",
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

fn split(text: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut start: Option<usize> = None;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (k, &(i, c)) in chars.iter().enumerate() {
        let next_alpha = chars.get(k + 1).is_some_and(|(_, n)| n.is_alphanumeric());
        let in_word =
            c.is_alphanumeric() || (matches!(c, '\'' | '’' | '-') && start.is_some() && next_alpha);
        if in_word {
            start.get_or_insert(i);
            continue;
        }
        if let Some(s) = start.take() {
            pieces.push(Piece::Word(&text[s..i]));
        }
        if matches!(c, ',' | '.' | '!' | '?' | ';' | ':') {
            pieces.push(Piece::Punct(c));
        }
    }
    if let Some(s) = start {
        pieces.push(Piece::Word(&text[s..]));
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g2p(entries: &[(&str, &str)]) -> G2p {
        let mut lex = Lexicon::default();
        let json = serde_json::to_string(
            &entries
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .expect("a map of strings serialises");
        lex.add_json_for_tests(&json);
        G2p::new(Arc::new(lex))
    }

    #[test]
    fn lexicon_words_and_punctuation() {
        let g = g2p(&[("hello", "həlˈO"), ("world", "wˈɜɹld")]);
        assert_eq!(g.phonemize("Hello, world!"), "həlˈO, wˈɜɹld!");
    }

    #[test]
    fn inflections_from_stems() {
        let g = g2p(&[
            ("cat", "kˈæt"),
            ("box", "bˈɑks"),
            ("dog", "dˈɔɡ"),
            ("want", "wˈɑnt"),
            ("run", "ɹˈʌn"),
            ("make", "mˈAk"),
        ]);
        assert_eq!(g.phonemize("cats dogs boxes"), "kˈæts dˈɔɡz bˈɑksᵻz");
        assert_eq!(
            g.phonemize("wanted running making"),
            "wˈɑntᵻd ɹˈʌnɪŋ mˈAkɪŋ"
        );
        assert_eq!(g.phonemize("dog's"), "dˈɔɡz");
    }

    #[test]
    fn the_before_vowels_and_acronyms() {
        let g = g2p(&[
            ("apple", "ˈæpᵊl"),
            ("car", "kˈɑɹ"),
            ("X", "ˈɛks"),
            ("Q", "kjˈu"),
        ]);
        assert_eq!(g.phonemize("the apple the car"), "ði ˈæpᵊl ðə kˈɑɹ");
        assert_eq!(g.phonemize("XQ"), "ˈɛks kjˈu");
    }

    #[test]
    fn unknown_words_still_speak() {
        let g = g2p(&[("book", "bˈʊk"), ("stand", "stˈænd")]);
        assert_eq!(g.phonemize("bookstand"), "bˈʊkstˌænd");
        assert_eq!(g.phonemize("zint"), "zˈɪnt");
    }
}
