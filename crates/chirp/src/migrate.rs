//! `chirp migrate`: moves a server's SQLite history into PostgreSQL. The copy is
//! `chirp_store::migrate`; this is its command line, progress bar and summary.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use chirp_store::Database;
use chirp_store::migrate::{self, Progress};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

pub(crate) const EXAMPLES: &str = "\
Copies everything a server keeps in SQLite (chirp.db in its data directory) into PostgreSQL:
messages with their ids, each conversation's last id (so that ids go on where they stopped),
nicks with their owners' keys and last-seen times, topics, and DM delivery cursors. It is one
transaction: the target gets all of it or nothing. The target's schema is created if missing;
a database that already holds any chirp history is refused and left untouched. The SQLite file
is only read: keep it as a backup.

To move a server onto PostgreSQL: stop it (what a running server writes after the copy began
is not copied), run chirp migrate, then start it, or every node of a cluster, with
--database set to the same URL and the same key file (--key-file, or server.key in the data
directory), so that clients' pinned key still holds.

Examples:
  chirp migrate --from /var/lib/chirp/chirp.db --to postgres://chirp@db.example.net/chirp
  chirp migrate --from ~/.local/share/chirp/chirp.db --to postgres://chirp@127.0.0.1:5432/chirp";

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The SQLite database to copy: chirp.db in the server's data directory.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// The PostgreSQL database to copy into (postgres://USER[:PASSWORD]@HOST[:PORT]/DBNAME):
    /// it must exist and hold no chirp history yet.
    #[arg(long, value_name = "URL", value_parser = postgres_url)]
    to: String,
}

/// A `postgres://` URL that parses.
fn postgres_url(s: &str) -> Result<String, String> {
    match Database::parse(s) {
        Ok(Database::Postgres(url)) => Ok(url),
        Ok(Database::Sqlite(_)) => {
            Err("not a PostgreSQL URL: give postgres://USER@HOST/DBNAME".into())
        }
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) async fn run(a: MigrateArgs) -> anyhow::Result<u8> {
    let target = Database::Postgres(a.to.clone()).display();
    let bar = bar()?;
    let started = Instant::now();
    let result = migrate::sqlite_to_postgres(&a.from, &a.to, |p: Progress| {
        bar.set_length(p.total);
        bar.set_position(p.copied);
        bar.set_message(p.table);
    })
    .await;
    bar.finish_and_clear();
    // The store's errors say their cause themselves: as a context, its chain would repeat it.
    let report =
        result.map_err(|e| anyhow!("cannot migrate {} into {target}: {e}", a.from.display()))?;
    writeln!(
        std::io::stdout(),
        "migrated {report} from {} into {target} in {:.1} s",
        a.from.display(),
        started.elapsed().as_secs_f64()
    )
    .context("cannot write to stdout")?;
    Ok(0)
}

/// A progress bar on a terminal; on a pipe, none (only the summary is printed).
fn bar() -> anyhow::Result<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return Ok(ProgressBar::hidden());
    }
    let p = ProgressBar::new(0);
    p.set_style(
        ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} rows ({msg}), ETA {eta}")
            .context("progress bar template")?,
    );
    Ok(p)
}
