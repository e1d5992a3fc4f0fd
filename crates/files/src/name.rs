//! The receiver's naming rules: an offered name is hostile. It is cut to its last path
//! component, stripped of control and formatting characters, and never `.`, `..`, empty or
//! hidden; an existing name is never overwritten (`name (1).ext`, `name (2).ext`, …).

/// Longest saved name, in bytes (file systems allow 255; room is left for ` (NNN)` and
/// the partial file's `.HHHHHHHHHHHHHHHH.part`).
pub const MAX_SAVED_NAME: usize = 200;

/// The name to save an offered file under: the last component of `offered` (either slash and
/// backslash separate components), without control characters (C0, C1, DEL), bidirectional
/// and other invisible formatting characters, leading dots or spaces and trailing dots or
/// spaces, cut to [`MAX_SAVED_NAME`] bytes at a character boundary. What is left empty (`.`,
/// `..`, `/`, nothing at all) becomes `file`.
pub fn sanitize(offered: &[u8]) -> String {
    let text = String::from_utf8_lossy(offered);
    let last = text.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = last
        .chars()
        .filter(|&c| !c.is_control() && !is_format(c))
        .collect();
    let trimmed = clean.trim_matches(|c: char| c == '.' || c.is_whitespace());
    let mut out = String::new();
    for c in trimmed.chars() {
        if out.len() + c.len_utf8() > MAX_SAVED_NAME {
            break;
        }
        out.push(c);
    }
    let out = out.trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    if out.is_empty() {
        "file".to_owned()
    } else {
        out.to_owned()
    }
}

/// Invisible characters that change how text around them is shown (bidirectional overrides
/// and isolates, zero-width characters, the BOM): a name must look like what it is.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

/// The `n`th alternative of `name`: `name` itself for 0, else ` (n)` before the extension,
/// which starts at the first dot after the first character (`report.pdf` → `report (1).pdf`,
/// `archive.tar.gz` → `archive (1).tar.gz`, `README` → `README (1)`).
pub fn alternative(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    match name.char_indices().skip(1).find(|&(_, c)| c == '.') {
        Some((i, _)) => format!("{} ({n}){}", &name[..i], &name[i..]),
        None => format!("{name} ({n})"),
    }
}

/// Hex digits of the root hash in a partial file's name.
pub const PART_HASH_DIGITS: usize = 16;

/// The partial file's name for a file to be saved as `name` whose root hash is `root`:
/// `NAME.HHHHHHHHHHHHHHHH.part`, the first [`PART_HASH_DIGITS`] hex digits of the hash. The
/// hash ties the partial file to its content: a resume of the same file finds it, and a
/// transfer of another file under the same name never writes into it.
pub fn part_name(name: &str, root: &crate::Hash) -> String {
    let hex = crate::hash_hex(root);
    format!("{name}.{}.part", &hex[..PART_HASH_DIGITS])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_neutralised() {
        let cases: &[(&[u8], &str)] = &[
            (b"../../etc/passwd", "passwd"),
            (b"/etc/shadow", "shadow"),
            (b"..\\..\\windows\\system.ini", "system.ini"),
            (b"", "file"),
            (b".", "file"),
            (b"..", "file"),
            (b"a/..", "file"),
            (b"dir/", "file"),
            (b".bashrc", "bashrc"),
            (b"evil\x1b[2Jname.txt", "evil[2Jname.txt"),
            (b"new\nline.txt", "newline.txt"),
            (b"  spaced .txt . ", "spaced .txt"),
            ("a\u{202e}txt.exe".as_bytes(), "atxt.exe"),
            (b"caf\xc3\xa9.txt", "café.txt"),
            (b"bad\xffutf8", "bad\u{fffd}utf8"),
        ];
        for &(offered, want) in cases {
            assert_eq!(sanitize(offered), want, "{offered:?}");
        }
        let long = "é".repeat(300);
        let s = sanitize(long.as_bytes());
        assert!(s.len() <= MAX_SAVED_NAME && s.chars().all(|c| c == 'é'));
    }

    #[test]
    fn alternatives_keep_the_extension() {
        assert_eq!(alternative("report.pdf", 0), "report.pdf");
        assert_eq!(alternative("report.pdf", 1), "report (1).pdf");
        assert_eq!(alternative("archive.tar.gz", 2), "archive (2).tar.gz");
        assert_eq!(alternative("README", 3), "README (3)");
        let mut root = [0u8; 32];
        root[0] = 0xab;
        root[7] = 0x01;
        root[8] = 0xff;
        assert_eq!(part_name("a.txt", &root), "a.txt.ab00000000000001.part");
    }
}
