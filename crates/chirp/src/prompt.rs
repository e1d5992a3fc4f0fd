//! The interactive questions: with no arguments on a terminal, the addresses (like the classic
//! script); with `chirp peer --lan`, which peer to call.

use std::io::{BufRead, Write};
use std::net::{IpAddr, SocketAddr};

use crate::addr::{parse_ip, parse_port};

/// Most attempts per question before giving up, so a script piping junk cannot loop forever.
const ATTEMPTS: usize = 5;

pub(crate) fn ask<T>(
    question: &str,
    input: &mut impl BufRead,
    out: &mut impl Write,
    parse: impl Fn(&str) -> Result<T, String>,
) -> anyhow::Result<T> {
    for _ in 0..ATTEMPTS {
        write!(out, "{question} ")?;
        out.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            anyhow::bail!("no answer to '{question}' (end of input)");
        }
        match parse(line.trim()) {
            Ok(v) => return Ok(v),
            Err(e) => writeln!(out, "  {e}; try again")?,
        }
    }
    anyhow::bail!("no valid answer to '{question}' after {ATTEMPTS} attempts")
}

/// Asks for bind and target addresses. Returns `(bind, to)`.
pub(crate) fn ask_addresses(
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let my_ip: IpAddr = ask("Enter your IP:", input, out, parse_ip)?;
    let my_port = ask("Enter your port:", input, out, |s| parse_port(s, true))?;
    let to_ip: IpAddr = ask("Enter target IP:", input, out, parse_ip)?;
    let to_port = ask("Enter target port:", input, out, |s| parse_port(s, false))?;
    Ok((
        SocketAddr::new(my_ip, my_port),
        SocketAddr::new(to_ip, to_port),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_validates_and_retries() {
        let mut input = &b"127.0.0.1\n99999\n5000\nnot-an-ip\n::1\n0\n6000\n"[..];
        let mut out = Vec::new();
        let (bind, to) = ask_addresses(&mut input, &mut out).expect("answers");
        assert_eq!(bind, "127.0.0.1:5000".parse().expect("literal"));
        assert_eq!(to, "[::1]:6000".parse().expect("literal"));
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("Enter your IP:"));
        assert!(
            text.contains("port 99999 is out of range (0-65535)"),
            "{text}"
        );
        assert!(text.contains("'not-an-ip' is not an IP address"), "{text}");
        assert!(text.contains("port 0 is out of range (1-65535)"), "{text}");
    }

    #[test]
    fn gives_up_at_end_of_input() {
        let mut input = &b"127.0.0.1\n"[..];
        let err = ask_addresses(&mut input, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("end of input"), "{err}");
    }
}
