//! The `chat` source through `prepare`: conversations in both record forms become version-2
//! shards in which every example sits whole in one sequence, its target tokens decode to exactly
//! its replies (each with `<|end|>`) and its prefix to the engine's prompt for its last reply; an
//! example longer than a sequence is counted and left out; a bad line stops the pipeline with
//! the file, the line number and what is wrong; a plain-text run still writes version 1.

use std::collections::BTreeMap;
use std::path::Path;

use tritter_model::data::chat::{render_prompt, ChatRole, ChatTurn, FLAG_PREFIX, FLAG_TARGET};
use tritter_model::data::shard::{PAD_DOC, VERSION, VERSION_FLAGS};
use tritter_model::data::{prepare, DataConfig, NoProgress, ShardSet, Split};

fn config(path: &Path, kind: &str, seq_len: usize) -> DataConfig {
    DataConfig::from_toml_str(&format!(
        "seq_len = {seq_len}\nval_fraction = 0.0\n[[sources]]\nkind = \"{kind}\"\npath = \"{}\"\n\
         [tokenizer]\nvocab_size = 300\n",
        path.display()
    ))
    .unwrap()
}

/// (record line, its turns): reply lengths vary; one is far longer than the others.
fn records() -> Vec<(String, Vec<ChatTurn>)> {
    let mut out = vec![];
    for i in 0..6 {
        let (q, a) = (
            format!("What is {i} + {i}?"),
            format!("def add_{i}(x):\n    return x + {}", i * 2),
        );
        let turns = if i % 2 == 0 {
            vec![
                ChatTurn::new(ChatRole::System, "Answer with code."),
                ChatTurn::new(ChatRole::User, q.as_str()),
                ChatTurn::new(ChatRole::Assistant, "Sure."),
                ChatTurn::new(ChatRole::User, "Now as a function."),
                ChatTurn::new(ChatRole::Assistant, a.as_str()),
            ]
        } else {
            vec![
                ChatTurn::new(ChatRole::User, q.as_str()),
                ChatTurn::new(ChatRole::Assistant, a.as_str()),
            ]
        };
        let line = if i % 2 == 0 {
            let msgs: Vec<serde_json::Value> = turns
                .iter()
                .map(|t| serde_json::json!({"role": t.role.name(), "content": t.content}))
                .collect();
            serde_json::json!({ "messages": msgs }).to_string()
        } else {
            serde_json::json!({"problem": q, "solution": a}).to_string()
        };
        out.push((line, turns));
    }
    let long = "x = 1\n".repeat(200);
    let turns = vec![
        ChatTurn::new(ChatRole::User, "long"),
        ChatTurn::new(ChatRole::Assistant, long.as_str()),
    ];
    out.push((
        serde_json::json!({"problem": "long", "solution": long}).to_string(),
        turns,
    ));
    out
}

/// An example in the shards: the sequences it is in, its ids, its flags.
type Example = (Vec<u64>, Vec<u32>, Vec<u32>);

#[test]
fn chat_examples_are_packed_whole_with_their_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("chat.jsonl");
    let recs = records();
    let text: String = recs.iter().map(|(l, _)| format!("{l}\n\n")).collect();
    std::fs::write(&src, text).unwrap();
    let run = tmp.path().join("run");
    let manifest = prepare(&config(&src, "chat", 96), &run, &NoProgress).unwrap();
    assert_eq!(manifest.tokens.chat_too_long, 1);
    assert_eq!(manifest.tokens.train_documents, 6);
    let data = run.join("data");
    let tok = tritter_model::data::tokenizer::load(&data.join("tokenizer.json")).unwrap();
    let set = ShardSet::open(&data).unwrap();
    assert_eq!(set.index().version, VERSION_FLAGS);
    // Every example, by document id: the sequences it is in, its ids and flags.
    let mut docs: BTreeMap<u32, Example> = BTreeMap::new();
    for (i, s) in set.split(Split::Train).iter_from(0).enumerate() {
        let s = s.unwrap();
        for ((&t, &d), &f) in s.tokens.iter().zip(&s.doc_ids).zip(&s.flags) {
            if d == PAD_DOC {
                assert_eq!(f, 0);
                continue;
            }
            let e = docs.entry(d).or_default();
            if e.0.last() != Some(&(i as u64)) {
                e.0.push(i as u64);
            }
            e.1.push(t);
            e.2.push(f);
        }
    }
    assert_eq!(docs.len(), 6);
    let dec = |ids: &[u32]| tok.decode(ids, false).unwrap();
    for ((seqs, ids, flags), (_, turns)) in docs.values().zip(&recs) {
        assert_eq!(seqs.len(), 1, "an example is split across sequences");
        let replies: Vec<String> = turns
            .iter()
            .filter(|t| t.role == ChatRole::Assistant)
            .map(|t| format!("{}<|end|>", t.content))
            .collect();
        let targets: Vec<u32> = (0..ids.len())
            .filter(|&k| flags[k] & FLAG_TARGET != 0)
            .map(|k| ids[k])
            .collect();
        assert_eq!(dec(&targets), replies.concat());
        let n = flags.iter().take_while(|f| *f & FLAG_PREFIX != 0).count();
        assert_eq!(dec(&ids[..n]), render_prompt(&turns[..turns.len() - 1]));
        // The example ends with its reply's end marker, a newline and eos, none of them prefix.
        assert_eq!(
            dec(&ids[n..]),
            format!("{}\n<|eos|>", replies.last().unwrap())
        );
    }
}

#[test]
fn a_bad_chat_line_stops_the_pipeline_with_its_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("bad.jsonl");
    let good = &records()[1].0;
    for (bad, want) in [
        (
            r#"{"messages": [{"role": "tool", "content": "x"}]}"#,
            "messages[0].role is \"tool\": expected system, user or assistant",
        ),
        ("{not json", "not valid JSON"),
        (
            r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
            "the last message is the user's",
        ),
    ] {
        std::fs::write(&src, format!("{good}\n\n{bad}\n{good}\n")).unwrap();
        let e = prepare(
            &config(&src, "chat", 64),
            &tmp.path().join("run"),
            &NoProgress,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(&format!("chat data {}:3: {want}", src.display())),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn plain_text_still_writes_version_1_and_reads_every_token_as_a_target() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("docs.jsonl");
    let lines: String = (0..5)
        .map(|i| {
            let content = format!("def f_{i}(x):\n    return x * {i}\n");
            format!("{}\n", serde_json::json!({ "content": content }))
        })
        .collect();
    std::fs::write(&src, lines).unwrap();
    let run = tmp.path().join("run");
    prepare(&config(&src, "jsonl", 32), &run, &NoProgress).unwrap();
    let set = ShardSet::open(&run.join("data")).unwrap();
    assert_eq!(set.index().version, VERSION);
    for s in set.split(Split::Train).iter_from(0) {
        let s = s.unwrap();
        for (&d, &f) in s.doc_ids.iter().zip(&s.flags) {
            assert_eq!(f, if d == PAD_DOC { 0 } else { FLAG_TARGET });
        }
    }
}
