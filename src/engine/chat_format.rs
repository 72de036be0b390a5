//! Prompt formatting: a checkpoint's own chat template (`tokenizer_config.json` `chat_template`,
//! Jinja rendered with minijinja, as HF transformers' `apply_chat_template` does with
//! `add_generation_prompt=True`), or Tritter's own format for checkpoints without one:
//!
//! ```text
//! <|system|>\n{system}<|end|>\n<|user|>\n{user}<|end|>\n<|assistant|>\n
//! ```
//!
//! Code the user put into context is appended to the message as fenced blocks with labels.

use crate::engine::{ChatMessage, Role};
use anyhow::{Context, Result};
use std::path::Path;

/// Tritter's own format as a Jinja chat template (what `tritter export` writes for a checkpoint
/// without one); renders as [`ChatFormat::tritter`] does (tested).
pub const TRITTER_TEMPLATE: &str = "{% for message in messages %}{{ '<|' + message['role'] + \
    '|>\\n' + message['content'] + '<|end|>\\n' }}{% endfor %}{% if add_generation_prompt %}\
    {{ '<|assistant|>\\n' }}{% endif %}";

/// How a conversation becomes prompt text, and which tokens end a reply.
#[derive(Debug, Clone)]
pub struct ChatFormat {
    template: Option<String>,
    bos_token: String,
    eos_token: String,
    /// Token strings that end a reply.
    pub stop_strings: Vec<String>,
}

fn token_str(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl ChatFormat {
    /// Tritter's own format.
    pub fn tritter() -> Self {
        Self {
            template: None,
            bos_token: String::new(),
            eos_token: "<|eos|>".into(),
            stop_strings: vec!["<|end|>".into(), "<|eos|>".into()],
        }
    }

    /// From `tokenizer_config.json` text: its `chat_template` (a string, or a list of named
    /// templates of which `default` is used), `bos_token` and `eos_token`.
    pub fn from_tokenizer_config(text: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(text).context("tokenizer_config.json: invalid JSON")?;
        let template = match v.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string),
            _ => None,
        };
        let Some(template) = template else {
            return Ok(Self::tritter());
        };
        let bos_token = token_str(v.get("bos_token")).unwrap_or_default();
        let eos_token = token_str(v.get("eos_token")).unwrap_or_default();
        let mut stop_strings = vec![];
        if !eos_token.is_empty() {
            stop_strings.push(eos_token.clone());
        }
        // Llama-3-style templates end each turn with <|eot_id|>.
        for turn_end in ["<|eot_id|>", "<|end|>", "<|im_end|>", "<end_of_turn>"] {
            if template.contains(turn_end) && !stop_strings.iter().any(|s| s == turn_end) {
                stop_strings.push(turn_end.into());
            }
        }
        let f = Self {
            template: Some(template),
            bos_token,
            eos_token,
            stop_strings,
        };
        // Fail early on a template that does not compile.
        f.render(&[ChatMessage::new(Role::User, "hi")])
            .context("tokenizer_config.json: chat_template")?;
        Ok(f)
    }

    /// The format of a checkpoint directory.
    pub fn for_dir(dir: &Path) -> Result<Self> {
        let p = dir.join("tokenizer_config.json");
        if !p.exists() {
            return Ok(Self::tritter());
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Self::from_tokenizer_config(&text).with_context(|| p.display().to_string())
    }

    /// The end-of-text token (`<|eos|>` in Tritter's own format).
    pub fn eos_token(&self) -> String {
        self.eos_token.clone()
    }

    pub fn has_template(&self) -> bool {
        self.template.is_some()
    }

    /// A message's text as the model reads it: one `<img></img>` marker per image that carries
    /// its pixels (the engine splices the image's rows between them), one `<audio></audio>` per
    /// clip that carries its samples (the clip's codes go between them), the text, then the
    /// code snippets.
    fn content(m: &ChatMessage) -> String {
        use crate::engine::media::{has_pixels, has_samples, AUDIO_MARKER, IMAGE_MARKER};
        let mut s: String = m
            .attachments
            .iter()
            .filter(|a| has_pixels(a.data.as_ref()))
            .map(|_| IMAGE_MARKER)
            .collect();
        s.extend(
            m.attachments
                .iter()
                .filter(|a| has_samples(a.data.as_ref()))
                .map(|_| AUDIO_MARKER),
        );
        s.push_str(&m.content);
        for c in &m.context {
            s.push_str(&format!(
                "\n\n{}:\n```\n{}\n```",
                c.label,
                c.text.trim_end()
            ));
        }
        s
    }

    /// The prompt text for a conversation, ending where the assistant's reply begins.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String> {
        let role = |r: Role| match r {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let Some(template) = &self.template else {
            let mut s = String::new();
            for m in messages {
                let tag = match m.role {
                    Role::System => "<|system|>",
                    Role::User => "<|user|>",
                    Role::Assistant => "<|assistant|>",
                };
                s.push_str(&format!("{tag}\n{}<|end|>\n", Self::content(m)));
            }
            s.push_str("<|assistant|>\n");
            return Ok(s);
        };
        let msgs: Vec<minijinja::Value> = messages
            .iter()
            .map(|m| {
                let mut o = std::collections::BTreeMap::new();
                o.insert("role", minijinja::Value::from(role(m.role)));
                o.insert("content", minijinja::Value::from(Self::content(m)));
                minijinja::Value::from(o)
            })
            .collect();
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        crate::engine::chat_guard::register(&mut env)?;
        env.add_template_owned(
            "chat",
            crate::engine::chat_guard::wrap_namespace_sets(template),
        )?;
        let tmpl = env.get_template("chat")?;
        crate::engine::chat_guard::check_compiled(&tmpl)?;
        let out = tmpl.render(minijinja::context! {
            messages => msgs,
            add_generation_prompt => true,
            bos_token => self.bos_token.clone(),
            eos_token => self.eos_token.clone(),
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A Llama-3-style template, as Microsoft's BitNet b1.58 2B4T ships (shape, not a copy).
    const LLAMA3: &str = r#"{
      "bos_token": "<|begin_of_text|>",
      "eos_token": {"content": "<|eot_id|>"},
      "chat_template": "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    }"#;

    #[test]
    fn tritter_template_renders_as_tritter_format() {
        let cfg = serde_json::json!({"chat_template": TRITTER_TEMPLATE, "eos_token": "<|eos|>"});
        let f = ChatFormat::from_tokenizer_config(&cfg.to_string()).unwrap();
        let msgs = [
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, "Hello\nthere"),
            ChatMessage::new(Role::Assistant, "Hi."),
            ChatMessage::new(Role::User, "fn main() {}"),
        ];
        let want = ChatFormat::tritter().render(&msgs).unwrap();
        assert_eq!(f.render(&msgs).unwrap(), want);
        assert!(want.starts_with("<|system|>\nBe brief.<|end|>\n<|user|>\nHello\nthere"));
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        assert_eq!(
            sorted(f.stop_strings.clone()),
            sorted(ChatFormat::tritter().stop_strings)
        );
    }

    /// The model crate's training renderer (`tritter_model::data::chat`) gives the text this
    /// engine sends, byte for byte, for the same messages, through the built-in format and the
    /// exported template; a training example is that text for every turn.
    #[test]
    fn the_training_renderer_gives_the_engines_text() {
        use tritter_model::data::chat::{render_example, render_prompt, ChatRole, ChatTurn};
        let convs: [&[(Role, &str)]; 4] = [
            &[(Role::User, "hi")],
            &[
                (Role::System, "Be brief.\n\nAlways."),
                (Role::User, "Write `f`:\n```py\ndef f(): pass\n```"),
                (Role::Assistant, "  indented\n\tand tabs — ünïcode ✓"),
                (Role::User, ""),
            ],
            &[(Role::Assistant, "first"), (Role::User, "second\n")],
            &[
                (Role::System, "s"),
                (Role::System, "t"),
                (Role::User, "<|eos|> stays"),
            ],
        ];
        let template = ChatFormat::from_tokenizer_config(
            &serde_json::json!({"chat_template": TRITTER_TEMPLATE}).to_string(),
        )
        .unwrap();
        for conv in convs {
            let msgs: Vec<ChatMessage> =
                conv.iter().map(|(r, c)| ChatMessage::new(*r, *c)).collect();
            let turns: Vec<ChatTurn> = conv
                .iter()
                .map(|(r, c)| {
                    let role = match r {
                        Role::System => ChatRole::System,
                        Role::User => ChatRole::User,
                        Role::Assistant => ChatRole::Assistant,
                    };
                    ChatTurn::new(role, *c)
                })
                .collect();
            let engine = ChatFormat::tritter().render(&msgs).unwrap();
            assert_eq!(render_prompt(&turns), engine);
            assert_eq!(template.render(&msgs).unwrap(), engine);
            let example = render_example(&turns);
            assert_eq!(format!("{example}<|assistant|>\n"), engine);
        }
    }

    #[test]
    fn renders_a_checkpoint_template_with_generation_prompt() {
        let f = ChatFormat::from_tokenizer_config(LLAMA3).unwrap();
        let msgs = [
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, " Hello "),
        ];
        let s = f.render(&msgs).unwrap();
        assert_eq!(
            s,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(f.stop_strings, vec!["<|eot_id|>".to_string()]);
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let cfg = r#"{"eos_token": "</s>", "chat_template":
          "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}[{{ m['role'].upper() }}] {{ m['content'].strip() }}\n{% endfor %}[ASSISTANT]"}"#;
        let f = ChatFormat::from_tokenizer_config(cfg).unwrap();
        let s = f.render(&[ChatMessage::new(Role::User, "  hi  ")]).unwrap();
        assert_eq!(s, "[USER] hi\n[ASSISTANT]");
        let e = f
            .render(&[ChatMessage::new(Role::System, "x")])
            .unwrap_err();
        assert!(format!("{e:#}").contains("no system role"));
    }

    #[test]
    fn own_format_without_template_and_context_is_fenced() {
        let f = ChatFormat::from_tokenizer_config(r#"{"eos_token": "</s>"}"#).unwrap();
        assert!(!f.has_template());
        let mut m = ChatMessage::new(Role::User, "Explain");
        m.context.push(crate::engine::ContextSnippet {
            label: "a.py".into(),
            text: "x = 1\n".into(),
        });
        assert_eq!(
            f.render(&[m]).unwrap(),
            "<|user|>\nExplain\n\na.py:\n```\nx = 1\n```<|end|>\n<|assistant|>\n"
        );
    }

    #[test]
    fn a_broken_template_is_an_error() {
        let e = ChatFormat::from_tokenizer_config(r#"{"chat_template": "{% for %}"}"#).unwrap_err();
        assert!(format!("{e:#}").contains("chat_template"));
    }

    /// Namespace flags, counters, strings and `set` blocks, as real templates use them, render as
    /// Python's jinja2 renders them (the expected text is jinja2's output).
    #[test]
    fn namespace_assignments_render_unchanged() {
        let cfg = r#"{"eos_token": "</s>", "chat_template":
          "{%- set ns = namespace(found=false, n=0, last='') -%}{%- for m in messages -%}{%- if m['role'] == 'system' %}{% set ns.found = true %}{% endif -%}{%- set ns.n = ns.n + 1 -%}{%- set ns.last %}<{{ m['role'] }}>{% endset -%}{%set ns . last=ns.last ~ '!'%}{%- endfor -%}{{ ns.found }}/{{ ns.n }}/{{ ns.last }}"}"#;
        let f = ChatFormat::from_tokenizer_config(cfg).unwrap();
        let s = f
            .render(&[
                ChatMessage::new(Role::System, "s"),
                ChatMessage::new(Role::User, "u"),
            ])
            .unwrap();
        assert_eq!(s, "True/2/<user>!");
    }

    /// A namespace stored in a namespace (directly, through a list, a map, an iterator, another
    /// namespace, a tuple or a filtered `set` block) is refused with an error; before the guard
    /// printing it overflowed the stack (the `chat_template` fuzz target).
    #[test]
    fn a_namespace_inside_a_namespace_is_refused() {
        for t in [
            "{% set ns = namespace(a=1) %}{% set ns.a = ns %}{{ ns }}",
            "{% set ns = namespace() %}{%- set ns.a = [1, [ns]] -%}{{ ns }}",
            "{% set ns = namespace() %}{% set ns.a = {'k': {'j': ns}} %}{{ ns }}",
            "{% set ns = namespace() %}{% set ns.a = [ns]|reverse %}{{ ns }}",
            "{% set n = namespace() %}{% set m = namespace(b=n) %}{% set n.a = m %}{{ n }}",
            "{% set ns = namespace() %}{% set ns.a, b = [ns, 1] %}{{ ns }}",
            "{% set ns = namespace() %}{% set ns.a | trim %} x {% endset %}{{ ns }}",
            "{% set ns = namespace() %}{% set ns.a = ns if true else 1 %}{{ ns }}",
            "{% macro f(x) %}{% set x.a = x %}{% endmacro %}{{ f(namespace()) }}",
        ] {
            let cfg = serde_json::json!({ "chat_template": t }).to_string();
            let e = ChatFormat::from_tokenizer_config(&cfg).unwrap_err();
            let msg = format!("{e:#}");
            assert!(msg.contains("namespace"), "{t}: {msg}");
        }
    }
}
