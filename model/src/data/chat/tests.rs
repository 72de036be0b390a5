//! The chat records, the rendering and the token flags against hand-written expectations.

use super::*;
use crate::data::config::TokenizerConfig;
use crate::data::tokenizer::{attach_layout, train_bpe};

fn tokenizer() -> Tokenizer {
    let corpus = (0..40).map(|i| format!("def f_{i}(x):\n    return x + {i}\nSure. Add one.\n"));
    let cfg = TokenizerConfig {
        vocab_size: 300,
        ..TokenizerConfig::default()
    };
    let mut tok = train_bpe(corpus, &cfg).unwrap();
    attach_layout(&mut tok, 0, 0).unwrap();
    tok
}

fn conversation() -> Vec<ChatTurn> {
    vec![
        ChatTurn::new(ChatRole::System, "Be brief."),
        ChatTurn::new(ChatRole::User, "Add one?"),
        ChatTurn::new(ChatRole::Assistant, "def f(x):\n    return x + 1"),
        ChatTurn::new(ChatRole::User, "Thanks"),
        ChatTurn::new(ChatRole::Assistant, "Sure."),
    ]
}

#[test]
fn records_of_both_forms_parse() {
    let m = r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#;
    let p = r#"{"problem": "hi", "solution": "hello", "lang": "python"}"#;
    let want = vec![
        ChatTurn::new(ChatRole::User, "hi"),
        ChatTurn::new(ChatRole::Assistant, "hello"),
    ];
    assert_eq!(parse_record(m).unwrap(), want);
    assert_eq!(parse_record(p).unwrap(), want);
}

#[test]
fn bad_records_say_what_is_wrong() {
    for (line, want) in [
        ("{", "not valid JSON"),
        ("[1]", "not a JSON object"),
        (r#"{"messages": 3}"#, "\"messages\" is not a list"),
        (r#"{"messages": []}"#, "\"messages\" is empty"),
        (
            r#"{"messages": [{"content": "x"}]}"#,
            "messages[0] has no string \"role\"",
        ),
        (
            r#"{"messages": [{"role": "tool", "content": "x"}]}"#,
            "messages[0].role is \"tool\": expected system, user or assistant",
        ),
        (
            r#"{"messages": [{"role": "user"}]}"#,
            "messages[0] has no string \"content\"",
        ),
        (
            r#"{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}"#,
            "the last message is the user's",
        ),
        (
            r#"{"problem": "a<|end|>", "solution": "b"}"#,
            "message 0 contains the chat marker <|end|>",
        ),
        (
            r#"{"problem": "a"}"#,
            "\"problem\" and \"solution\" must both be strings",
        ),
        (
            r#"{"content": "a"}"#,
            "expected a \"messages\" list or \"problem\" and \"solution\"",
        ),
    ] {
        let e = parse_record(line).unwrap_err();
        assert!(e.contains(want), "{line}: {e}");
    }
}

#[test]
fn rendered_text_round_trips_and_ends_with_the_reply() {
    let turns = conversation();
    let text = render_example(&turns);
    assert_eq!(
        text,
        "<|system|>\nBe brief.<|end|>\n<|user|>\nAdd one?<|end|>\n<|assistant|>\n\
         def f(x):\n    return x + 1<|end|>\n<|user|>\nThanks<|end|>\n<|assistant|>\nSure.<|end|>\n"
    );
    assert_eq!(parse_rendered(&text).unwrap(), turns);
    assert_eq!(
        render_prompt(&turns[..1]),
        "<|system|>\nBe brief.<|end|>\n<|assistant|>\n"
    );
    assert!(parse_rendered("<|user|>\nno end").is_err());
    assert_eq!(
        without_markers(&render_example(&turns[1..3])),
        "\nAdd one?\n\ndef f(x):\n    return x + 1\n"
    );
}

/// The loss mask by hand: under causal training the targets are exactly each reply's tokens and
/// its `<|end|>`; the prefix is exactly the engine's prompt for the last reply, token for token.
#[test]
fn flags_cover_exactly_the_replies_and_the_last_prompt() {
    let tok = tokenizer();
    let turns = conversation();
    let c = encode_chat(&tok, &turns).unwrap();
    assert_eq!(c.ids.len(), c.flags.len());
    let dec = |ids: &[u32]| tok.decode(ids, false).unwrap();
    // Every token, decoded, is the rendered example.
    assert_eq!(dec(&c.ids), render_example(&turns));
    // Runs of target tokens: the two replies, each with its end marker.
    let mut runs: Vec<Vec<u32>> = vec![];
    for (i, (&id, &f)) in c.ids.iter().zip(&c.flags).enumerate() {
        if f & FLAG_TARGET != 0 {
            if i == 0 || c.flags[i - 1] & FLAG_TARGET == 0 {
                runs.push(vec![]);
            }
            runs.last_mut().unwrap().push(id);
        }
    }
    let runs: Vec<String> = runs.iter().map(|r| dec(r)).collect();
    assert_eq!(runs, ["def f(x):\n    return x + 1<|end|>", "Sure.<|end|>"]);
    // The prefix: a leading run, exactly the prompt the engine encodes for the last reply.
    let n = c.flags.iter().take_while(|f| *f & FLAG_PREFIX != 0).count();
    assert_eq!(c.flags.iter().filter(|f| *f & FLAG_PREFIX != 0).count(), n);
    let prompt = render_prompt(&turns[..4]);
    assert_eq!(dec(&c.ids[..n]), prompt);
    // The last reply's prompt is one piece, so its ids are the engine's (the encoder as it is).
    let engine = tok
        .encode(prompt.as_str(), false)
        .unwrap()
        .get_ids()
        .to_vec();
    let tail = engine.len()
        - tok
            .encode("\n<|user|>\nThanks<|end|>\n<|assistant|>\n", false)
            .unwrap()
            .len();
    assert_eq!(&c.ids[..n][tail..], &engine[tail..]);
    // Single turn: the whole prefix equals the engine's prompt ids, and the last token
    // (the trailing newline) is neither target nor prefix.
    let one = &turns[1..3];
    let c1 = encode_chat(&tok, one).unwrap();
    let p1 = tok
        .encode(render_prompt(&one[..1]).as_str(), false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(&c1.ids[..p1.len()], &p1[..]);
    assert!(c1.flags[..p1.len()].iter().all(|&f| f == FLAG_PREFIX));
    assert_eq!(*c1.flags.last().unwrap(), 0);
    let end = tok.token_to_id("<|end|>").unwrap();
    assert_eq!(c1.ids[c1.ids.len() - 2], end);
    assert_eq!(c1.flags[c1.ids.len() - 2], FLAG_TARGET);
}
