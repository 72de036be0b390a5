//! A fixture of tests/mine_instructions_py.rs: documented functions with literals that hold
//! braces, a lifetime, a trait declaration without a body, and a test.

/// Count the closing braces in `s`, ignoring nothing.
///
/// The literals below hold braces that must not end the body.
pub fn count_braces(s: &str) -> usize {
    let open = '{';
    let raw = r#"}}"#; // }
    /* { nested /* } */ */
    let _ = (open, raw, "}\"{", b'}');
    s.chars().filter(|&c| c == '}').count()
}

/// Return the longer of two string slices.
pub(crate) fn longest<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.len() >= b.len() {
        a
    } else {
        b
    }
}

/// A shape with an area.
pub trait Shape {
    /// The area of the shape, in square units.
    fn area(&self) -> f64;
}

#[cfg(test)]
mod tests {
    /// Checks the brace counter on a small string.
    #[test]
    fn test_counts() {
        let n = super::count_braces("}}");
        assert_eq!(n, 2);
        assert!(n > 0);
    }
}
