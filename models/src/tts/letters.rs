//! Last-resort letter-to-sound rules for words no lexicon form covers: greedy longest match of
//! English spelling patterns, primary stress on the first vowel. Crude, but always says
//! something close instead of skipping the word.

/// Spelling patterns, longest first within each leading letter is not required: the matcher
/// tries lengths 4..1.
const RULES: &[(&str, &str)] = &[
    ("tion", "ʃən"),
    ("sion", "ʒən"),
    ("ough", "O"),
    ("eigh", "A"),
    ("igh", "I"),
    ("tch", "ʧ"),
    ("dge", "ʤ"),
    ("sch", "sk"),
    ("augh", "ɔ"),
    ("ture", "ʧəɹ"),
    ("ous", "əs"),
    ("ph", "f"),
    ("sh", "ʃ"),
    ("ch", "ʧ"),
    ("th", "θ"),
    ("wh", "w"),
    ("ck", "k"),
    ("ng", "ŋ"),
    ("qu", "kw"),
    ("gh", "ɡ"),
    ("kn", "n"),
    ("wr", "ɹ"),
    ("ee", "i"),
    ("ea", "i"),
    ("oo", "u"),
    ("ou", "W"),
    ("ow", "O"),
    ("oi", "Y"),
    ("oy", "Y"),
    ("ai", "A"),
    ("ay", "A"),
    ("au", "ɔ"),
    ("aw", "ɔ"),
    ("ie", "i"),
    ("ei", "A"),
    ("ey", "i"),
    ("oa", "O"),
    ("ue", "u"),
    ("ew", "u"),
    ("ar", "ɑɹ"),
    ("er", "əɹ"),
    ("ir", "ɜɹ"),
    ("ur", "ɜɹ"),
    ("or", "ɔɹ"),
    ("a", "æ"),
    ("b", "b"),
    ("c", "k"),
    ("d", "d"),
    ("e", "ɛ"),
    ("f", "f"),
    ("g", "ɡ"),
    ("h", "h"),
    ("i", "ɪ"),
    ("j", "ʤ"),
    ("k", "k"),
    ("l", "l"),
    ("m", "m"),
    ("n", "n"),
    ("o", "ɑ"),
    ("p", "p"),
    ("q", "k"),
    ("r", "ɹ"),
    ("s", "s"),
    ("t", "t"),
    ("u", "ʌ"),
    ("v", "v"),
    ("w", "w"),
    ("x", "ks"),
    ("y", "i"),
    ("z", "z"),
];

const VOWELS: &str = "AIOWYaeiouæɑɔəɛɜɪʊʌᵊ";

/// Phonemes for a lowercase ASCII word, or None if it has no letters we know.
pub fn letters_to_sound(word: &str) -> Option<String> {
    let w: Vec<char> = word
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if w.is_empty() {
        return None;
    }
    let mut out = String::new();
    let mut i = 0;
    while i < w.len() {
        // A silent final "e" after a consonant ("make", "note").
        if w[i] == 'e' && i == w.len() - 1 && i >= 2 {
            break;
        }
        // "c" and "g" soften before e, i, y.
        let soft_next = w.get(i + 1).is_some_and(|c| matches!(c, 'e' | 'i' | 'y'));
        if w[i] == 'c' && soft_next {
            out.push('s');
            i += 1;
            continue;
        }
        let mut matched = false;
        for len in (1..=4).rev() {
            if i + len > w.len() {
                continue;
            }
            let piece: String = w[i..i + len].iter().collect();
            if let Some((_, ph)) = RULES.iter().find(|(g, _)| *g == piece) {
                // A vowel before consonant + final e says its name ("make" -> mAk).
                let magic_e = len == 1
                    && i + 2 == w.len() - 1
                    && w[w.len() - 1] == 'e'
                    && !"aeiou".contains(w[i + 1]);
                let ph = match (magic_e, w[i]) {
                    (true, 'a') => "A",
                    (true, 'i') => "I",
                    (true, 'o') => "O",
                    (true, 'u') => "u",
                    (true, 'e') => "i",
                    // "y" after a consonant at the end sounds like "ee"; inside a word like "i".
                    (_, 'y') if i == w.len() - 1 && i > 0 => "i",
                    (_, 'y') if i == 0 => "j",
                    _ => ph,
                };
                out.push_str(ph);
                i += len;
                matched = true;
                break;
            }
        }
        if !matched {
            i += 1;
        }
    }
    Some(stress_first_vowel(&out))
}

fn stress_first_vowel(ph: &str) -> String {
    match ph.char_indices().find(|(_, c)| VOWELS.contains(*c)) {
        Some((i, _)) => format!("{}ˈ{}", &ph[..i], &ph[i..]),
        None => ph.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::letters_to_sound as lts;

    #[test]
    fn common_patterns() {
        assert_eq!(lts("make").as_deref(), Some("mˈAk"));
        assert_eq!(lts("nation").as_deref(), Some("nˈæʃən"));
        assert_eq!(lts("blorft").as_deref(), Some("blˈɔɹft"));
        assert_eq!(lts("city").as_deref(), Some("sˈɪti"));
        assert_eq!(lts("123"), None);
    }
}
