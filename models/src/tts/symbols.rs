//! From misaki phonemes to each engine's symbol ids.
//!
//! Kokoro was trained on misaki's own symbols, so its vocabulary takes them as they are.
//! Piper voices were trained on espeak-ng IPA, so misaki's one-letter diphthongs are expanded
//! and espeak's habits restored: length marks on stressed tense vowels and r-coloured schwa.

use std::collections::HashMap;

/// misaki shorthand -> espeak-ng IPA.
fn espeak_symbol(c: char) -> Option<&'static str> {
    Some(match c {
        'A' => "eɪ",
        'I' => "aɪ",
        'O' => "oʊ",
        'W' => "aʊ",
        'Y' => "ɔɪ",
        'Q' => "əʊ",
        'ʤ' => "dʒ",
        'ʧ' => "tʃ",
        'ᵊ' => "ə",
        _ => return None,
    })
}

const VOWELS: &str = "AIOWYQaeiouæɑɒɔəɛɜɪʊʌᵊᵻɚ";

/// misaki phonemes rewritten the way espeak-ng writes American English.
pub fn misaki_to_espeak(ph: &str) -> String {
    let chars: Vec<char> = ph.chars().collect();
    let mut out = String::with_capacity(ph.len() + 8);
    let mut stressed = false; // a stress mark has been seen since the last vowel
    let mut k = 0;
    while k < chars.len() {
        let c = chars[k];
        let next = chars.get(k + 1).copied();
        let after = chars.get(k + 2).copied();
        match c {
            'ˈ' | 'ˌ' => {
                stressed = true;
                out.push(c);
            }
            // "ɜɹ" -> "ɜː" (world: wˈɜːld); unstressed "əɹ" not before a vowel -> "ɚ".
            'ɜ' if next == Some('ɹ') => {
                out.push_str("ɜː");
                k += 1;
                stressed = false;
            }
            'ə' if next == Some('ɹ') && !after.is_some_and(|a| VOWELS.contains(a)) => {
                out.push('ɚ');
                k += 1;
                stressed = false;
            }
            'i' | 'u' | 'ɑ' | 'ɔ' => {
                out.push(c);
                if stressed {
                    out.push('ː');
                }
                stressed = false;
            }
            c => {
                match espeak_symbol(c) {
                    Some(s) => out.push_str(s),
                    None => out.push(c),
                }
                if VOWELS.contains(c) {
                    stressed = false;
                }
            }
        }
        k += 1;
    }
    out
}

/// A symbol table read from a model's config.
#[derive(Debug, Clone)]
pub struct SymbolIds {
    ids: HashMap<char, i64>,
}

impl SymbolIds {
    pub fn new(ids: HashMap<char, i64>) -> Self {
        Self { ids }
    }

    pub fn get(&self, c: char) -> Option<i64> {
        self.ids.get(&c).copied()
    }

    /// Ids of every known symbol in `ph`; unknown ones are skipped (and counted).
    pub fn encode(&self, ph: &str) -> (Vec<i64>, usize) {
        let mut unknown = 0;
        let ids = ph
            .chars()
            .filter_map(|c| {
                let id = self.get(c);
                unknown += usize::from(id.is_none());
                id
            })
            .collect();
        (ids, unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::misaki_to_espeak as e;

    #[test]
    fn diphthongs_and_affricates_expand() {
        assert_eq!(e("həlˈO"), "həlˈoʊ");
        assert_eq!(e("ʧˈIld"), "tʃˈaɪld");
        assert_eq!(e("ʤˈʌʤ"), "dʒˈʌdʒ");
    }

    #[test]
    fn espeak_length_and_rhotic_vowels() {
        assert_eq!(e("sˈi"), "sˈiː");
        assert_eq!(e("hˈæpi"), "hˈæpi");
        assert_eq!(e("wˈɜɹld"), "wˈɜːld");
        assert_eq!(e("dˈɑktəɹ"), "dˈɑːktɚ");
        assert_eq!(e("fˈɑðəɹ, ɪz"), "fˈɑːðɚ, ɪz");
        assert_eq!(e("vˈɛɹi"), "vˈɛɹi");
    }
}
