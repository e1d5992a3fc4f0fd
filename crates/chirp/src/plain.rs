//! `--plain`: the classic UDP chat, byte-compatible with the two-line script and `nc -u`.
//!
//! Each input line goes out as one datagram (its UTF-8 bytes, no newline) to `--to`; every
//! datagram arriving on `--bind` is printed, whatever its source. Nothing is acknowledged,
//! retransmitted, ordered or encrypted, and the banner says so.
//!
//! Anyone who can reach the port can send a datagram, so what is printed is shown harmlessly:
//! control and bidi characters as marks (`^[`, `<U+202E>`), bytes that are not UTF-8 as
//! `\xNN` (see `chirp_tui::safe`). `--raw` prints the bytes as they came instead, for a
//! program reading the output; on a terminal that hands the terminal to every sender.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::io::AsyncBufReadExt as _;
use tokio::net::UdpSocket;

use crate::input::{self, Input};
use crate::output::Output;

/// Runs plain mode until end of input or `/quit`. Returns the exit code. With `raw`, received
/// datagrams are printed byte for byte (never with `json`, which clap rules out).
pub(crate) async fn run(
    bind: SocketAddr,
    to: SocketAddr,
    json: bool,
    raw: bool,
) -> anyhow::Result<u8> {
    let socket = UdpSocket::from_std(crate::bind_socket(bind)?).context("cannot use the socket")?;
    let out = Output { json, path: None };
    let local = socket
        .local_addr()
        .context("cannot read the local address")?;
    out.status(&format!(
        "plain UDP on {local}, sending to {to}: UNRELIABLE and UNENCRYPTED (lines may be lost, \
         duplicated or reordered, and anyone on the path can read or forge them)"
    ));
    if raw {
        out.status(
            "--raw: received datagrams are printed byte for byte, escape sequences included; \
             on a terminal, anyone who can send to this port can drive it",
        );
    }
    let mut buf = vec![0u8; chirp_transport::RECV_BUFFER];
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).split(b'\n');
    let (mut sent, mut received) = ((0u64, 0u64), (0u64, 0u64));
    loop {
        tokio::select! {
            line = stdin.next_segment() => {
                let Some(line) = line.context("cannot read standard input")? else {
                    return Ok(0);
                };
                match input::parse(&line) {
                    Input::Message(m) => match socket.send_to(&m, to).await {
                        Ok(_) => {
                            sent.0 += 1;
                            sent.1 += m.len() as u64;
                        }
                        // UDP gives no delivery guarantee anyway; report and carry on.
                        Err(e) => out.error(&format!("could not send to {to}: {e}")),
                    },
                    Input::Stats => out.plain_stats(sent, received),
                    Input::Quit => return Ok(0),
                    Input::Help => out.info(input::HELP),
                    Input::Accept(_) | Input::Refuse => out.error(
                        "--plain has no keys to accept or refuse: it is neither authenticated nor encrypted",
                    ),
                    Input::Send(_) | Input::Decline(_) | Input::Cancel(_) => {
                        out.error("--plain has no file transfer: use chirp peer without --plain")
                    }
                    Input::Unknown(cmd) => out.error(&format!(
                        "unknown command {cmd} (not sent); /help lists commands, //text sends a literal /"
                    )),
                }
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    received.0 += 1;
                    received.1 += n as u64;
                    if raw {
                        out.message_raw(&from.to_string(), &buf[..n]);
                    } else {
                        out.message(&from.to_string(), &buf[..n]);
                    }
                }
                // An ICMP error for an earlier datagram (nobody listening at `to`): not fatal.
                Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset) => {}
                Err(e) => return Err(e).context("cannot receive"),
            },
            _ = tokio::signal::ctrl_c() => return Ok(130),
        }
    }
}
