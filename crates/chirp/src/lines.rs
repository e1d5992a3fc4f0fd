//! Standard input, line by line, with a bound on a line's length: a pasted megabyte (or a file
//! without newlines) is reported as too long and skipped, never held in memory whole.

use tokio::io::{AsyncBufRead, AsyncBufReadExt as _};
use tokio::sync::mpsc;

/// One line of input.
#[derive(Debug)]
pub(crate) enum Line {
    /// A line without its `\n` (a `\r` before it is the reader's to strip).
    Text(Vec<u8>),
    /// A line longer than the bound: `bytes` were skipped up to its end.
    TooLong {
        /// Its length.
        bytes: usize,
    },
    /// Reading failed; nothing more comes.
    Failed(std::io::Error),
}

/// Reads `input` into `lines` until end of input (then the channel closes). The channel is
/// bounded, and this waits for room: a reader that stops taking lines stops the reading.
pub(crate) fn spawn_reader<R>(input: R, max: usize, lines: mpsc::Sender<Line>)
where
    R: AsyncBufRead + Unpin + Send + 'static,
{
    tokio::spawn(read(input, max, lines));
}

async fn read<R: AsyncBufRead + Unpin>(mut input: R, max: usize, lines: mpsc::Sender<Line>) {
    let mut line = Vec::new();
    // Bytes of the current line beyond the bound (then `line` is dropped).
    let mut skipped = 0usize;
    loop {
        let buf = match input.fill_buf().await {
            Ok(b) => b,
            Err(e) => {
                let _ = lines.send(Line::Failed(e)).await;
                return;
            }
        };
        if buf.is_empty() {
            // End of input: a last line without a newline still counts.
            let last = if skipped > 0 {
                Some(Line::TooLong {
                    bytes: skipped + line.len(),
                })
            } else if !line.is_empty() {
                Some(Line::Text(std::mem::take(&mut line)))
            } else {
                None
            };
            if let Some(l) = last {
                let _ = lines.send(l).await;
            }
            return;
        }
        let (chunk, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if skipped > 0 || line.len() + chunk.len() > max {
            skipped += line.len() + chunk.len();
            line = Vec::new();
        } else {
            line.extend_from_slice(chunk);
        }
        let used = end.unwrap_or(buf.len());
        input.consume(used);
        if end.is_some() {
            let l = if skipped > 0 {
                Line::TooLong {
                    bytes: std::mem::take(&mut skipped),
                }
            } else {
                Line::Text(std::mem::take(&mut line))
            };
            if lines.send(l).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(input: &'static [u8], max: usize) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(4);
        // A tiny buffer, so lines cross many reads.
        spawn_reader(tokio::io::BufReader::with_capacity(3, input), max, tx);
        let mut out = Vec::new();
        while let Some(l) = rx.recv().await {
            out.push(match l {
                Line::Text(t) => String::from_utf8(t).expect("test input is UTF-8"),
                Line::TooLong { bytes } => format!("<{bytes}>"),
                Line::Failed(e) => format!("!{e}"),
            });
        }
        out
    }

    #[tokio::test]
    async fn lines_over_the_bound_are_skipped_and_the_rest_go_on() {
        let got = all(b"ab\n0123456789\ncd\n\nlast", 5).await;
        assert_eq!(got, vec!["ab", "<10>", "cd", "", "last"]);
        let got = all(b"12345\n123456", 5).await;
        assert_eq!(got, vec!["12345", "<6>"]);
    }
}
