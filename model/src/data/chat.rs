//! Chat (instruction) data: a JSONL record — `{"messages": [{"role", "content"}, ...]}` or the
//! OSS-Instruct `{"problem", "solution"}` (one user turn, one assistant turn) — as turns, the
//! turns as Tritter's chat format, and that text as tokens with per-token flags.
//!
//! Must match the binary's `ChatFormat::tritter()` byte for byte (tested in
//! `src/engine/chat_format.rs`): a turn is `<|role|>\n{content}<|end|>\n`, and the prompt the
//! engine sends ends with `<|assistant|>\n`. A training example is every turn rendered so
//! ([`render_example`]); the text the pipeline spools is that, and [`parse_rendered`] reads it
//! back (no content may hold a chat marker, so the split is unambiguous).
//!
//! Tokens ([`encode_chat`]) are encoded with the run's tokenizer as the engine encodes a prompt
//! (markers are control tokens). Flags per token: [`FLAG_TARGET`] on every assistant turn's
//! content and its closing `<|end|>`; [`FLAG_PREFIX`] on everything up to and including the
//! last `<|assistant|>\n` header — the prompt the engine would prefill before that reply. Under
//! prefix-LM training only the last reply is a target (earlier replies sit in the bidirectional
//! prefix); under causal training every reply is.

use serde_json::Value;
use tokenizers::Tokenizer;

use super::DataError;

/// The token is a loss target (an assistant reply or its `<|end|>`; every token of plain text).
pub const FLAG_TARGET: u32 = 1;
/// The token belongs to the example's prefix (the prompt of its last reply).
pub const FLAG_PREFIX: u32 = 2;

/// The strings a message's content may not hold.
pub const MARKERS: [&str; 4] = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"];

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

impl ChatRole {
    /// The role's name in JSON (`system`, `user`, `assistant`).
    pub fn name(self) -> &'static str {
        match self {
            ChatRole::System => "system",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
        }
    }

    /// The turn header's marker (`<|user|>`, ...).
    pub fn marker(self) -> &'static str {
        match self {
            ChatRole::System => "<|system|>",
            ChatRole::User => "<|user|>",
            ChatRole::Assistant => "<|assistant|>",
        }
    }

    fn parse(s: &str) -> Option<ChatRole> {
        [ChatRole::System, ChatRole::User, ChatRole::Assistant]
            .into_iter()
            .find(|r| r.name() == s)
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTurn {
    pub role: ChatRole,
    pub content: String,
}

impl ChatTurn {
    pub fn new(role: ChatRole, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// The turns of one JSONL line, or what is wrong with it (one line, no file name).
pub fn parse_record(line: &str) -> Result<Vec<ChatTurn>, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(o) = v else {
        return Err("not a JSON object".into());
    };
    let turns = if let Some(m) = o.get("messages") {
        let Value::Array(list) = m else {
            return Err("\"messages\" is not a list".into());
        };
        list.iter()
            .enumerate()
            .map(|(i, m)| {
                let role = m
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("messages[{i}] has no string \"role\""))?;
                let role = ChatRole::parse(role).ok_or_else(|| {
                    format!("messages[{i}].role is {role:?}: expected system, user or assistant")
                })?;
                let content = m
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("messages[{i}] has no string \"content\""))?;
                Ok(ChatTurn::new(role, content))
            })
            .collect::<Result<Vec<_>, String>>()?
    } else {
        match (o.get("problem"), o.get("solution")) {
            (Some(Value::String(p)), Some(Value::String(s))) => vec![
                ChatTurn::new(ChatRole::User, p.as_str()),
                ChatTurn::new(ChatRole::Assistant, s.as_str()),
            ],
            (None, None) => {
                return Err(
                    "expected a \"messages\" list or \"problem\" and \"solution\" strings".into(),
                )
            }
            _ => return Err("\"problem\" and \"solution\" must both be strings".into()),
        }
    };
    check_turns(&turns)?;
    Ok(turns)
}

/// A conversation the trainer can use: not empty, ending with the assistant's reply, no chat
/// marker inside any content.
fn check_turns(turns: &[ChatTurn]) -> Result<(), String> {
    let Some(last) = turns.last() else {
        return Err("\"messages\" is empty".into());
    };
    if last.role != ChatRole::Assistant {
        return Err(format!(
            "the last message is the {}'s: a conversation must end with the assistant's reply",
            last.role.name()
        ));
    }
    for (i, t) in turns.iter().enumerate() {
        if let Some(m) = MARKERS.iter().find(|m| t.content.contains(**m)) {
            return Err(format!("message {i} contains the chat marker {m}"));
        }
    }
    Ok(())
}

fn push_turn(s: &mut String, t: &ChatTurn) {
    s.push_str(t.role.marker());
    s.push('\n');
    s.push_str(&t.content);
    s.push_str("<|end|>\n");
}

/// The prompt the engine sends for `turns`: every turn, then `<|assistant|>\n`
/// (`ChatFormat::tritter().render`).
pub fn render_prompt(turns: &[ChatTurn]) -> String {
    let mut s = String::new();
    turns.iter().for_each(|t| push_turn(&mut s, t));
    s.push_str("<|assistant|>\n");
    s
}

/// A whole conversation as training text: every turn, replies included, no trailing header.
pub fn render_example(turns: &[ChatTurn]) -> String {
    let mut s = String::new();
    turns.iter().for_each(|t| push_turn(&mut s, t));
    s
}

/// `text` with the chat markers removed: what the tokenizer's BPE is trained on (the markers
/// are control tokens, never merged with the text around them).
pub fn without_markers(text: &str) -> String {
    MARKERS
        .iter()
        .fold(text.to_string(), |t, m| t.replace(m, ""))
}

/// The turns of [`render_example`]'s text.
pub fn parse_rendered(text: &str) -> Result<Vec<ChatTurn>, String> {
    let mut rest = text;
    let mut turns = Vec::new();
    while !rest.is_empty() {
        let role = [ChatRole::System, ChatRole::User, ChatRole::Assistant]
            .into_iter()
            .find(|r| rest.starts_with(r.marker()) && rest[r.marker().len()..].starts_with('\n'))
            .ok_or("a turn does not start with a role marker")?;
        rest = &rest[role.marker().len() + 1..];
        let end = rest.find("<|end|>\n").ok_or("a turn has no <|end|>")?;
        turns.push(ChatTurn::new(role, &rest[..end]));
        rest = &rest[end + "<|end|>\n".len()..];
    }
    check_turns(&turns)?;
    Ok(turns)
}

/// The ids of one chat example and their flags ([`FLAG_TARGET`], [`FLAG_PREFIX`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatTokens {
    pub ids: Vec<u32>,
    pub flags: Vec<u32>,
}

impl ChatTokens {
    fn push(&mut self, ids: &[u32], flags: u32) {
        self.ids.extend_from_slice(ids);
        self.flags.extend(std::iter::repeat_n(flags, ids.len()));
    }
}

fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, DataError> {
    tok.encode_fast(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| DataError::Tokenizer {
            message: e.to_string(),
        })
}

/// Tokens of `turns` with `tok` (the run's tokenizer, markers as control tokens). Text between
/// replies is encoded in one piece up to and including each `<|assistant|>\n`, as the engine
/// encodes a prompt; a reply is encoded alone, then `<|end|>`.
pub fn encode_chat(tok: &Tokenizer, turns: &[ChatTurn]) -> Result<ChatTokens, DataError> {
    let end = tok
        .token_to_id("<|end|>")
        .ok_or_else(|| DataError::Tokenizer {
            message: "the tokenizer has no <|end|> token".into(),
        })?;
    let mut out = ChatTokens::default();
    let mut pending = String::new();
    let mut prefix = 0;
    for t in turns {
        if t.role != ChatRole::Assistant {
            push_turn(&mut pending, t);
            continue;
        }
        pending.push_str("<|assistant|>\n");
        out.push(&encode(tok, &pending)?, 0);
        prefix = out.ids.len();
        out.push(&encode(tok, &t.content)?, FLAG_TARGET);
        out.push(&[end], FLAG_TARGET);
        pending = "\n".into();
    }
    if !pending.is_empty() {
        out.push(&encode(tok, &pending)?, 0);
    }
    out.flags[..prefix]
        .iter_mut()
        .for_each(|f| *f |= FLAG_PREFIX);
    Ok(out)
}

#[cfg(test)]
mod tests;
