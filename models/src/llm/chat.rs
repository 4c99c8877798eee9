//! ChatML turns as token ids, read from the GGUF chat template.
//!
//! Both supported models use ChatML (`<|im_start|>role\ncontent<|im_end|>\n`). We do not run the
//! Jinja template; we check it is ChatML and take its default system prompt from it. Turns are
//! rendered piecewise so a conversation can grow turn by turn and its tokens stay a prefix of
//! the next turn's tokens (what makes the prefix cache hit).

use super::LlmError;
use super::tokenizer::LmTokenizer;

#[derive(Debug, Clone)]
pub struct ChatFormat {
    im_start: u32,
    im_end: u32,
    newline: Vec<u32>,
    /// The template's built-in system prompt, used when the caller gives none.
    pub default_system: Option<String>,
    /// Tokens that end a reply.
    pub stop_tokens: Vec<u32>,
}

/// The literal default system prompt in a ChatML Jinja template, if it has one.
fn default_system_prompt(template: &str) -> Option<String> {
    let marker = "<|im_start|>system";
    let mut rest = template;
    while let Some(at) = rest.find(marker) {
        rest = &rest[at + marker.len()..];
        let body = rest.strip_prefix("\\n").or_else(|| rest.strip_prefix('\n'));
        if let Some(body) = body
            && let Some(end) = body.find("<|im_end|>")
        {
            let text = &body[..end];
            if !text.is_empty() && !text.contains('\'') && !text.contains('+') {
                return Some(text.to_owned());
            }
        }
    }
    None
}

impl ChatFormat {
    pub fn new(tok: &LmTokenizer, template: &str, eos: u32) -> Result<Self, LlmError> {
        if !template.contains("<|im_start|>") {
            return Err(LlmError::Tokenizer(
                "the GGUF chat template is not ChatML; only ChatML models are supported".into(),
            ));
        }
        let id = |t: &str| {
            tok.token_id(t)
                .ok_or_else(|| LlmError::Tokenizer(format!("vocabulary lacks {t}")))
        };
        let im_start = id("<|im_start|>")?;
        let im_end = id("<|im_end|>")?;
        let mut stop_tokens = vec![im_end];
        if eos != im_end {
            stop_tokens.push(eos);
        }
        if let Some(eot) = tok.token_id("<|endoftext|>")
            && !stop_tokens.contains(&eot)
        {
            stop_tokens.push(eot);
        }
        Ok(Self {
            im_start,
            im_end,
            newline: tok.encode("\n")?,
            default_system: default_system_prompt(template),
            stop_tokens,
        })
    }

    fn message(&self, tok: &LmTokenizer, role: &str, content: &str) -> Result<Vec<u32>, LlmError> {
        let mut out = vec![self.im_start];
        out.extend(tok.encode(&format!("{role}\n{content}"))?);
        out.push(self.im_end);
        out.extend_from_slice(&self.newline);
        Ok(out)
    }

    /// The system message that opens a conversation (the template's default when `None`).
    pub fn system(&self, tok: &LmTokenizer, system: Option<&str>) -> Result<Vec<u32>, LlmError> {
        match system.or(self.default_system.as_deref()) {
            Some(text) => self.message(tok, "system", text),
            None => Ok(Vec::new()),
        }
    }

    /// A user message followed by the assistant header the reply continues from.
    pub fn user_turn(&self, tok: &LmTokenizer, user: &str) -> Result<Vec<u32>, LlmError> {
        let mut out = self.message(tok, "user", user)?;
        out.push(self.im_start);
        out.extend(tok.encode("assistant\n")?);
        Ok(out)
    }

    /// The opening of a user message whose words so far are `partial`: what [`Self::user_turn`]
    /// of the finished text most likely starts with (only the last token or two may differ).
    pub fn user_prefix(&self, tok: &LmTokenizer, partial: &str) -> Result<Vec<u32>, LlmError> {
        let mut out = vec![self.im_start];
        out.extend(tok.encode(&format!("user\n{partial}"))?);
        Ok(out)
    }

    /// A whole assistant message (used when a caller replays history into a new session).
    pub fn assistant(&self, tok: &LmTokenizer, text: &str) -> Result<Vec<u32>, LlmError> {
        self.message(tok, "assistant", text)
    }

    /// Tokens that close an assistant reply in the conversation (`<|im_end|>\n`).
    pub fn closing(&self) -> Vec<u32> {
        let mut out = vec![self.im_end];
        out.extend_from_slice(&self.newline);
        out
    }

    pub fn is_stop(&self, token: u32) -> bool {
        self.stop_tokens.contains(&token)
    }
}
