//! The pronouncing lexicon: misaki's American English word lists (Apache-2.0), word -> phonemes
//! in misaki's symbol set (IPA plus one-letter diphthongs `A I O W Y` and `ʤ ʧ ᵊ ᵻ`).

use std::collections::HashMap;
use std::path::Path;

use crate::store::{ModelStore, StoreError};

pub const LEXICON_MODEL: &str = "misaki-lexicon";
/// Hand-checked entries; win over silver.
pub const GOLD_FILE: &str = "us_gold.json";
/// Larger, machine-made list; used where gold has no entry.
pub const SILVER_FILE: &str = "us_silver.json";

#[derive(Debug, thiserror::Error)]
pub enum LexiconError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read lexicon {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("lexicon {path} is not a JSON object of word -> phonemes: {message}")]
    Format { path: String, message: String },
}

#[derive(Debug, Default)]
pub struct Lexicon {
    words: HashMap<String, String>,
}

impl Lexicon {
    /// Gold and silver lists from the store.
    pub fn load(store: &ModelStore) -> Result<Self, LexiconError> {
        let gold = store.file(LEXICON_MODEL, GOLD_FILE)?;
        let silver = store.file(LEXICON_MODEL, SILVER_FILE)?;
        let mut lexicon = Lexicon::default();
        lexicon.add_file(&silver)?;
        lexicon.add_file(&gold)?; // gold overrides silver
        Ok(lexicon)
    }

    /// Adds entries from one misaki JSON file. Values are a phoneme string, or an object of
    /// part-of-speech -> phonemes of which we take `DEFAULT` (we do no tagging).
    pub fn add_file(&mut self, path: &Path) -> Result<(), LexiconError> {
        let text = std::fs::read_to_string(path).map_err(|source| LexiconError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.add_json(&text)
            .map_err(|message| LexiconError::Format {
                path: path.display().to_string(),
                message,
            })
    }

    fn add_json(&mut self, text: &str) -> Result<(), String> {
        let map: HashMap<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| e.to_string())?;
        for (word, value) in map {
            let phonemes = match value {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Object(pos) => pos
                    .get("DEFAULT")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                _ => None,
            };
            if let Some(p) = phonemes {
                self.words.insert(word, p);
            }
        }
        Ok(())
    }

    pub fn get(&self, word: &str) -> Option<&str> {
        self.words.get(word).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

#[cfg(test)]
impl Lexicon {
    pub(crate) fn add_json_for_tests(&mut self, json: &str) {
        self.add_json(json).expect("test lexicon is valid JSON");
    }
}
