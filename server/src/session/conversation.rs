//! The conversation of one session: items in order, with the audio timing of what the assistant
//! said so that a truncate keeps only the words actually played.

use super::events::{Content, Item, ItemKind, ItemStatus, Role};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConversationError {
    #[error("item '{0}' does not exist")]
    NotFound(String),
    #[error("item id '{0}' already exists")]
    DuplicateId(String),
    #[error("item '{item_id}' has no audio content at index {content_index}")]
    NotAudio { item_id: String, content_index: u32 },
    #[error("audio_end_ms {audio_end_ms} is past the {audio_ms} ms of audio item '{item_id}' has")]
    PastEnd {
        item_id: String,
        audio_end_ms: u32,
        audio_ms: u32,
    },
    #[error("conversation is full ({0} items)")]
    Full(usize),
    #[error(
        "item of {bytes} bytes of text is larger than a whole conversation may hold ({limit} bytes)"
    )]
    ItemTooLarge { bytes: usize, limit: usize },
}

/// Bytes of text an item puts in the LLM's prompt (its contents, transcripts, call arguments).
pub fn item_text_bytes(item: &Item) -> usize {
    match &item.kind {
        ItemKind::Message { content, .. } => content
            .iter()
            .map(|c| match c {
                Content::InputText { text } | Content::OutputText { text } => text.len(),
                Content::InputAudio { transcript, .. } => {
                    transcript.as_ref().map_or(0, String::len)
                }
                Content::OutputAudio { transcript } => transcript.len(),
            })
            .sum(),
        ItemKind::FunctionCall {
            name, arguments, ..
        } => name.len() + arguments.len(),
        ItemKind::FunctionCallOutput { output, .. } => output.len(),
    }
}

/// One stretch of assistant audio and the text it speaks, in ms from the item's audio start.
#[derive(Debug, Clone, PartialEq)]
struct Spoken {
    start_ms: f64,
    end_ms: f64,
    text: String,
}

#[derive(Debug)]
struct Entry {
    item: Item,
    /// For assistant audio items: chunk timings in the order they were produced.
    spoken: Vec<Spoken>,
    /// For user audio items: the speaker label diarization gave the turn (`S1`, `S2`, …).
    speaker: Option<String>,
}

/// A chat message for the LLM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRole {
    System,
    User,
    Assistant,
    /// A function call result.
    Tool,
}

/// Items of one session, in conversation order, with a bound on how many are kept.
#[derive(Debug)]
pub struct Conversation {
    entries: Vec<Entry>,
    max_items: usize,
    /// Most text the items may hold together (see [`item_text_bytes`]): what the LLM is
    /// given each turn stays inside its context, and is bounded before it is tokenized.
    max_text_bytes: usize,
}

impl Conversation {
    pub fn new(max_items: usize, max_text_bytes: usize) -> Self {
        Conversation {
            entries: Vec::new(),
            max_items,
            max_text_bytes,
        }
    }

    fn text_bytes(&self) -> usize {
        self.entries.iter().map(|e| item_text_bytes(&e.item)).sum()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.entries.iter().map(|e| &e.item)
    }

    pub fn get(&self, id: &str) -> Option<&Item> {
        self.position(id).map(|i| &self.entries[i].item)
    }

    pub fn last_id(&self) -> Option<&str> {
        self.entries.last().map(|e| e.item.id.as_str())
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.item.id == id)
    }

    /// Inserts after `previous_item_id` (`None`: at the end; `Some("root")`: at the start).
    /// Returns the id of the item now before it.
    pub fn insert(
        &mut self,
        item: Item,
        previous_item_id: Option<&str>,
    ) -> Result<Option<String>, ConversationError> {
        if self.position(&item.id).is_some() {
            return Err(ConversationError::DuplicateId(item.id));
        }
        if self.entries.len() >= self.max_items {
            return Err(ConversationError::Full(self.max_items));
        }
        let bytes = item_text_bytes(&item);
        if bytes > self.max_text_bytes {
            return Err(ConversationError::ItemTooLarge {
                bytes,
                limit: self.max_text_bytes,
            });
        }
        let at = match previous_item_id {
            None => self.entries.len(),
            Some("root") => 0,
            Some(prev) => {
                self.position(prev)
                    .ok_or_else(|| ConversationError::NotFound(prev.to_string()))?
                    + 1
            }
        };
        let before = at.checked_sub(1).map(|i| self.entries[i].item.id.clone());
        self.entries.insert(
            at,
            Entry {
                item,
                spoken: Vec::new(),
                speaker: None,
            },
        );
        Ok(before)
    }

    /// Makes room for `incoming` if it would not fit (the item limit, or the text budget):
    /// removes the oldest items other than `keep` (an item the caller is about to insert
    /// after) until, with `incoming`, both are at most three quarters of their limits, and
    /// returns them oldest first. Three quarters, not just enough to fit: the prompt's start
    /// changes with each eviction and costs the LLM a new prefill, so it happens once in a
    /// while, not every turn. An item larger than the whole budget evicts nothing (`insert`
    /// refuses it).
    pub fn make_room(&mut self, incoming: &Item, keep: Option<&str>) -> Vec<Item> {
        let incoming_bytes = item_text_bytes(incoming);
        let mut bytes = self.text_bytes();
        let full =
            self.entries.len() >= self.max_items || bytes + incoming_bytes > self.max_text_bytes;
        let mut evicted = Vec::new();
        if !full || incoming_bytes > self.max_text_bytes {
            return evicted;
        }
        while (self.entries.len() + 1) * 4 > self.max_items * 3
            || (bytes + incoming_bytes) * 4 > self.max_text_bytes * 3
        {
            let Some(at) = self
                .entries
                .iter()
                .position(|e| Some(e.item.id.as_str()) != keep)
            else {
                break;
            };
            let item = self.entries.remove(at).item;
            bytes -= item_text_bytes(&item);
            evicted.push(item);
        }
        evicted
    }

    pub fn delete(&mut self, id: &str) -> Result<Item, ConversationError> {
        let at = self
            .position(id)
            .ok_or_else(|| ConversationError::NotFound(id.to_string()))?;
        Ok(self.entries.remove(at).item)
    }

    fn entry_mut(&mut self, id: &str) -> Result<&mut Entry, ConversationError> {
        let at = self
            .position(id)
            .ok_or_else(|| ConversationError::NotFound(id.to_string()))?;
        Ok(&mut self.entries[at])
    }

    /// Sets the transcript of a user audio item (ASR final).
    pub fn set_user_transcript(
        &mut self,
        id: &str,
        transcript: &str,
    ) -> Result<(), ConversationError> {
        let entry = self.entry_mut(id)?;
        if let ItemKind::Message { content, .. } = &mut entry.item.kind {
            for c in content.iter_mut() {
                if let Content::InputAudio { transcript: t, .. } = c {
                    *t = Some(transcript.to_string());
                    return Ok(());
                }
            }
        }
        Err(ConversationError::NotAudio {
            item_id: id.to_string(),
            content_index: 0,
        })
    }

    /// The transcript of a user audio item, once the recogniser gave it.
    pub fn user_transcript(&self, id: &str) -> Option<&str> {
        let entry = &self.entries[self.position(id)?];
        match &entry.item.kind {
            ItemKind::Message { content, .. } => content.iter().find_map(|c| match c {
                Content::InputAudio { transcript, .. } => transcript.as_deref(),
                _ => None,
            }),
            _ => None,
        }
    }

    /// Records which speaker said a user item (diarization label `S1`, `S2`, …).
    pub fn set_user_speaker(&mut self, id: &str, label: &str) -> Result<(), ConversationError> {
        self.entry_mut(id)?.speaker = Some(label.to_string());
        Ok(())
    }

    /// The speaker label of an item, if diarization gave it one.
    #[cfg(test)]
    pub fn speaker(&self, id: &str) -> Option<&str> {
        self.position(id)
            .and_then(|i| self.entries[i].speaker.as_deref())
    }

    /// Whether more than one speaker label is on the conversation's items.
    pub fn several_speakers(&self) -> bool {
        let mut labels = self.entries.iter().filter_map(|e| e.speaker.as_deref());
        let first = labels.next();
        labels.any(|l| Some(l) != first)
    }

    /// Appends text to an assistant item's text or audio transcript (content 0).
    pub fn append_assistant_text(
        &mut self,
        id: &str,
        delta: &str,
    ) -> Result<(), ConversationError> {
        let entry = self.entry_mut(id)?;
        match &mut entry.item.kind {
            ItemKind::Message { content, .. } => match content.first_mut() {
                Some(Content::OutputText { text }) => text.push_str(delta),
                Some(Content::OutputAudio { transcript }) => transcript.push_str(delta),
                _ => {
                    return Err(ConversationError::NotAudio {
                        item_id: id.into(),
                        content_index: 0,
                    });
                }
            },
            _ => {
                return Err(ConversationError::NotAudio {
                    item_id: id.into(),
                    content_index: 0,
                });
            }
        }
        Ok(())
    }

    /// Records that `duration_ms` more audio of an assistant audio item speaks `text`, and
    /// appends `text` to its transcript. Chunks arrive in playback order.
    pub fn append_assistant_audio(
        &mut self,
        id: &str,
        text: &str,
        duration_ms: f64,
    ) -> Result<(), ConversationError> {
        self.append_assistant_text(id, text)?;
        let entry = self.entry_mut(id)?;
        let start_ms = entry.spoken.last().map_or(0.0, |s| s.end_ms);
        entry.spoken.push(Spoken {
            start_ms,
            end_ms: start_ms + duration_ms,
            text: text.to_string(),
        });
        Ok(())
    }

    /// Milliseconds of audio recorded for an assistant item.
    pub fn audio_ms(&self, id: &str) -> Option<f64> {
        let at = self.position(id)?;
        Some(self.entries[at].spoken.last().map_or(0.0, |s| s.end_ms))
    }

    pub fn set_status(&mut self, id: &str, status: ItemStatus) -> Result<(), ConversationError> {
        self.entry_mut(id)?.item.status = status;
        Ok(())
    }

    /// Cuts an assistant audio item to what was heard by `audio_end_ms`: the transcript keeps
    /// the text of whole chunks played, plus the words of a partly played chunk in proportion
    /// to the time played (TTS chunks are a clause or so, so the error is a word or two).
    pub fn truncate(
        &mut self,
        id: &str,
        content_index: u32,
        audio_end_ms: u32,
    ) -> Result<(), ConversationError> {
        let entry = self.entry_mut(id)?;
        let not_audio = || ConversationError::NotAudio {
            item_id: id.to_string(),
            content_index,
        };
        let ItemKind::Message {
            role: Role::Assistant,
            content,
        } = &mut entry.item.kind
        else {
            return Err(not_audio());
        };
        let Some(Content::OutputAudio { transcript }) = content.get_mut(content_index as usize)
        else {
            return Err(not_audio());
        };
        let total = entry.spoken.last().map_or(0.0, |s| s.end_ms);
        let end = f64::from(audio_end_ms);
        if end > total + 1.0 {
            return Err(ConversationError::PastEnd {
                item_id: id.to_string(),
                audio_end_ms,
                audio_ms: total.round() as u32,
            });
        }
        let mut kept = String::new();
        let mut spans = Vec::new();
        for s in &entry.spoken {
            if s.end_ms <= end {
                kept.push_str(&s.text);
                spans.push(s.clone());
                continue;
            }
            if s.start_ms < end {
                let fraction = (end - s.start_ms) / (s.end_ms - s.start_ms);
                let part = words_prefix(&s.text, fraction);
                kept.push_str(&part);
                spans.push(Spoken {
                    start_ms: s.start_ms,
                    end_ms: end,
                    text: part,
                });
            }
            break;
        }
        *transcript = kept;
        entry.spoken = spans;
        entry.item.status = ItemStatus::Incomplete;
        Ok(())
    }

    /// Renders the conversation for the LLM: system instructions first, then one message per
    /// item that carries text (audio without a transcript is skipped).
    pub fn to_chat(&self, instructions: &str) -> Vec<ChatMessage> {
        self.to_chat_before(instructions, None)
    }

    /// [`Self::to_chat`] of the items before `stop_at` (all of them when it is `None`).
    pub fn to_chat_before(&self, instructions: &str, stop_at: Option<&str>) -> Vec<ChatMessage> {
        let mut out = Vec::with_capacity(self.entries.len() + 1);
        if !instructions.is_empty() {
            out.push(ChatMessage {
                role: ChatRole::System,
                content: instructions.to_string(),
            });
        }
        // Once a second voice has been heard, user turns say who spoke ("Speaker 2: …"), so
        // instructions can refer to speakers; a lone caller's messages stay unprefixed.
        let prefix_speakers = self.several_speakers();
        for e in self
            .entries
            .iter()
            .take_while(|e| Some(e.item.id.as_str()) != stop_at)
        {
            match &e.item.kind {
                ItemKind::Message { role, content } => {
                    let text: Vec<&str> = content
                        .iter()
                        .filter_map(|c| match c {
                            Content::InputText { text } | Content::OutputText { text } => Some(text.as_str()),
                            Content::InputAudio { transcript, .. } => transcript.as_deref(),
                            Content::OutputAudio { transcript } => Some(transcript.as_str()),
                        })
                        .filter(|t| !t.trim().is_empty())
                        .collect();
                    if text.is_empty() {
                        continue;
                    }
                    let role = match role {
                        Role::User => ChatRole::User,
                        Role::Assistant => ChatRole::Assistant,
                        Role::System => ChatRole::System,
                    };
                    let mut content = text.join(" ");
                    if prefix_speakers
                        && role == ChatRole::User
                        && let Some(label) = &e.speaker
                    {
                        content = format!("{}: {content}", speaker_name(label));
                    }
                    out.push(ChatMessage { role, content });
                }
                ItemKind::FunctionCall { call_id, name, arguments } => out.push(ChatMessage {
                    role: ChatRole::Assistant,
                    content: format!(
                        "{{\"type\":\"function_call\",\"call_id\":{},\"name\":{},\"arguments\":{}}}",
                        serde_json::Value::String(call_id.clone()),
                        serde_json::Value::String(name.clone()),
                        serde_json::Value::String(arguments.clone())
                    ),
                }),
                ItemKind::FunctionCallOutput { output, .. } => {
                    out.push(ChatMessage { role: ChatRole::Tool, content: output.clone() })
                }
            }
        }
        out
    }
}

/// `S2` -> `Speaker 2` (other labels are used as they are).
fn speaker_name(label: &str) -> String {
    match label.strip_prefix('S') {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => format!("Speaker {n}"),
        _ => label.to_string(),
    }
}

/// The leading whole words of `text` covering `fraction` of its characters (keeps the text's
/// own leading whitespace so concatenated chunks read naturally).
fn words_prefix(text: &str, fraction: f64) -> String {
    let budget = (text.chars().count() as f64 * fraction.clamp(0.0, 1.0)).floor() as usize;
    let mut end_byte = 0;
    let mut seen_word = false;
    for (chars, (byte, ch)) in text.char_indices().enumerate() {
        if ch.is_whitespace() {
            if seen_word {
                if chars <= budget {
                    end_byte = byte;
                } else {
                    break;
                }
            }
        } else {
            seen_word = true;
        }
    }
    if text.chars().count() <= budget {
        return text.to_string();
    }
    text[..end_byte].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_item(id: &str, role: Role, text: &str) -> Item {
        let content = match role {
            Role::Assistant => vec![Content::OutputText { text: text.into() }],
            _ => vec![Content::InputText { text: text.into() }],
        };
        Item {
            id: id.into(),
            status: ItemStatus::Completed,
            kind: ItemKind::Message { role, content },
        }
    }

    fn audio_reply(id: &str) -> Item {
        Item {
            id: id.into(),
            status: ItemStatus::InProgress,
            kind: ItemKind::Message {
                role: Role::Assistant,
                content: vec![Content::OutputAudio {
                    transcript: String::new(),
                }],
            },
        }
    }

    #[test]
    fn insert_keeps_order_and_reports_previous() {
        let mut c = Conversation::new(10, 1 << 20);
        assert_eq!(
            c.insert(text_item("a", Role::User, "one"), None).unwrap(),
            None
        );
        assert_eq!(
            c.insert(text_item("c", Role::User, "three"), None).unwrap(),
            Some("a".into())
        );
        assert_eq!(
            c.insert(text_item("b", Role::User, "two"), Some("a"))
                .unwrap(),
            Some("a".into())
        );
        assert_eq!(
            c.insert(text_item("z", Role::User, "zero"), Some("root"))
                .unwrap(),
            None
        );
        let ids: Vec<&str> = c.items().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["z", "a", "b", "c"]);
        assert_eq!(
            c.insert(text_item("a", Role::User, "dup"), None),
            Err(ConversationError::DuplicateId("a".into()))
        );
        assert_eq!(
            c.insert(text_item("q", Role::User, "x"), Some("nope")),
            Err(ConversationError::NotFound("nope".into()))
        );
        c.delete("b").unwrap();
        assert_eq!(c.len(), 3);
        assert!(c.delete("b").is_err());
    }

    #[test]
    fn bounded_item_count() {
        let mut c = Conversation::new(2, 1 << 20);
        c.insert(text_item("a", Role::User, "1"), None).unwrap();
        c.insert(text_item("b", Role::User, "2"), None).unwrap();
        assert_eq!(
            c.insert(text_item("c", Role::User, "3"), None),
            Err(ConversationError::Full(2))
        );
    }

    #[test]
    fn truncate_keeps_only_what_was_played() {
        let mut c = Conversation::new(10, 1 << 20);
        c.insert(audio_reply("r"), None).unwrap();
        c.append_assistant_audio("r", "Hello there,", 1000.0)
            .unwrap();
        c.append_assistant_audio("r", " how are you doing today?", 2000.0)
            .unwrap();
        c.append_assistant_audio("r", " I am fine.", 1000.0)
            .unwrap();
        assert_eq!(c.audio_ms("r"), Some(4000.0));
        // Half way through the second chunk: about half its characters, whole words only.
        c.truncate("r", 0, 2000).unwrap();
        let item = c.get("r").unwrap();
        let ItemKind::Message { content, .. } = &item.kind else {
            panic!("message")
        };
        assert_eq!(
            content[0],
            Content::OutputAudio {
                transcript: "Hello there, how are you".into()
            }
        );
        assert_eq!(item.status, ItemStatus::Incomplete);
        assert_eq!(c.audio_ms("r"), Some(2000.0));
        // Truncating again earlier cuts further; at a chunk boundary keeps whole chunks.
        c.truncate("r", 0, 1000).unwrap();
        assert_eq!(
            c.to_chat(""),
            vec![ChatMessage {
                role: ChatRole::Assistant,
                content: "Hello there,".into()
            }]
        );
        c.truncate("r", 0, 0).unwrap();
        assert!(c.to_chat("").is_empty());
    }

    #[test]
    fn truncate_errors() {
        let mut c = Conversation::new(10, 1 << 20);
        c.insert(audio_reply("r"), None).unwrap();
        c.insert(text_item("u", Role::User, "hi"), None).unwrap();
        c.append_assistant_audio("r", "Hi.", 500.0).unwrap();
        assert!(matches!(
            c.truncate("r", 0, 900),
            Err(ConversationError::PastEnd { .. })
        ));
        assert!(matches!(
            c.truncate("r", 1, 100),
            Err(ConversationError::NotAudio { .. })
        ));
        assert!(matches!(
            c.truncate("u", 0, 100),
            Err(ConversationError::NotAudio { .. })
        ));
        assert!(matches!(
            c.truncate("x", 0, 100),
            Err(ConversationError::NotFound(_))
        ));
    }

    #[test]
    fn renders_chat_messages() {
        let mut c = Conversation::new(10, 1 << 20);
        c.insert(text_item("u1", Role::User, "What's the weather?"), None)
            .unwrap();
        let audio_user = Item {
            id: "u0".into(),
            status: ItemStatus::Completed,
            kind: ItemKind::Message {
                role: Role::User,
                content: vec![Content::InputAudio {
                    audio: None,
                    transcript: None,
                }],
            },
        };
        c.insert(audio_user, None).unwrap();
        c.insert(
            Item {
                id: "f".into(),
                status: ItemStatus::Completed,
                kind: ItemKind::FunctionCall {
                    call_id: "call_1".into(),
                    name: "weather".into(),
                    arguments: "{\"city\":\"Oslo\"}".into(),
                },
            },
            None,
        )
        .unwrap();
        c.insert(
            Item {
                id: "fo".into(),
                status: ItemStatus::Completed,
                kind: ItemKind::FunctionCallOutput {
                    call_id: "call_1".into(),
                    output: "rain".into(),
                },
            },
            None,
        )
        .unwrap();
        let chat = c.to_chat("Be brief.");
        assert_eq!(chat.len(), 4, "untranscribed audio is skipped: {chat:?}");
        assert_eq!(
            chat[0],
            ChatMessage {
                role: ChatRole::System,
                content: "Be brief.".into()
            }
        );
        assert_eq!(chat[1].role, ChatRole::User);
        assert!(chat[2].content.contains("\"name\":\"weather\""));
        assert_eq!(
            chat[3],
            ChatMessage {
                role: ChatRole::Tool,
                content: "rain".into()
            }
        );
        c.set_user_transcript("u0", "hello").unwrap();
        assert_eq!(c.to_chat("").len(), 4);
    }

    #[test]
    fn user_turns_name_their_speaker_once_a_second_one_is_heard() {
        let mut c = Conversation::new(10, 1 << 20);
        let audio = |id: &str| Item {
            id: id.into(),
            status: ItemStatus::Completed,
            kind: ItemKind::Message {
                role: Role::User,
                content: vec![Content::InputAudio {
                    audio: None,
                    transcript: None,
                }],
            },
        };
        c.insert(audio("u1"), None).unwrap();
        c.set_user_transcript("u1", "hi").unwrap();
        c.set_user_speaker("u1", "S1").unwrap();
        c.insert(audio("u2"), None).unwrap();
        c.set_user_transcript("u2", "me again").unwrap();
        c.set_user_speaker("u2", "S1").unwrap();
        let texts = |c: &Conversation| -> Vec<String> {
            c.to_chat("").into_iter().map(|m| m.content).collect()
        };
        assert_eq!(texts(&c), ["hi", "me again"], "one speaker: no prefixes");
        c.insert(audio("u3"), None).unwrap();
        c.set_user_transcript("u3", "hello there").unwrap();
        c.set_user_speaker("u3", "S2").unwrap();
        c.insert(
            Item {
                id: "t".into(),
                status: ItemStatus::Completed,
                kind: ItemKind::Message {
                    role: Role::User,
                    content: vec![Content::InputText {
                        text: "typed".into(),
                    }],
                },
            },
            None,
        )
        .unwrap();
        assert_eq!(
            texts(&c),
            [
                "Speaker 1: hi",
                "Speaker 1: me again",
                "Speaker 2: hello there",
                "typed"
            ]
        );
        assert_eq!(c.speaker("u3"), Some("S2"));
        assert!(c.set_user_speaker("nope", "S1").is_err());
        assert_eq!(speaker_name("S12"), "Speaker 12");
        assert_eq!(speaker_name("alice"), "alice");
    }

    #[test]
    fn words_prefix_cuts_at_word_boundaries() {
        assert_eq!(words_prefix(" how are you", 0.5), " how");
        assert_eq!(words_prefix(" how are you", 1.0), " how are you");
        assert_eq!(words_prefix("hello", 0.9), "");
        assert_eq!(words_prefix("", 0.5), "");
    }
}
