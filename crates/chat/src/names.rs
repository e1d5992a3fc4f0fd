//! Validation of nicks, room names, topics and message text, with errors that say exactly
//! what is wrong. Names are compared case-insensitively through [`fold`].

/// Longest nick, in characters.
pub const MAX_NICK: usize = 24;
/// Longest room name after the `#`, in characters.
pub const MAX_ROOM: usize = 32;
/// Longest topic, in characters.
pub const MAX_TOPIC: usize = 200;

/// Bidirectional formatting characters: embeddings, overrides, isolates and marks. In a name
/// they can make one name display as another ("alice" ending in U+202E...), so names refuse
/// them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Characters that are invisible or zero-width, which would let two names look alike.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}'
    )
}

fn check_chars(what: &str, s: &str, allow_space: bool) -> Result<(), String> {
    for c in s.chars() {
        if c.is_control() {
            return Err(format!(
                "{what} contains a control character (U+{:04X}), which is not allowed",
                c as u32
            ));
        }
        if is_bidi_control(c) {
            return Err(format!(
                "{what} contains a bidirectional control character (U+{:04X}), which could make it display as something else",
                c as u32
            ));
        }
        if is_invisible(c) {
            return Err(format!(
                "{what} contains an invisible character (U+{:04X}), which is not allowed",
                c as u32
            ));
        }
        if !allow_space && c.is_whitespace() {
            return Err(format!("{what} contains a space, which is not allowed"));
        }
    }
    Ok(())
}

/// Case-folded form under which names are unique.
pub fn fold(name: &str) -> String {
    name.to_lowercase()
}

/// Checks a nick: 1 to [`MAX_NICK`] characters; no spaces, control, bidi or invisible
/// characters; not starting with `#` or `@`; no `,`.
pub fn nick(n: &str) -> Result<(), String> {
    let len = n.chars().count();
    if len == 0 {
        return Err("nick is empty".into());
    }
    if len > MAX_NICK {
        return Err(format!(
            "nick is too long: {len} characters (at most {MAX_NICK})"
        ));
    }
    check_chars("nick", n, false)?;
    if n.starts_with(['#', '@']) {
        return Err(
            "nick may not start with '#' or '@' (those name rooms and conversations)".into(),
        );
    }
    if n.contains(',') {
        return Err("nick may not contain ','".into());
    }
    Ok(())
}

/// Checks a room name: `#` then 1 to [`MAX_ROOM`] characters with the nick rules.
pub fn room(r: &str) -> Result<(), String> {
    let Some(rest) = r.strip_prefix('#') else {
        return Err(format!("room names start with '#' (try '#{r}')"));
    };
    let len = rest.chars().count();
    if len == 0 {
        return Err("room name is empty after '#'".into());
    }
    if len > MAX_ROOM {
        return Err(format!(
            "room name is too long: {len} characters after '#' (at most {MAX_ROOM})"
        ));
    }
    check_chars("room name", rest, false)?;
    if rest.contains([',', '#']) {
        return Err("room name may not contain ',' or a second '#'".into());
    }
    Ok(())
}

/// Checks a topic: up to [`MAX_TOPIC`] characters, spaces allowed, no control/bidi/invisible.
pub fn topic(t: &str) -> Result<(), String> {
    let len = t.chars().count();
    if len > MAX_TOPIC {
        return Err(format!(
            "topic is too long: {len} characters (at most {MAX_TOPIC})"
        ));
    }
    check_chars("topic", t, true)
}

/// Checks message text: 1 to `max` bytes, no control characters except tab.
pub fn text(t: &str, max: usize) -> Result<(), String> {
    if t.is_empty() {
        return Err("message is empty".into());
    }
    if t.len() > max {
        return Err(format!(
            "message is too long: {} bytes (at most {max})",
            t.len()
        ));
    }
    if let Some(c) = t.chars().find(|&c| c.is_control() && c != '\t') {
        return Err(format!(
            "message contains a control character (U+{:04X}), which is not allowed",
            c as u32
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass() {
        for n in ["alice", "Bob_2", "zoë", "李", "a-b[c]"] {
            nick(n).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        for r in ["#rust", "#a", "#café-société"] {
            room(r).unwrap_or_else(|e| panic!("{r}: {e}"));
        }
        topic("Rust and more: see https://example.invalid").expect("topic");
        text("hello\tworld", 11).expect("text");
    }

    #[test]
    fn bad_names_say_why() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            (&"x".repeat(25), "too long: 25 characters"),
            ("al ice", "space"),
            ("ali\u{7}ce", "control character (U+0007)"),
            ("alice\u{202E}", "bidirectional control character (U+202E)"),
            ("al\u{200B}ice", "invisible character (U+200B)"),
            ("#alice", "may not start with '#'"),
        ];
        for (n, want) in cases {
            let e = nick(n).expect_err(n);
            assert!(e.contains(want), "{n:?}: {e}");
        }
        assert!(room("rust").expect_err("no #").contains("start with '#'"));
        assert!(room("#").expect_err("empty").contains("empty"));
        assert!(room("#a b").expect_err("space").contains("space"));
        assert!(
            room("#\u{2066}x")
                .expect_err("bidi")
                .contains("bidirectional")
        );
        assert!(topic("a\nb").expect_err("newline").contains("control"));
        assert!(text("", 10).expect_err("empty").contains("empty"));
        assert!(
            text("12345678901", 10)
                .expect_err("long")
                .contains("11 bytes (at most 10)")
        );
    }

    #[test]
    fn fold_is_case_insensitive() {
        assert_eq!(fold("Alice"), fold("aLICE"));
        assert_eq!(fold("#Rust"), "#rust");
    }
}
