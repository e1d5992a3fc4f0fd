//! Validation of nicks, room names, topics and message text, with errors that say exactly
//! what is wrong. Names are compared case-insensitively through [`fold`], and for look-alikes
//! through [`look_alike_keys`].
//!
//! # The rules for nicks and room names
//!
//! A name is checked in its Unicode normalization form C ([`normalize`]; the server binds and
//! shows that form). Then:
//!
//! 1. **Length:** a nick has 1 to [`MAX_NICK`] characters; a room name is `#` and 1 to
//!    [`MAX_ROOM`] characters.
//! 2. **Characters:** printable ASCII (`!` to `~`), or a non-ASCII character that is both an
//!    identifier character of UAX #31 (`XID_Continue`; the first character `XID_Start`) and
//!    `Identifier_Status=Allowed` in the UTS #39 General Security Profile. That keeps letters,
//!    digits and combining marks of the scripts in common use, and refuses spaces, controls,
//!    bidirectional formatting, default-ignorable (invisible) characters such as U+200B, U+2061,
//!    U+2063, U+034F, U+180E, variation selectors (U+FE0F), tags (U+E0020) and fillers
//!    (U+3164), compatibility forms (fullwidth letters, ligatures), symbols and emoji.
//! 3. **Marks:** at most 4 combining marks in a row, never the same one twice in a row
//!    (UTS #39 §5.4), so that marks cannot pile up over a letter.
//! 4. **Scripts:** the non-punctuation characters must satisfy the *Highly Restrictive* level
//!    of UTS #39 §5.2: one script (`alice`, `алиса`, `山田タロウ`), or Latin with Han and
//!    Hiragana/Katakana, Han and Bopomofo, or Han and Hangul. `аlice` (a Cyrillic `а` among
//!    Latin letters) mixes scripts and is refused.
//! 5. **Punctuation:** a nick may not start with `#` or `@` (they name rooms and DM
//!    conversations) and may not contain `,`; a room name has no `,` and no second `#`.
//!
//! Those rules only say which names can exist. Which of them a key may *claim* is the server's
//! business: no two keys may hold names that [`fold`] to the same string or that share a
//! confusable skeleton ([`look_alike_keys`]; `alice`, `aIice` and `a1ice` all do).

use unicode_normalization::UnicodeNormalization as _;
use unicode_normalization::char::is_combining_mark;
use unicode_script::{Script, UnicodeScript as _};
use unicode_security::{
    GeneralSecurityProfile as _, RestrictionLevel, RestrictionLevelDetection as _,
};

/// Longest nick, in characters.
pub const MAX_NICK: usize = 24;
/// Longest room name after the `#`, in characters.
pub const MAX_ROOM: usize = 32;
/// Longest topic, in characters.
pub const MAX_TOPIC: usize = 200;
/// Most combining marks in a row in a name.
const MAX_MARKS_IN_A_ROW: usize = 4;

/// Unicode's `Bidi_Control` property (PropList.txt; these 12 code points since Unicode 6.3).
/// All of them are default-ignorable too ([`is_default_ignorable`]) and refused as such; they
/// are named here only for a clearer error, since what they do (reorder what is shown, so that
/// one name or topic can display as another) is worse than being invisible.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `Default_Ignorable_Code_Point` (and characters that decompose to nothing else): UTS #39's
/// skeleton drops exactly these, so a character whose skeleton is empty renders as nothing.
/// Among them are the bidirectional controls (U+061C, U+200E, U+200F, U+202A–U+202E,
/// U+2066–U+2069), the zero-width characters (U+200B–U+200D, U+2060, U+FEFF), the soft hyphen,
/// fillers, tags and variation selectors: names refuse all of them, topics all but marks
/// ([`topic`]). The property comes from the Unicode data of `unicode-security`.
fn is_default_ignorable(c: char) -> bool {
    let mut buf = [0u8; 4];
    unicode_security::skeleton(c.encode_utf8(&mut buf))
        .next()
        .is_none()
}

/// The form a name is checked, bound and shown in: Unicode normalization form C, so that a
/// name typed precomposed (`é`) and decomposed (`e` + U+0301) is one name.
pub fn normalize(name: &str) -> String {
    if name.is_ascii() {
        name.to_owned()
    } else {
        name.nfc().collect()
    }
}

/// Case-folded form under which names are unique: lowercase, in normalization form C
/// (canonically equivalent spellings fold alike).
pub fn fold(name: &str) -> String {
    if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        name.nfd()
            .collect::<String>()
            .to_lowercase()
            .nfc()
            .collect()
    }
}

/// The keys under which a name is looked up for look-alikes: the UTS #39 confusable skeleton
/// of the name as written and of its [`fold`] (one or two strings). Two names that share a key
/// render alike (`alice`, `aIice`, `a1ice`; `сосо` in Cyrillic and `coco`), up to case.
pub fn look_alike_keys(name: &str) -> Vec<String> {
    let mut keys = vec![unicode_security::skeleton(name).collect::<String>()];
    let folded: String = unicode_security::skeleton(&fold(name)).collect();
    if folded != keys[0] {
        keys.push(folded);
    }
    keys
}

/// Checks a name (a nick, or a room name without its `#`) in its normalized form `n` against
/// rules 2 to 4 of the module documentation. `what` names it in errors ("nick").
fn check_identifier(what: &str, n: &str) -> Result<(), String> {
    let mut marks = 0usize;
    let mut last_mark = None;
    for (i, c) in n.chars().enumerate() {
        let cp = c as u32;
        if c.is_control() {
            return Err(format!(
                "{what} contains a control character (U+{cp:04X}), which is not allowed"
            ));
        }
        if is_bidi_control(c) {
            return Err(format!(
                "{what} contains a bidirectional control character (U+{cp:04X}), which could make \
                 it display as something else"
            ));
        }
        if is_default_ignorable(c) {
            return Err(format!(
                "{what} contains an invisible character (U+{cp:04X}), which is not allowed"
            ));
        }
        if c.is_whitespace() {
            return Err(format!("{what} contains a space, which is not allowed"));
        }
        if c.is_ascii() {
            // Printable ASCII: every control and the space were refused above.
            marks = 0;
            last_mark = None;
            continue;
        }
        let identifier = if i == 0 {
            unicode_ident::is_xid_start(c)
        } else {
            unicode_ident::is_xid_continue(c)
        };
        if !identifier || !c.identifier_allowed() {
            if i == 0 && unicode_ident::is_xid_continue(c) && c.identifier_allowed() {
                return Err(format!(
                    "{what} may not start with U+{cp:04X} (a mark, a connector or a non-ASCII digit); start with a letter, an ASCII digit or ASCII punctuation"
                ));
            }
            return Err(format!(
                "{what} contains U+{cp:04X}, which is not allowed in names (letters, digits and marks of one script, and ASCII punctuation, are)"
            ));
        }
        if is_combining_mark(c) {
            marks += 1;
            if marks > MAX_MARKS_IN_A_ROW {
                return Err(format!(
                    "{what} has more than {MAX_MARKS_IN_A_ROW} combining marks in a row"
                ));
            }
            if last_mark == Some(c) {
                return Err(format!(
                    "{what} repeats the combining mark U+{cp:04X}, which would render as one"
                ));
            }
            last_mark = Some(c);
        } else {
            marks = 0;
            last_mark = None;
        }
    }
    // Scripts: ASCII punctuation is script-neutral (Common), and not `Allowed` in UTS #39's
    // sense, so the restriction level is taken over the rest.
    let letters: String = n.chars().filter(|c| !c.is_ascii_punctuation()).collect();
    if letters.as_str().detect_restriction_level() > RestrictionLevel::HighlyRestrictive {
        let mut scripts: Vec<&str> = Vec::new();
        for c in letters.chars() {
            let s = c.script();
            if !matches!(s, Script::Common | Script::Inherited | Script::Unknown)
                && !scripts.contains(&s.full_name())
            {
                scripts.push(s.full_name());
            }
        }
        return Err(format!(
            "{what} '{n}' mixes scripts ({}), so it could pass for another name; use one script",
            scripts.join(", ")
        ));
    }
    Ok(())
}

/// Most characters that normalization form C composes into one character a name may contain:
/// the longest canonical decomposition among them (`ᾢ` is `ω` and three marks; `ệ` is `e`
/// and two; a Hangul syllable is three jamo). NFC never drops a character, so an input of more than this many
/// times a name's limit is too long whatever it normalizes to, and is refused before any
/// normalization work.
const MAX_COMPOSED: usize = 4;

/// Checks a nick as received (`raw`) against the rules of the module documentation and
/// returns it in its [`normalize`]d form, the one to bind and show: 1 to [`MAX_NICK`]
/// identifier characters of one script or printable ASCII; not starting with `#` or `@`; no
/// `,`. The length of `raw` is checked first, so an overlong input costs no normalization.
pub fn nick(raw: &str) -> Result<String, String> {
    let raw_len = raw.chars().count();
    if raw_len > MAX_COMPOSED * MAX_NICK {
        return Err(format!(
            "nick is too long: {raw_len} characters (at most {MAX_NICK})"
        ));
    }
    let n = normalize(raw);
    let len = n.chars().count();
    if len == 0 {
        return Err("nick is empty".into());
    }
    if len > MAX_NICK {
        return Err(format!(
            "nick is too long: {len} characters (at most {MAX_NICK})"
        ));
    }
    if n.starts_with(['#', '@']) {
        return Err(
            "nick may not start with '#' or '@' (those name rooms and conversations)".into(),
        );
    }
    check_identifier("nick", &n)?;
    if n.contains(',') {
        return Err("nick may not contain ','".into());
    }
    Ok(n)
}

/// Checks a room name (in its [`normalize`]d form): `#` then 1 to [`MAX_ROOM`] characters
/// with the nick rules, no second `#`.
pub fn room(r: &str) -> Result<(), String> {
    let Some(rest) = r.strip_prefix('#') else {
        return Err(format!("room names start with '#' (try '#{r}')"));
    };
    let raw = rest.chars().count();
    if raw > MAX_COMPOSED * MAX_ROOM {
        return Err(format!(
            "room name is too long: {raw} characters after '#' (at most {MAX_ROOM})"
        ));
    }
    let rest = normalize(rest);
    let len = rest.chars().count();
    if len == 0 {
        return Err("room name is empty after '#'".into());
    }
    if len > MAX_ROOM {
        return Err(format!(
            "room name is too long: {len} characters after '#' (at most {MAX_ROOM})"
        ));
    }
    check_identifier("room name", &rest)?;
    if rest.contains([',', '#']) {
        return Err("room name may not contain ',' or a second '#'".into());
    }
    Ok(())
}

/// Checks a topic: up to [`MAX_TOPIC`] characters, spaces allowed, no control characters and
/// no default-ignorable (invisible) characters other than marks: so no bidirectional controls,
/// zero-width characters, fillers or tags, while a variation selector (as in the emoji `❤️`)
/// may stay.
pub fn topic(t: &str) -> Result<(), String> {
    let len = t.chars().count();
    if len > MAX_TOPIC {
        return Err(format!(
            "topic is too long: {len} characters (at most {MAX_TOPIC})"
        ));
    }
    for c in t.chars() {
        let cp = c as u32;
        if c.is_control() {
            return Err(format!(
                "topic contains a control character (U+{cp:04X}), which is not allowed"
            ));
        }
        if is_bidi_control(c) {
            return Err(format!(
                "topic contains a bidirectional control character (U+{cp:04X}), which could \
                 make it display as something else"
            ));
        }
        if is_default_ignorable(c) && !is_combining_mark(c) {
            return Err(format!(
                "topic contains an invisible character (U+{cp:04X}), which is not allowed"
            ));
        }
    }
    Ok(())
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

    /// Names and topics refuse bidirectional controls through the Unicode data (they are
    /// default-ignorable, and not `Allowed` in identifiers), with an error of their own; so are the
    /// zero-width characters topics always refused. A variation selector (a mark) may stay in a
    /// topic, as in an emoji.
    #[test]
    fn bidi_controls_and_zero_width_characters_are_refused_without_a_list() {
        let bidi = [
            '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}',
            '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ];
        let zero_width = [
            '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{00AD}',
        ];
        for (c, kind) in bidi
            .into_iter()
            .map(|c| (c, "bidirectional control character"))
            .chain(zero_width.into_iter().map(|c| (c, "invisible character")))
        {
            assert_eq!(is_bidi_control(c), kind.starts_with("bidi"), "{c:?}");
            assert!(is_default_ignorable(c), "{c:?}");
            let code = format!("{kind} (U+{:04X})", c as u32);
            assert!(!c.identifier_allowed(), "{code}");
            for n in [
                format!("{c}alice"),
                format!("al{c}ice"),
                format!("alice{c}"),
            ] {
                let e = nick(&n).expect_err(&n);
                assert!(e.contains(&code), "{n:?}: {e}");
                let e = room(&format!("#{n}")).expect_err(&n);
                assert!(e.contains(&code), "{n:?}: {e}");
                let t = format!("a topic: {n}");
                let e = topic(&t).expect_err(&t);
                assert!(e.contains(&code), "{t:?}: {e}");
            }
        }
        // Invisible format characters and fillers are refused in topics too; a variation
        // selector is not.
        for c in ['\u{2063}', '\u{E0041}', '\u{3164}'] {
            let t = format!("x{c}y");
            assert!(topic(&t).is_err(), "{t:?}");
        }
        topic("I \u{2764}\u{FE0F} Rust, caf\u{00E9}, \u{05E9}\u{05DC}\u{05D5}\u{05DD}")
            .expect("topic");
    }

    #[test]
    fn fold_is_case_insensitive() {
        assert_eq!(fold("Alice"), fold("aLICE"));
        assert_eq!(fold("#Rust"), "#rust");
    }

    /// The look-alikes of issue 11: invisible and filler characters, and a Cyrillic letter
    /// among Latin ones. Each is refused in a nick and in a room name, naming the character.
    #[test]
    fn look_alike_characters_are_refused() {
        for c in [
            '\u{2063}',
            '\u{2061}',
            '\u{034F}',
            '\u{180E}',
            '\u{FE0F}',
            '\u{E0020}',
            '\u{3164}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{115F}',
            '\u{FFA0}',
            '\u{E0001}',
            '\u{1D173}',
        ] {
            let code = format!("U+{:04X}", c as u32);
            for n in [
                format!("ali{c}ce"),
                format!("alice{c}"),
                format!("{c}alice"),
            ] {
                let e = nick(&n).expect_err(&n);
                assert!(e.contains(&code), "{n:?}: {e}");
                let r = format!("#{n}");
                let e = room(&r).expect_err(&r);
                assert!(e.contains(&code), "{r:?}: {e}");
            }
        }
        let e = nick("\u{0430}lice").expect_err("Cyrillic a");
        assert!(e.contains("mixes scripts (Cyrillic, Latin)"), "{e}");
        let e = room("#r\u{0443}st").expect_err("Cyrillic u");
        assert!(e.contains("mixes scripts (Latin, Cyrillic)"), "{e}");
        // Other refusals name the rule.
        let cases: &[(&str, &str)] = &[
            ("\u{FF41}lice", "U+FF41, which is not allowed"), // fullwidth a
            ("al\u{2010}ice", "U+2010, which is not allowed"), // hyphen, not '-'
            ("bob\u{2019}s", "U+2019, which is not allowed"), // quote, not '\''
            ("\u{0301}alice", "may not start with U+0301"),
            ("\u{0663}", "may not start with U+0663"), // Arabic-Indic digit
            ("\u{0133}", "U+0133, which is not allowed"), // ligature ĳ
            ("\u{1D41A}", "U+1D41A, which is not allowed"), // mathematical bold a
            ("\u{263A}", "U+263A, which is not allowed"), // emoji
            ("x\u{0301}\u{0301}", "repeats the combining mark U+0301"),
            (
                "x\u{0300}\u{0301}\u{0302}\u{0303}\u{0304}",
                "more than 4 combining marks",
            ),
            ("\u{0391}lice", "mixes scripts"), // Greek capital alpha
        ];
        for (n, want) in cases {
            let e = nick(n).expect_err(n);
            assert!(e.contains(want), "{n:?}: {e}");
        }
    }

    /// Every ASCII nick that was valid before the identifier rules still is: printable ASCII
    /// without ',' and not starting with '#' or '@'.
    #[test]
    fn ascii_names_valid_before_still_are() {
        for c in '!'..='~' {
            let n = format!("a{c}b");
            assert_eq!(nick(&n).is_ok(), c != ',', "{n:?}: {:?}", nick(&n));
            let lead = format!("{c}ab");
            assert_eq!(
                nick(&lead).is_ok(),
                !matches!(c, ',' | '#' | '@'),
                "{lead:?}"
            );
            let r = format!("#{c}ab");
            assert_eq!(room(&r).is_ok(), !matches!(c, ',' | '#'), "{r:?}");
        }
        for n in [
            "alice", "Bob_2", "[x]", "foo|bar", "^_^", "a.b", "x-y", "{z}", "`w`", "1",
        ] {
            nick(n).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        nick(&"x".repeat(MAX_NICK)).expect("longest");
        room(&format!("#{}", "x".repeat(MAX_ROOM))).expect("longest room");
    }

    #[test]
    fn names_of_one_script_or_a_recommended_mix_pass() {
        for n in [
            "zoë",
            "Zoë",
            "алиса",
            "Ελένη",
            "山田タロウ",
            "김민준",
            "Li李",
            "محمد",
            "דוד",
            "देवनागरी",
            "x\u{00B7}y",
            "ko\u{0301}",
        ] {
            nick(n).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        room("#日本語").expect("room");
    }

    #[test]
    fn normalization_makes_one_name_of_canonically_equivalent_spellings() {
        let composed = "zo\u{00EB}";
        let decomposed = "zoe\u{0308}";
        nick(decomposed).expect("a decomposed nick is checked in NFC");
        assert_eq!(normalize(decomposed), composed);
        assert_eq!(fold(decomposed), fold(composed));
        assert_eq!(fold("ZOE\u{0308}"), composed);
        assert_eq!(look_alike_keys(decomposed), look_alike_keys(composed));
        // Decomposition can lengthen; the limit counts the normalized form.
        let long = "e\u{0301}".repeat(MAX_NICK);
        nick(&long).expect("24 characters once composed");
        assert!(
            nick(&"x".repeat(10_000))
                .expect_err("long")
                .contains("10000 characters")
        );
    }

    /// `nick` takes the input as received, checks its length before normalizing, and returns
    /// the normalized form: callers normalize nothing themselves.
    #[test]
    fn nick_checks_the_raw_length_first_and_returns_the_normalized_form() {
        assert_eq!(nick("zoe\u{0308}").as_deref(), Ok("zo\u{00EB}"));
        assert_eq!(nick("alice").as_deref(), Ok("alice"));
        // NFC composes at most MAX_COMPOSED characters into one that names allow: `ᾢ` is
        // four.
        for c in '\0'..=char::MAX {
            if c.is_ascii() || c.identifier_allowed() {
                assert!(c.nfd().count() <= MAX_COMPOSED, "U+{:04X}", c as u32);
            }
        }
        let four = "\u{03C9}\u{0313}\u{0300}\u{0345}";
        assert_eq!(four.nfc().collect::<String>(), "\u{1FA2}");
        assert_eq!(
            nick(&four.repeat(MAX_NICK)),
            Ok("\u{1FA2}".repeat(MAX_NICK)),
            "96 characters as received, 24 once composed"
        );
        // One more character as received: refused by its raw length, before normalization,
        // naming the count as received.
        let e = nick(&format!("{}x", four.repeat(MAX_NICK))).expect_err("97");
        assert!(e.contains("97 characters"), "{e}");
        let e = nick(&format!("{}x", "\u{00E9}".repeat(MAX_NICK))).expect_err("25");
        assert!(e.contains("25 characters"), "{e}");
        // Rooms likewise.
        room(&format!("#{}", four.repeat(MAX_ROOM))).expect("room of 32 once composed");
    }

    #[test]
    fn look_alike_keys_match_confusables_up_to_case() {
        let k = |n: &str| look_alike_keys(n);
        let shares = |a: &str, b: &str| k(a).iter().any(|x| k(b).contains(x));
        assert!(shares("alice", "aIice"));
        assert!(shares("alice", "a1ice"));
        assert!(shares("Alice", "AIice"));
        assert!(shares("modern", "rnodern"));
        assert!(shares("coco", "\u{0441}\u{043E}\u{0441}\u{043E}")); // Cyrillic
        assert!(shares("paypal", "p\u{0430}yp\u{0430}l"));
        assert!(!shares("alice", "bob"));
        assert!(!shares("alice", "alicia"));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// What an accepted name may contain: printable ASCII, or non-ASCII identifier
        /// characters that UTS #39 allows and that are visible.
        fn allowed(c: char) -> bool {
            matches!(c, '!'..='~')
                || (!c.is_ascii()
                    && unicode_ident::is_xid_continue(c)
                    && c.identifier_allowed()
                    && !is_default_ignorable(c))
        }

        fn any_name() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "\\PC{0,30}",
                "[a-z\u{0430}-\u{044F}\u{0300}-\u{036F}\u{200B}-\u{206F}\u{FE00}-\u{FE0F}#@,\\[\\] ]{0,30}",
                proptest::collection::vec(any::<char>(), 0..40)
                    .prop_map(|v| v.into_iter().collect::<String>()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            #[test]
            fn validators_never_panic_and_accept_only_allowed_characters(n in any_name()) {
                if nick(&n).is_ok() {
                    let m = normalize(&n);
                    prop_assert!(m.chars().all(allowed), "{:?}", m);
                    prop_assert!((1..=MAX_NICK).contains(&m.chars().count()));
                    prop_assert!(!m.starts_with(['#', '@']) && !m.contains(','));
                }
                let r = format!("#{n}");
                if room(&r).is_ok() {
                    let m = normalize(&n);
                    prop_assert!(m.chars().all(allowed), "{:?}", m);
                    prop_assert!(!m.contains(['#', ',']));
                }
                let _ = fold(&n);
                let _ = look_alike_keys(&n);
                let _ = topic(&n);
                let _ = text(&n, 100);
            }
        }
    }
}
