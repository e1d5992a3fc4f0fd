//! `chirp peer --lan`: browse the LAN for chirp peers, then list them (`--json`, or no
//! terminal), let the user pick one by number (a terminal), or pick the one named with `--to`.
//! The browsing, the checks of what the network said and the picking by name are
//! `chirp_lan`'s; this is the printing and the question.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::Context as _;
use chirp_lan::{Found, LanPeer};
use serde_json::json;

use crate::output::{Output, print_event};

/// What `--lan` comes to.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The list was printed (or the user chose none): exit with this status.
    Listed(u8),
    /// Call this peer.
    Picked(LanPeer),
}

/// Browses for `window`, then: with `name`, the peer of that name (an error if there is none
/// or it is ambiguous); on a terminal (`interactive`), the user's pick; otherwise the list.
pub(crate) async fn find(
    window: Duration,
    name: Option<&str>,
    out: Output,
    interactive: bool,
) -> anyhow::Result<Outcome> {
    // The browse blocks its thread for the window (the mDNS daemon runs on its own).
    let found = tokio::task::spawn_blocking(move || chirp_lan::browse(window))
        .await
        .context("the LAN browse panicked")?
        .context("cannot browse the LAN")?;
    if let Some(name) = name {
        return match chirp_lan::pick(&found.peers, name) {
            Ok(peer) => Ok(Outcome::Picked(peer)),
            Err(e) => Err(anyhow::anyhow!("{e}{}", daemon_errors(&found))),
        };
    }
    if found.peers.is_empty() {
        let text = format!(
            "no chirp peer answered on the LAN within {} s{}",
            window.as_secs(),
            daemon_errors(&found)
        );
        out.error(&text);
        return Ok(Outcome::Listed(1));
    }
    if out.json {
        for p in &found.peers {
            print_event(
                true,
                String::new,
                json!({
                    "type": "lan_peer",
                    "name": p.name,
                    "address": p.addr.to_string(),
                    "fingerprint": p.fingerprint.to_string(),
                }),
            );
        }
        return Ok(Outcome::Listed(0));
    }
    let list = list_text(&found.peers, window);
    if !interactive {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{list}Call one with: chirp peer --lan --to NAME")
            .and_then(|()| stdout.flush())
            .context("cannot print the list")?;
        return Ok(Outcome::Listed(0));
    }
    let peers = found.peers;
    let picked = tokio::task::spawn_blocking(move || {
        let mut stdout = std::io::stdout();
        write!(stdout, "{list}")?;
        let n = ask_pick(&mut std::io::stdin().lock(), &mut stdout, peers.len())?;
        anyhow::Ok(n.and_then(|n| peers.into_iter().nth(n)))
    })
    .await
    .context("the question panicked")??;
    Ok(match picked {
        Some(peer) => Outcome::Picked(peer),
        None => Outcome::Listed(0),
    })
}

/// "; mDNS reported: ..." when the daemon had errors (why nothing may have been found).
fn daemon_errors(found: &Found) -> String {
    if found.errors.is_empty() {
        return String::new();
    }
    format!("; mDNS reported: {}", found.errors.join("; "))
}

/// The numbered list for a person. The names are already safe to print (`chirp_lan::parse`).
fn list_text(peers: &[LanPeer], window: Duration) -> String {
    let width = peers
        .iter()
        .map(|p| unicode_width::UnicodeWidthStr::width(p.name.as_str()))
        .max()
        .unwrap_or(0);
    let mut s = format!(
        "chirp peers on the LAN (answers within {} s):\n",
        window.as_secs()
    );
    for (i, p) in peers.iter().enumerate() {
        let pad = width - unicode_width::UnicodeWidthStr::width(p.name.as_str());
        s.push_str(&format!(
            "{:>3}. {}{}  {}  key {}\n",
            i + 1,
            p.name,
            " ".repeat(pad),
            p.addr,
            p.fingerprint
        ));
    }
    s.push_str(
        "(An advertised key is a hint, not a proof: the peer's key is checked when it \
         answers, as always.)\n",
    );
    s
}

/// Asks which of `count` peers to call: `Some(index)`, or `None` for `q` (or an empty line).
fn ask_pick(
    input: &mut impl BufRead,
    out: &mut impl Write,
    count: usize,
) -> anyhow::Result<Option<usize>> {
    crate::prompt::ask(
        &format!("Call which peer (1-{count}, q to quit)?"),
        input,
        out,
        |s| {
            if s.is_empty() || s.eq_ignore_ascii_case("q") {
                return Ok(None);
            }
            match s.parse::<usize>() {
                Ok(n) if (1..=count).contains(&n) => Ok(Some(n - 1)),
                _ => Err(format!("'{s}' is not a number from 1 to {count}")),
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, addr: &str) -> LanPeer {
        LanPeer {
            name: name.into(),
            addr: addr.parse().expect("addr"),
            fingerprint: "uazx-xfyy-tgus-q6yc-4ifo-z4sf".parse().expect("fp"),
        }
    }

    #[test]
    fn the_list_is_numbered_and_aligned() {
        let peers = [
            peer("alice", "10.0.0.1:5000"),
            peer("日本", "10.0.0.2:6000"),
        ];
        let text = list_text(&peers, Duration::from_secs(3));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "chirp peers on the LAN (answers within 3 s):");
        assert_eq!(
            lines[1],
            "  1. alice  10.0.0.1:5000  key uazx-xfyy-tgus-q6yc-4ifo-z4sf"
        );
        // A wide name takes two columns a character: the addresses line up.
        assert_eq!(
            lines[2],
            "  2. 日本   10.0.0.2:6000  key uazx-xfyy-tgus-q6yc-4ifo-z4sf"
        );
        assert!(lines[3].contains("hint"));
    }

    #[test]
    fn picking_by_number() {
        let mut out = Vec::new();
        let mut input = &b"0\nthree\n2\n"[..];
        assert_eq!(ask_pick(&mut input, &mut out, 2).expect("answer"), Some(1));
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("'0' is not a number from 1 to 2"), "{text}");
        assert!(text.contains("'three' is not a number"), "{text}");
        let mut input = &b"q\n"[..];
        assert_eq!(ask_pick(&mut input, &mut Vec::new(), 2).expect("q"), None);
        let mut input = &b""[..];
        assert!(ask_pick(&mut input, &mut Vec::new(), 2).is_err());
    }
}
