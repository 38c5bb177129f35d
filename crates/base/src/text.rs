//! Text from outside, made safe to show: [`clean`] escapes control characters (C0, DEL, C1 and
//! the bidirectional overrides), so a string a vessel or a bundle supplied can neither move the
//! cursor nor clear an operator's terminal; [`clip`] also bounds its length. Every CLI table cell,
//! report line and stored refusal that carries such text goes through one of them.

use std::borrow::Cow;
use std::fmt::Write as _;

fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every control character written as `\u{XX}` (a backslash is kept as it is).
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`clean`]ed `s`, cut to at most `max` characters (then ending in `…`).
pub fn clip(s: &str, max: usize) -> String {
    let cleaned = clean(s);
    if cleaned.chars().count() <= max {
        return cleaned.into_owned();
    }
    let mut out: String = cleaned.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// An error and its sources in one line (`a: b: c`), each cause said once: what a transport
/// error from reqwest or hyper means is in its sources, not its top line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_cannot_reach_a_terminal() {
        let hostile = "ok\x1b[2J\x1b[HALL VESSELS OK\r\n\u{9b}31m\u{202e}";
        let shown = clean(hostile);
        assert!(!shown.chars().any(unsafe_char), "{shown}");
        assert_eq!(
            shown,
            "ok\\u{1b}[2J\\u{1b}[HALL VESSELS OK\\u{d}\\u{a}\\u{9b}31m\\u{202e}"
        );
        assert!(matches!(clean("SEAF-031 · Öl"), Cow::Borrowed(_)));
    }

    #[test]
    fn clip_bounds_the_length_in_characters() {
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
        assert_eq!(clip(&"é".repeat(1000), 200).chars().count(), 200);
    }
}
