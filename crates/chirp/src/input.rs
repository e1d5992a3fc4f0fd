//! What a typed line means: a message, or a `/command`. `//` escapes a literal leading slash.

/// A parsed input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// Bytes to send as one message.
    Message(Vec<u8>),
    /// `/stats`
    Stats,
    /// `/quit`
    Quit,
    /// `/help`
    Help,
    /// `/accept`: trust the key a question is open about.
    Accept,
    /// `/refuse`: refuse it.
    Refuse,
    /// Any other `/word`: not sent, reported.
    Unknown(String),
}

/// Help text for the commands peer mode understands.
pub(crate) const HELP: &str = "\
commands:
  /stats   link statistics: RTT, loss, retransmissions, duplicates, reordering, drops
  /quit    leave (waits until everything you sent is acknowledged)
  /help    this text
  /accept  trust the key chirp asked about (a new key from another port of the peer's IP)
  /refuse  refuse that key
  //text   send a line that starts with '/'
Anything else you type is sent as one message. Ctrl-D (end of input) leaves like /quit.";

/// Parses one line (without its newline; a trailing `\r` is dropped too).
pub(crate) fn parse(line: &[u8]) -> Input {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(rest) = line.strip_prefix(b"//") {
        let mut m = Vec::with_capacity(rest.len() + 1);
        m.push(b'/');
        m.extend_from_slice(rest);
        return Input::Message(m);
    }
    if line.first() == Some(&b'/') {
        let word = String::from_utf8_lossy(line);
        let cmd = word.split_whitespace().next().unwrap_or("/");
        return match cmd {
            "/stats" => Input::Stats,
            "/quit" | "/exit" => Input::Quit,
            "/help" | "/?" => Input::Help,
            "/accept" => Input::Accept,
            "/refuse" => Input::Refuse,
            other => Input::Unknown(other.to_owned()),
        };
    }
    Input::Message(line.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_escapes() {
        assert_eq!(parse(b"hello"), Input::Message(b"hello".to_vec()));
        assert_eq!(parse(b"hello\r"), Input::Message(b"hello".to_vec()));
        assert_eq!(parse(b""), Input::Message(vec![]));
        assert_eq!(parse(b"/stats"), Input::Stats);
        assert_eq!(parse(b"/quit now"), Input::Quit);
        assert_eq!(parse(b"/help"), Input::Help);
        assert_eq!(parse(b"/accept"), Input::Accept);
        assert_eq!(parse(b"/refuse"), Input::Refuse);
        assert_eq!(parse(b"yes"), Input::Message(b"yes".to_vec()));
        assert_eq!(parse(b"//stats"), Input::Message(b"/stats".to_vec()));
        assert_eq!(parse(b"//"), Input::Message(b"/".to_vec()));
        assert_eq!(parse(b"/frob x"), Input::Unknown("/frob".into()));
        assert_eq!(
            parse(b"not /a command"),
            Input::Message(b"not /a command".to_vec())
        );
    }
}
