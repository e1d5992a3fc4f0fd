//! What a line typed in `chirp peer`'s line mode means: a message, or a `/command`. The
//! command language is the one of [`chirp_tui::command`] (its table, parser and help, in the
//! [`Context::PeerLine`] context); this file only maps it onto what peer mode does, and keeps
//! the typed bytes of a message as they are (peer mode sends any bytes, UTF-8 or not).

use chirp_tui::command::{self, Command, Context};

/// A parsed input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// Bytes to send as one message.
    Message(Vec<u8>),
    /// `/stats`
    Stats,
    /// `/quit`, `/exit`
    Quit,
    /// `/help`, `/?`
    Help,
    /// `/accept [ID]`: trust the key a question is open about, or accept a file offer.
    Accept(Option<u64>),
    /// `/refuse`: refuse it.
    Refuse,
    /// `/send PATH`: offer a file.
    Send(String),
    /// `/decline [ID]`: decline a file offer.
    Decline(Option<u64>),
    /// `/cancel [ID]`: stop sending a file.
    Cancel(Option<u64>),
    /// Any other `/word` (unknown, or a command of `chirp connect` or of the UI): not sent,
    /// reported. Holds the word typed.
    Unknown(String),
}

/// Help text for the commands peer mode understands: [`command::help`] for
/// [`Context::PeerLine`], as a constant (a unit test checks they are the same).
pub(crate) const HELP: &str = "\
commands:
  /stats          show the link statistics: RTT, loss, retransmissions, duplicates, drops
  /accept [ID]    trust the key chirp asked about (a new key from another port of the peer's IP); else accept a file offer (number ID, or the oldest)
  /refuse         refuse that key
  /send PATH      offer a file: to the peer; in chirp connect to a DM buffer's nick (or NICK PATH)
  /decline [ID]   decline a file offer (number ID, or the oldest), or stop receiving it
  /cancel [ID]    stop sending a file (number ID, or the only one); the receiver deletes its part
  /help           this text (also /?)
  /quit [REASON]  leave chirp, once everything you sent is acknowledged (also /exit)
  //TEXT          send a line that starts with '/'
Anything else you type is sent as one message. Ctrl-D (end of input) stops sending and leaves once the peer has everything and has finished too.";

/// Parses one line (without its newline; a trailing `\r` is dropped too).
pub(crate) fn parse(line: &[u8]) -> Input {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match command::parse(&String::from_utf8_lossy(line), Context::PeerLine) {
        Ok(Command::Text(_)) => {
            // The bytes as typed, not the lossy text; `//` stands for one slash.
            let bytes = if line.starts_with(b"//") {
                &line[1..]
            } else {
                line
            };
            Input::Message(bytes.to_vec())
        }
        Ok(Command::Stats) => Input::Stats,
        Ok(Command::Quit { .. }) => Input::Quit,
        Ok(Command::Help) => Input::Help,
        Ok(Command::Accept { id }) => Input::Accept(id),
        Ok(Command::Refuse) => Input::Refuse,
        Ok(Command::Send { path }) => Input::Send(path),
        Ok(Command::Decline { id }) => Input::Decline(id),
        Ok(Command::Cancel { id }) => Input::Cancel(id),
        // `parse` returns only the commands of `Context::PeerLine` (those above); anything
        // else is reported like an unknown command rather than acted on.
        Ok(_) | Err(_) => Input::Unknown(first_word(line)),
    }
}

/// The `/word` a line starts with.
fn first_word(line: &[u8]) -> String {
    let word = line
        .split(u8::is_ascii_whitespace)
        .next()
        .unwrap_or_default();
    String::from_utf8_lossy(word).into_owned()
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
        assert_eq!(parse(b"/accept"), Input::Accept(None));
        assert_eq!(parse(b"/accept 7"), Input::Accept(Some(7)));
        assert_eq!(parse(b"/decline"), Input::Decline(None));
        assert_eq!(parse(b"/cancel"), Input::Cancel(None));
        assert_eq!(parse(b"/cancel 3"), Input::Cancel(Some(3)));
        assert!(matches!(parse(b"/cancel all"), Input::Unknown(_)));
        assert_eq!(
            parse(b"/send /tmp/a b.txt"),
            Input::Send("/tmp/a b.txt".into())
        );
        assert!(matches!(parse(b"/accept x"), Input::Unknown(_)));
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

    /// Every word the old parser knew, and the aliases the one command language adds.
    #[test]
    fn aliases() {
        assert_eq!(parse(b"/exit"), Input::Quit);
        assert_eq!(parse(b"/?"), Input::Help);
        assert_eq!(parse(b"/STATS\r"), Input::Stats);
        assert_eq!(parse(b"/Quit later"), Input::Quit);
    }

    /// Commands of `chirp connect` or of the UI are not peer mode's: reported, never sent.
    #[test]
    fn other_contexts_commands_are_not_sent() {
        for (line, word) in [
            (&b"/join #rust"[..], "/join"),
            (b"/msg bob hi", "/msg"),
            (b"/buffer 2", "/buffer"),
            (b"/history -5", "/history"),
            (b"/", "/"),
        ] {
            assert_eq!(parse(line), Input::Unknown(word.into()));
        }
    }

    /// Peer mode sends bytes as typed, UTF-8 or not.
    #[test]
    fn messages_keep_their_bytes() {
        assert_eq!(parse(b"caf\xe9"), Input::Message(b"caf\xe9".to_vec()));
        assert_eq!(parse(b"//\xff\r"), Input::Message(b"/\xff".to_vec()));
        assert_eq!(parse(b"/\xff"), Input::Unknown("/\u{fffd}".into()));
    }

    #[test]
    fn help_is_the_command_tables() {
        assert_eq!(HELP, command::help(Context::PeerLine));
    }
}
