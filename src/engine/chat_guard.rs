//! Keeps a checkpoint's chat template from recursing without bound. minijinja's namespaces are
//! the only mutable values a template has: `{% set ns.a = ns %}` stores a namespace inside itself,
//! and printing or comparing it then recurses until the stack overflows — an abort no error
//! handler can catch (found by the `chat_template` fuzz target). Namespaces made without such an
//! assignment cannot form a cycle, so Tritter:
//!
//! 1. rewrites every `{% set NAME.ATTR = EXPR %}` to `{% set NAME.ATTR = __tritter_plain(EXPR) %}`,
//!    found with minijinja's own lexer ([`wrap_namespace_sets`]);
//! 2. checks the compiled template with minijinja's own compiler: every attribute store
//!    (`SetAttr`) takes either the value of `__tritter_plain` or the text of a
//!    `{% set NAME.ATTR %}…{% endset %}` block; any other form is refused ([`check_compiled`]);
//! 3. `__tritter_plain` refuses a value that holds a namespace at any depth ([`plain`]).
//!
//! Real templates (Llama 3, Qwen, the HF defaults) keep flags, counters and strings in their
//! namespaces and render unchanged (tests in `chat_format`).

use minijinja::machinery::{self, Instruction, Instructions, Token};
use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Template};

/// The guard function the rewrite calls.
pub(crate) const PLAIN: &str = "__tritter_plain";
/// Containers deeper than this are refused in a namespace attribute.
const MAX_DEPTH: usize = 64;

/// `src` with the value of every `{% set NAME.ATTR = EXPR %}` wrapped in `__tritter_plain(…)`.
/// Text the lexer rejects is returned as it is (compiling it reports the error).
pub(crate) fn wrap_namespace_sets(src: &str) -> String {
    let mut tokens = Vec::new();
    for t in machinery::tokenize(src, false, Default::default()) {
        match t {
            Ok(t) => tokens.push(t),
            Err(_) => return src.to_string(),
        }
    }
    // (byte offset, text) insertions, in order.
    let mut inserts: Vec<(usize, &str)> = Vec::new();
    let mut i = 0;
    while i + 5 < tokens.len() {
        let is_set = matches!(
            &tokens[i..i + 6],
            [
                (Token::BlockStart, _),
                (Token::Ident("set"), _),
                (Token::Ident(_), _),
                (Token::Dot, _),
                (Token::Ident(_), _),
                (Token::Assign, _),
            ]
        );
        if !is_set {
            i += 1;
            continue;
        }
        let open = tokens[i + 5].1.end_offset as usize;
        let Some(end) = tokens[i + 6..]
            .iter()
            .position(|(t, _)| matches!(t, Token::BlockEnd))
        else {
            break;
        };
        let close = tokens[i + 6 + end].1.start_offset as usize;
        inserts.push((open, " __tritter_plain("));
        inserts.push((close, ") "));
        i += 6 + end;
    }
    let mut out = String::with_capacity(src.len() + inserts.len() * 10);
    let mut at = 0;
    for (pos, text) in inserts {
        let Some(piece) = src.get(at..pos) else {
            return src.to_string();
        };
        out.push_str(piece);
        out.push_str(text);
        at = pos;
    }
    out.push_str(src.get(at..).unwrap_or_default());
    out
}

/// Refuses a compiled template with an attribute store that the rewrite did not guard.
pub(crate) fn check_compiled(tmpl: &Template<'_, '_>) -> Result<(), Error> {
    let compiled = machinery::get_compiled_template(tmpl);
    std::iter::once(&compiled.instructions)
        .chain(compiled.blocks.values())
        .try_for_each(check_instructions)
}

fn check_instructions(code: &Instructions<'_>) -> Result<(), Error> {
    let code: Vec<&Instruction<'_>> = (0u32..).map_while(|i| code.get(i)).collect();
    for (i, ins) in code.iter().enumerate() {
        let Instruction::SetAttr(name) = ins else {
            continue;
        };
        let before = |n: usize| i.checked_sub(n).and_then(|j| code.get(j)).copied();
        let guarded = matches!(before(1), Some(Instruction::Lookup(_)))
            && matches!(
                before(2),
                Some(Instruction::CallFunction(PLAIN, Some(1)) | Instruction::EndCapture)
            );
        if !guarded {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "the assignment to namespace attribute `{name}` is not of the form \
                     `set name.attr = value` or a plain `set name.attr` block"
                ),
            ));
        }
    }
    Ok(())
}

/// Registers `__tritter_plain` on `env`: the value unchanged (a one-shot iterator as a list) when
/// it holds no namespace, else an error.
pub(crate) fn register(env: &mut Environment<'_>) -> Result<(), Error> {
    let probe = env.compile_expression("namespace()")?.eval(())?;
    let ns_type = probe
        .as_object()
        .map(|o| o.type_name())
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "namespace() is not an object"))?;
    env.add_function(PLAIN, move |v: Value| plain(v, ns_type));
    Ok(())
}

/// `v` if it holds no object of type `ns_type` within [`MAX_DEPTH`] levels.
fn plain(v: Value, ns_type: &str) -> Result<Value, Error> {
    if v.kind() == ValueKind::Iterable {
        let items: Vec<Value> = v.try_iter()?.collect();
        let list = Value::from(items);
        check(&list, ns_type, 0)?;
        return Ok(list);
    }
    check(&v, ns_type, 0)?;
    Ok(v)
}

fn check(v: &Value, ns_type: &str, depth: usize) -> Result<(), Error> {
    let refuse = |what: &str| Err(Error::new(ErrorKind::InvalidOperation, what.to_string()));
    if depth > MAX_DEPTH {
        return refuse("a namespace attribute may not hold values nested this deeply");
    }
    if v.as_object().is_some_and(|o| o.type_name() == ns_type) {
        return refuse("a namespace may not be stored in a namespace");
    }
    match v.kind() {
        ValueKind::Seq | ValueKind::Iterable => {
            for item in v.try_iter()? {
                check(&item, ns_type, depth + 1)?;
            }
        }
        ValueKind::Map => {
            for key in v.try_iter()? {
                check(&v.get_item(&key)?, ns_type, depth + 1)?;
                check(&key, ns_type, depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}
