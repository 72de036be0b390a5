//! Fitting a conversation into the model's context budget before it goes to the engine (which
//! formats it with the checkpoint's chat template). The newest user message must fit whole; its
//! context snippets (files, symbols, pastes) are cut by whole lines to what is left, oldest history
//! is dropped first. Token counts come from the engine's own tokenizer. Extra context the caller
//! can size (the repo map) comes after the new message's own snippets and before history, with at
//! most half of the tokens they leave, so it never pushes the user's message out.

use crate::engine::{ChatMessage, ContextSnippet, TokenCounter};

/// Tokens a message costs besides its text (role markers, separators) — a small safety margin.
const PER_MESSAGE_OVERHEAD: usize = 8;

/// `text`'s token count when it is at most `limit`, else `None` — without tokenizing all of a
/// long text: prefixes of 4, 8, 16… × `limit` bytes are counted first, and one over `limit`
/// settles it (a prefix does not count more than the whole, but for the token its cut splits). The work is bounded by a few times
/// the bytes that `limit` tokens span, not by the text's length (a pasted megabyte).
fn count_within(text: &str, count: &TokenCounter, limit: usize) -> Option<usize> {
    let mut bytes = limit.saturating_mul(4).max(64);
    while bytes < text.len() {
        let mut end = bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if count(&text[..end]) > limit {
            return None;
        }
        bytes = bytes.saturating_mul(2);
    }
    Some(count(text)).filter(|&n| n <= limit)
}

/// [`cost`] when it is at most `limit`, else `None`, counting each part within what is left.
fn cost_within(m: &ChatMessage, count: &TokenCounter, limit: usize) -> Option<usize> {
    let mut left = limit.checked_sub(PER_MESSAGE_OVERHEAD)?;
    left -= count_within(&m.content, count, left)?;
    for c in &m.context {
        left -= count_within(&c.label, count, left)?;
        left -= count_within(&c.text, count, left)?;
        left = left.checked_sub(4)?;
    }
    Some(limit - left)
}

/// The longest whole-line prefix of `text` that counts at most `budget` tokens. Byte-level BPE
/// gives at most one token per byte, so the lines ending within `budget` bytes usually fit (that
/// guess is checked, not assumed); the search then doubles the span it tries from there before
/// bisecting, so a megabyte paste costs a few counts of what fits, not ~20 counts of the whole
/// paste.
fn fit_lines(text: &str, count: &TokenCounter, budget: usize) -> usize {
    let mut ends: Vec<usize> = text.match_indices('\n').map(|(i, _)| i + 1).collect();
    if !text.is_empty() && !text.ends_with('\n') {
        ends.push(text.len());
    }
    let fits = |n: usize| n == 0 || count(&text[..ends[n - 1]]) <= budget;
    let lines_within = |bytes: usize| ends.partition_point(|&e| e <= bytes);
    // A first guess, checked: tokenizers that add a prefix or fall back to bytes can count more
    // than one token per byte, so even the lines within `budget` bytes may not fit.
    let guess = lines_within(budget);
    let (mut lo, mut hi) = if fits(guess) {
        (guess, ends.len())
    } else {
        (0, guess - 1)
    };
    let mut span = budget.max(1);
    while lo < hi {
        span = span.saturating_mul(2);
        let n = lines_within(span).max(lo + 1).min(hi);
        if fits(n) {
            lo = n;
        } else {
            hi = n - 1;
            break;
        }
    }
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// A new message's text cut by whole lines so that the message fits `budget` tokens (what
/// [`fit`] requires of it): `None` when it fits whole, else the kept prefix and its line count.
pub fn truncate_message(
    text: &str,
    count: &TokenCounter,
    budget: usize,
) -> Option<(String, usize)> {
    let budget = budget.saturating_sub(PER_MESSAGE_OVERHEAD);
    if count(text) <= budget {
        return None;
    }
    let keep = fit_lines(text, count, budget);
    Some((text.lines().take(keep).collect::<Vec<_>>().join("\n"), keep))
}

fn truncation_note(keep: usize, total: usize) -> String {
    format!("\n[... truncated: {keep} of {total} lines fit the context budget]\n")
}

fn cut_snippet(
    s: &ContextSnippet,
    count: &TokenCounter,
    budget: usize,
) -> Option<(ContextSnippet, bool)> {
    let note_cost = count(&truncation_note(usize::MAX, usize::MAX)) + count(&s.label) + 4;
    if budget <= note_cost {
        return None;
    }
    let total_lines = s.text.lines().count();
    let keep = fit_lines(&s.text, count, budget - note_cost);
    if keep >= total_lines {
        return Some((s.clone(), false));
    }
    if keep == 0 {
        return None;
    }
    let mut text: String = s.text.lines().take(keep).collect::<Vec<_>>().join("\n");
    text.push_str(&truncation_note(keep, total_lines));
    Some((
        ContextSnippet {
            label: s.label.clone(),
            text,
        },
        true,
    ))
}

/// Context made to measure: `make(tokens)` gives a snippet whose text counts at most `tokens`
/// (or nothing); it is offered at most `max_tokens`.
pub struct Extra<'a> {
    pub max_tokens: usize,
    pub make: &'a dyn Fn(usize) -> Option<ContextSnippet>,
}

/// Fits `messages` (the last one being the new user message) into `budget` tokens. Returns the
/// messages to send and notes for the user about what was cut; an error if the new message's own
/// text does not fit.
pub fn fit(
    messages: &[ChatMessage],
    count: &TokenCounter,
    budget: usize,
) -> Result<(Vec<ChatMessage>, Vec<String>), String> {
    fit_with(messages, count, budget, None)
}

/// [`fit`], with `extra` appended to the new message's context within the smaller of its
/// `max_tokens` and half the tokens left after the message and its own snippets.
pub fn fit_with(
    messages: &[ChatMessage],
    count: &TokenCounter,
    budget: usize,
    extra: Option<&Extra>,
) -> Result<(Vec<ChatMessage>, Vec<String>), String> {
    let Some((last, history)) = messages.split_last() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut notes = Vec::new();
    let own = PER_MESSAGE_OVERHEAD + count(&last.content);
    if own > budget {
        return Err(format!(
            "the message is {own} tokens, more than the model's budget of {budget} tokens; shorten it"
        ));
    }
    let mut left = budget - own;
    let mut newest = last.clone();
    newest.context.clear();
    for s in &last.context {
        match cut_snippet(s, count, left) {
            Some((cut, truncated)) => {
                left = left.saturating_sub(count(&cut.text) + count(&cut.label) + 4);
                if truncated {
                    notes.push(format!("{} was cut to fit the model's context", s.label));
                }
                newest.context.push(cut);
            }
            None => notes.push(format!(
                "{} did not fit the model's context and was left out",
                s.label
            )),
        }
    }
    if let Some(x) = extra {
        left -= add_extra(x, count, left, &mut newest);
    }
    let mut kept = Vec::new();
    for m in history.iter().rev() {
        let Some(c) = cost_within(m, count, left) else {
            break;
        };
        left -= c;
        kept.push(m.clone());
    }
    let dropped = history.len() - kept.len();
    if dropped > 0 {
        notes.push(format!(
            "the {dropped} oldest messages no longer fit the context and were not sent"
        ));
    }
    kept.reverse();
    kept.push(newest);
    Ok((kept, notes))
}

/// Appends `x`'s snippet to `newest` within half of `left` tokens; returns what it costs.
fn add_extra(x: &Extra, count: &TokenCounter, left: usize, newest: &mut ChatMessage) -> usize {
    let room = x.max_tokens.min(left / 2);
    // The label is not known before the snippet is made: allow for one of 32 tokens.
    let Some(s) = (x.make)(room.saturating_sub(32 + 4)) else {
        return 0;
    };
    let cost = count(&s.text) + count(&s.label) + 4;
    if s.text.is_empty() || cost > room {
        return 0;
    }
    newest.context.push(s);
    cost
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Role;
    use std::sync::Arc;

    fn cost(m: &ChatMessage, count: &TokenCounter) -> usize {
        PER_MESSAGE_OVERHEAD
            + count(&m.content)
            + m.context
                .iter()
                .map(|c| count(&c.label) + count(&c.text) + 4)
                .sum::<usize>()
    }

    /// One token per byte: an independent, exact model of byte-level worst case.
    fn bytes() -> TokenCounter {
        Arc::new(|t: &str| t.len())
    }

    #[test]
    fn fit_lines_is_the_longest_fitting_prefix() {
        let text = "aaaa\nbbbb\ncccc\n";
        for budget in 0..20 {
            let n = fit_lines(text, &bytes(), budget);
            let naive = (0..=3)
                .rev()
                .find(|&k| text.lines().take(k).map(|l| l.len() + 1).sum::<usize>() <= budget)
                .unwrap();
            assert_eq!(n, naive, "budget {budget}");
        }
    }

    /// A monotone counter unlike bytes: one token per word, per newline and per 3 bytes of a word
    /// past its first 3.
    fn words() -> TokenCounter {
        Arc::new(|t: &str| {
            t.split(' ')
                .map(|w| w.len().saturating_sub(1) / 3 + 1)
                .sum::<usize>()
                + t.matches('\n').count()
        })
    }

    /// The plain bisection over every line (what `fit_lines` did before bounding its work).
    fn naive_fit_lines(text: &str, count: &TokenCounter, budget: usize) -> usize {
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        (0..=lines.len())
            .rev()
            .find(|&k| count(&lines[..k].concat()) <= budget)
            .unwrap_or(0)
    }

    /// A counter with more tokens than bytes (as a tokenizer that adds a prefix token has): the
    /// lines within `budget` bytes are checked, not assumed to fit. Found by the property below.
    #[test]
    fn more_tokens_than_bytes_still_gives_the_longest_fitting_prefix() {
        for budget in 0..8 {
            assert_eq!(
                fit_lines(" \n", &words(), budget),
                naive_fit_lines(" \n", &words(), budget),
                "budget {budget}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// The bounded searches give what exhaustive ones give, on random texts, budgets and
        /// both counters.
        #[test]
        fn bounded_counting_equals_exhaustive(
            lines in proptest::collection::vec("[a-z é]{0,40}", 0..40),
            tail in proptest::bool::ANY,
            budget in 0usize..400,
        ) {
            let mut text = lines.join("\n");
            if tail { text.push('\n'); }
            for c in [bytes(), words()] {
                proptest::prop_assert_eq!(
                    fit_lines(&text, &c, budget),
                    naive_fit_lines(&text, &c, budget)
                );
                let exact = c(&text);
                proptest::prop_assert_eq!(
                    count_within(&text, &c, budget),
                    (exact <= budget).then_some(exact)
                );
                let mut m = ChatMessage::new(Role::User, text.clone());
                m.context.push(ContextSnippet { label: "a.rs".into(), text: text.repeat(3) });
                let full = cost(&m, &c);
                proptest::prop_assert_eq!(
                    cost_within(&m, &c, budget * 4),
                    (full <= budget * 4).then_some(full)
                );
            }
        }
    }

    /// A megabyte paste in the history and another in the new message are sized with a few
    /// counts of what fits, not by tokenizing them whole again and again.
    #[test]
    fn a_megabyte_paste_is_sized_without_counting_it_whole() {
        let counted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = counted.clone();
        let c: TokenCounter = Arc::new(move |t: &str| {
            seen.fetch_add(t.len(), std::sync::atomic::Ordering::Relaxed);
            t.len()
        });
        let big: String = (0..20_000)
            .map(|i| format!("line {i:05} of a paste\n"))
            .collect();
        assert!(big.len() > 400_000);
        let paste = |label: &str| ContextSnippet {
            label: label.into(),
            text: big.clone(),
        };
        let mut old = ChatMessage::new(Role::User, "old");
        old.context.push(paste("old paste"));
        let mut new = ChatMessage::new(Role::User, "new");
        new.context.push(paste("new paste"));
        let (msgs, notes) = fit(&[old, new], &c, 2000).unwrap();
        assert_eq!(msgs.len(), 1, "{notes:?}");
        assert!(msgs[0].context[0].text.len() < 2100);
        let n = counted.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            n < 100_000,
            "{n} bytes counted for two pastes of {} bytes",
            big.len()
        );
    }

    #[test]
    fn history_is_dropped_oldest_first_and_snippets_cut() {
        let c = bytes();
        let old = ChatMessage::new(Role::User, "x".repeat(100));
        let recent = ChatMessage::new(Role::Assistant, "y".repeat(10));
        let mut new = ChatMessage::new(Role::User, "question");
        let file: String = (0..50).map(|i| format!("line {i:02}\n")).collect();
        new.context.push(ContextSnippet {
            label: "f.rs".into(),
            text: file,
        });
        // The new message's files come first: the big file is cut to what is left, then history.
        let (msgs, notes) = fit(&[old.clone(), recent.clone(), new.clone()], &c, 200).unwrap();
        let snip = &msgs.last().unwrap().context[0];
        assert!(
            snip.text.contains("truncated") && snip.text.starts_with("line 00\n"),
            "{}",
            snip.text
        );
        assert!(notes.iter().any(|n| n.contains("f.rs was cut")));
        let total: usize = msgs.iter().map(|m| cost(m, &c)).sum();
        assert!(total <= 200 + 16, "{total}");
        // A small file leaves room for the newest history, and the oldest goes first.
        new.context[0].text = "line 00\n".into();
        let (msgs, notes) = fit(&[old, recent.clone(), new], &c, 150).unwrap();
        assert_eq!(msgs.len(), 2, "{notes:?}");
        assert_eq!(msgs[0], recent);
        assert_eq!(
            notes,
            vec!["the 1 oldest messages no longer fit the context and were not sent"]
        );
    }

    #[test]
    fn extra_context_takes_at_most_half_of_what_is_left_and_never_the_message() {
        let c = bytes();
        let make = |n: usize| {
            Some(ContextSnippet {
                label: "map".into(),
                text: "m".repeat(n),
            })
        };
        let x = Extra {
            max_tokens: 1000,
            make: &make,
        };
        let old = ChatMessage::new(Role::User, "o".repeat(40));
        let new = ChatMessage::new(Role::User, "q".repeat(100));
        let (msgs, _) = fit_with(&[old.clone(), new.clone()], &c, 300, Some(&x)).unwrap();
        let map = &msgs.last().unwrap().context[0];
        // 300 - 108 for the message leaves 192; the map gets at most 96 of them.
        assert_eq!(map.text.len(), 96 - 36);
        assert_eq!(msgs[0], old, "history still fits beside the map");
        let total: usize = msgs.iter().map(|m| cost(m, &c)).sum();
        assert!(total <= 300, "{total}");
        // A small budget: the message is sent whole, the map left out.
        let (msgs, _) = fit_with(std::slice::from_ref(&new), &c, 120, Some(&x)).unwrap();
        assert_eq!(msgs, vec![new.clone()]);
        // A map that does not keep to its size is left out rather than overflowing.
        let greedy = |_: usize| make(10_000);
        let x = Extra {
            max_tokens: 50,
            make: &greedy,
        };
        assert_eq!(
            fit_with(std::slice::from_ref(&new), &c, 1000, Some(&x))
                .unwrap()
                .0,
            vec![new]
        );
    }

    #[test]
    fn an_oversized_message_is_an_error() {
        let e = fit(
            &[ChatMessage::new(Role::User, "z".repeat(500))],
            &bytes(),
            100,
        )
        .unwrap_err();
        assert!(
            e.contains("508 tokens") && e.contains("budget of 100"),
            "{e}"
        );
    }
}
