//! Planted near duplicates and synthetic documents, for measuring dedup recall and scale:
//! identifier renaming and line dropping (the edits a copied-and-adapted source file shows),
//! a code-shaped document generator, and a prose-shaped one. All seeded ([`SplitMix64`]), so
//! a corpus is the same on every machine.

use std::collections::{BTreeSet, HashMap};

use super::hash::SplitMix64;

/// Keywords of Rust and Python, never renamed.
const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "type",
    "unsafe", "use", "where", "while", "and", "assert", "class", "def", "del", "elif", "except",
    "finally", "from", "global", "import", "is", "lambda", "None", "nonlocal", "not", "or", "pass",
    "raise", "True", "False", "try", "with", "yield", "print", "len", "range",
];

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The maximal `[A-Za-z0-9_]` runs of `text` as byte ranges.
fn words(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_word_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_word_byte(bytes[i]) {
            i += 1;
        }
        out.push((start, i));
    }
    out
}

/// A uniform index below `n` (`n > 0`).
fn below(g: &mut SplitMix64, n: usize) -> usize {
    (g.next_u64() % n.max(1) as u64) as usize
}

/// A fresh identifier: `len` letters and digits, starting with a letter.
fn fresh_name(g: &mut SplitMix64, len: usize) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = String::with_capacity(len);
    s.push(LETTERS[below(g, LETTERS.len())] as char);
    for _ in 1..len.max(1) {
        s.push(ALNUM[below(g, ALNUM.len())] as char);
    }
    s
}

/// Rename `k` distinct identifiers of `text` (words that start with a letter or `_`, are at
/// least 2 bytes long and are not keywords), each to a fresh name at every occurrence; the
/// identifiers are chosen uniformly among the distinct ones.
pub fn rename_identifiers(text: &str, k: usize, g: &mut SplitMix64) -> String {
    let spans = words(text);
    let candidates: Vec<&str> = spans
        .iter()
        .map(|&(a, b)| &text[a..b])
        .filter(|w| w.len() >= 2 && !w.as_bytes()[0].is_ascii_digit() && !KEYWORDS.contains(w))
        .collect::<BTreeSet<&str>>()
        .into_iter()
        .collect();
    let mut renames: HashMap<&str, String> = HashMap::new();
    let mut pool = candidates;
    for _ in 0..k.min(pool.len()) {
        let w = pool.swap_remove(below(g, pool.len()));
        renames.insert(w, fresh_name(g, w.len().clamp(3, 12)));
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut at = 0;
    for (a, b) in spans {
        if let Some(new) = renames.get(&text[a..b]) {
            out.push_str(&text[at..a]);
            out.push_str(new);
            at = b;
        }
    }
    out.push_str(&text[at..]);
    out
}

/// Drop each line of `text` with probability `p`.
pub fn drop_lines(text: &str, p: f64, g: &mut SplitMix64) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if super::hash::unit_interval(g.next_u64()) >= p {
            out.push_str(line);
        }
    }
    out
}

/// A code-shaped document of `lines` lines: functions of statements over the document's own
/// identifiers (so two generated documents share almost no 5-word shingle) and a few common
/// names and keywords.
pub fn synthetic_code(g: &mut SplitMix64, lines: usize) -> String {
    const COMMON: &[&str] = &[
        "self", "value", "result", "len", "Ok", "Err", "None", "Some", "new", "data", "i", "x",
    ];
    let idents: Vec<String> = (0..24 + below(g, 24))
        .map(|_| {
            let n = 3 + below(g, 8);
            fresh_name(g, n)
        })
        .collect();
    let pick = |g: &mut SplitMix64| -> String {
        if below(g, 4) == 0 {
            COMMON[below(g, COMMON.len())].to_string()
        } else {
            idents[below(g, idents.len())].clone()
        }
    };
    let mut out = String::new();
    let mut depth = 0usize;
    for _ in 0..lines {
        let indent = "    ".repeat(depth);
        let line = match below(g, 8) {
            0 if depth < 3 => {
                depth += 1;
                format!("fn {}({}: {}) {{", pick(g), pick(g), pick(g))
            }
            1 if depth > 0 => {
                depth -= 1;
                "}".to_string()
            }
            2 => format!(
                "if {} > {} {{ return {}; }}",
                pick(g),
                below(g, 100),
                pick(g)
            ),
            3 => format!(
                "for {} in {}.{}() {{ {}.push({}); }}",
                pick(g),
                pick(g),
                pick(g),
                pick(g),
                pick(g)
            ),
            _ => format!(
                "let {} = {}({}, {} + {});",
                pick(g),
                pick(g),
                pick(g),
                pick(g),
                below(g, 1000)
            ),
        };
        out.push_str(&indent);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A prose-shaped document of `words` words drawn from a Zipf-like vocabulary of `vocab`
/// synthetic words (word `i` has weight about `1 / (i + 10)`).
pub fn synthetic_text(g: &mut SplitMix64, words: usize, vocab: &[String]) -> String {
    let mut out = String::with_capacity(words * 7);
    let n = vocab.len().max(1) as f64;
    for i in 0..words {
        // Inverse CDF of a density ∝ 1/(x + 10) on [0, n): x = (n + 10)^u · 10^(1−u) − 10.
        let u = super::hash::unit_interval(g.next_u64());
        let x = ((n + 10.0).powf(u) * 10f64.powf(1.0 - u) - 10.0).max(0.0);
        let w = &vocab[(x as usize).min(vocab.len().saturating_sub(1))];
        out.push_str(w);
        out.push(if i % 12 == 11 { '\n' } else { ' ' });
    }
    out
}

/// `n` distinct synthetic words (3–10 letters).
pub fn synthetic_vocabulary(g: &mut SplitMix64, n: usize) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = 3 + below(g, 8);
        let w = fresh_name(g, len);
        if seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renaming_changes_whole_words_only_and_keeps_keywords() {
        let mut g = SplitMix64::new(1);
        let text = "let foo = foobar(foo);\nreturn foo;\n";
        let out = rename_identifiers(text, 10, &mut g);
        // Every identifier renamed, keywords and punctuation kept, occurrences consistent.
        let w: Vec<&str> = words(&out).iter().map(|&(a, b)| &out[a..b]).collect();
        assert_eq!(w[0], "let");
        assert_eq!(w[4], "return");
        assert_eq!(w[1], w[3]);
        assert_eq!(w[1], w[5]);
        assert_ne!(w[1], "foo");
        assert_ne!(w[2], "foobar");
        assert_eq!(out.matches(['=', '(', ')', ';']).count(), 5);
        assert_eq!(rename_identifiers(text, 0, &mut g), text);
    }

    #[test]
    fn dropping_keeps_line_order_and_rate() {
        let mut g = SplitMix64::new(2);
        let text: String = (0..2000).map(|i| format!("line {i}\n")).collect();
        let out = drop_lines(&text, 0.25, &mut g);
        let kept: Vec<usize> = out.lines().map(|l| l[5..].parse().unwrap()).collect();
        assert!(kept.windows(2).all(|w| w[0] < w[1]));
        let rate = 1.0 - kept.len() as f64 / 2000.0;
        assert!((rate - 0.25).abs() < 0.04, "{rate}");
    }
}
