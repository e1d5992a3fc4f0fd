//! The whole UI state and what inputs do to it. No I/O and no clock: every input comes with
//! `now`, and the runner (or a test) decides when to draw.

use std::collections::{HashMap, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::Rect;

use crate::api::{
    BufferId, ChatMessage, LinkState, LinkStatus, ReactionCount, UiCommand, UiEvent, UnixMs,
};
use crate::buffer::{Buffer, Entry, EntryKind, EventKind, History, SendState};
use crate::command::{self, Command, Context};
use crate::complete::{Completion, Sources};
use crate::editor::Editor;
use crate::view;

/// Settings of the UI.
#[derive(Debug, Clone)]
pub struct Config {
    /// The largest message (UTF-8 bytes) the input line lets through; longer ones get an error
    /// and stay in the input line. [`UiEvent::MessageLimit`] replaces it.
    pub max_message_bytes: usize,
    /// Ring the terminal bell on highlights (mentions of our nick, direct messages).
    pub bell: bool,
    /// Show the member list of rooms (Alt+M toggles it).
    pub show_members: bool,
    /// Local time zone as an offset from UTC in seconds, for timestamps and day-change lines.
    /// The runner sets it from the system's zone; tests keep 0 (UTC).
    pub utc_offset_secs: i32,
    /// Messages asked for per [`UiCommand::FetchHistory`].
    pub history_page: u32,
    /// Lines kept per buffer; older ones are dropped (and can be fetched again).
    pub max_lines: usize,
    /// Peer mode (`chirp peer`): one conversation with one peer and no server, so the
    /// commands about rooms, nicks and other people are refused (with the reason) and left
    /// out of `/help` and Tab completion.
    pub peer: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_message_bytes: 8 * 1024,
            bell: true,
            show_members: true,
            utc_offset_secs: 0,
            history_page: 100,
            max_lines: 10_000,
            peer: false,
        }
    }
}

/// RTT samples kept for the `/stats` sparkline (one per [`UiEvent::Link`], about 1/s).
const RTT_SAMPLES: usize = 300;
/// The least time between two typing notices to one conversation: the server forwards no
/// more than one every 3 s (PROTOCOL.md, "Edits, deletions, reactions, typing").
pub(crate) const TYPING_EVERY_MS: UnixMs = 3_000;
/// How long "… is typing" shows after a notice (a typist sends one every 3 s).
pub(crate) const TYPING_SHOWN_MS: UnixMs = 5_000;
/// How long a viewed buffer waits before its read marker goes out, so that a burst of
/// messages (or a quick pass through buffers) sends one marker, not one per message or key.
pub(crate) const READ_DELAY_MS: UnixMs = 1_000;
/// Most reactions kept per message (the server allows 20 different emojis).
const MAX_REACTIONS: usize = 20;

/// Incremental search through the loaded lines of the current buffer (Ctrl+R, `/search`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Search {
    pub(crate) query: String,
    /// The entry found, if any.
    pub(crate) found: Option<u64>,
    /// The query matched nothing (older than the last match, for a repeated Ctrl+R).
    pub(crate) failed: bool,
}

/// The terminal chat UI as pure state.
///
/// Feed it inputs — [`App::handle_key`], [`App::handle_paste`], [`App::handle_event`],
/// [`App::handle_timeout`] — each with the current time, send the [`UiCommand`]s they return
/// and then those of [`App::take_commands`] (read markers, typing notices) to the network,
/// and call [`App::render`] when [`App::take_dirty`] says something changed. Call
/// `handle_timeout` at [`App::poll_timeout`] (the reconnect countdown, typing notices expiring
/// and read markers falling due need it).
#[derive(Debug)]
pub struct App {
    pub(crate) config: Config,
    pub(crate) now: UnixMs,
    pub(crate) nick: Option<String>,
    /// `buffers[0]` is the status buffer; the others in the order they were opened.
    pub(crate) buffers: Vec<Buffer>,
    pub(crate) current: usize,
    pub(crate) editor: Editor,
    completion: Option<Completion>,
    pub(crate) search: Option<Search>,
    pub(crate) show_stats: bool,
    pub(crate) show_members: bool,
    pub(crate) link: LinkStatus,
    /// When the next reconnect attempt starts, while reconnecting.
    pub(crate) reconnect_at: Option<UnixMs>,
    /// RTT samples in microseconds, oldest first.
    pub(crate) rtt_samples: VecDeque<u64>,
    /// Rooms seen in `/list` answers, for completion.
    known_rooms: Vec<String>,
    /// A question ([`UiEvent::Ask`]) waiting for a `y` or `n` key.
    asking: bool,
    /// File offers waiting for an answer, oldest first (Alt+Y/Alt+N answer the first when no
    /// question is open).
    file_offers: Vec<u64>,
    /// The file transfers' progress line, for the status bar.
    pub(crate) file_progress: Option<String>,
    /// Buffer of each pending local id.
    pending: HashMap<u64, BufferId>,
    /// Commands the App decided on by itself (typing notices, read markers), for
    /// [`App::take_commands`].
    queued: Vec<UiCommand>,
    /// When the current buffer's read marker goes out, if it has unread ids in view.
    read_at: Option<UnixMs>,
    /// The last server `/search`: buffer, words, and the id the next page starts below.
    last_search: Option<(BufferId, String, Option<u64>)>,
    /// Message ids shown (Alt+I, `/ids`); also while a `/edit`, `/delete`, `/react` or
    /// `/unreact` is being typed.
    show_ids: bool,
    next_local_id: u64,
    next_seq: u64,
    dirty: bool,
    bell: bool,
    full_redraw: bool,
    /// The message pane as last drawn: scrolling moves by its height, and wrapping for
    /// scroll bookkeeping uses its width.
    pub(crate) msg_area: Rect,
}

impl App {
    /// A UI with only the status buffer.
    pub fn new(config: Config) -> App {
        App {
            show_members: config.show_members,
            config,
            now: 0,
            nick: None,
            buffers: vec![Buffer::new(BufferId::Status)],
            current: 0,
            editor: Editor::default(),
            completion: None,
            search: None,
            show_stats: false,
            link: LinkStatus::default(),
            reconnect_at: None,
            rtt_samples: VecDeque::new(),
            known_rooms: Vec::new(),
            asking: false,
            file_offers: Vec::new(),
            file_progress: None,
            pending: HashMap::new(),
            queued: Vec::new(),
            read_at: None,
            last_search: None,
            show_ids: false,
            next_local_id: 1,
            next_seq: 1,
            dirty: true,
            bell: false,
            full_redraw: false,
            msg_area: Rect::new(0, 0, 80, 20),
        }
    }

    // ----- queries for the runner and tests -----

    /// Whether anything visible changed since the last call; the runner draws only then.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Whether the terminal bell should ring (a highlight arrived with the bell on).
    pub fn take_bell(&mut self) -> bool {
        std::mem::take(&mut self.bell)
    }

    /// Whether the whole screen should be repainted (Ctrl+L).
    pub fn take_full_redraw(&mut self) -> bool {
        std::mem::take(&mut self.full_redraw)
    }

    /// When [`App::handle_timeout`] is next needed, if ever: once a second during a reconnect
    /// countdown, when a "… is typing" notice expires, and when a viewed buffer's read marker
    /// is due; never otherwise, so an idle UI sleeps.
    pub fn poll_timeout(&self) -> Option<UnixMs> {
        // The next time the displayed whole number of seconds changes.
        let countdown = self
            .reconnect_at
            .filter(|&at| at > self.now)
            .map(|at| self.now + (at - self.now - 1) % 1000 + 1);
        let typing = self
            .buffers
            .iter()
            .flat_map(|b| b.typing.iter().map(|&(_, until)| until))
            .min();
        [countdown, typing, self.read_at]
            .into_iter()
            .flatten()
            .filter(|&at| at > self.now)
            .min()
    }

    /// Commands the App decided on by itself after an event, a timeout or a paste (read
    /// markers, typing notices): hand them to the network like those [`App::handle_key`]
    /// returns (which includes its own).
    pub fn take_commands(&mut self) -> Vec<UiCommand> {
        std::mem::take(&mut self.queued)
    }

    /// Whether message ids are shown: toggled with Alt+I or `/ids`, and always while a
    /// command that takes one (`/edit`, `/delete`, `/react`, `/unreact`) is being typed.
    pub fn ids_shown(&self) -> bool {
        if self.show_ids {
            return true;
        }
        let text = self.editor.text();
        let word = text.split_whitespace().next().unwrap_or("");
        text.starts_with('/')
            && command::lookup(word).is_some_and(|s| {
                matches!(
                    s.name,
                    command::Name::Edit
                        | command::Name::Delete
                        | command::Name::React
                        | command::Name::Unreact
                )
            })
    }

    /// Who is typing in the current buffer now, first come first.
    pub fn typing_now(&self) -> Vec<&str> {
        self.buffers[self.current]
            .typing
            .iter()
            .filter(|&&(_, until)| until > self.now)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// The current buffer.
    pub fn current_buffer(&self) -> &BufferId {
        &self.buffers[self.current].id
    }

    /// All buffers, in display order, with their unread and highlight counts.
    pub fn buffer_list(&self) -> Vec<(BufferId, u32, u32)> {
        self.buffers
            .iter()
            .map(|b| (b.id.clone(), b.unread, b.highlights))
            .collect()
    }

    /// The input line.
    pub fn input(&self) -> &str {
        self.editor.text()
    }

    /// Sets the local time zone (the runner checks it now and then, for daylight saving).
    pub fn set_utc_offset(&mut self, secs: i32) {
        if self.config.utc_offset_secs != secs {
            self.config.utc_offset_secs = secs;
            self.dirty = true;
        }
    }

    /// Draws the whole UI into `frame`.
    pub fn render(&mut self, frame: &mut Frame<'_>) {
        view::render(self, frame);
    }

    // ----- inputs -----

    /// The terminal changed size: everything is drawn again (the layout adapts in
    /// [`App::render`]).
    pub fn handle_resize(&mut self) {
        self.dirty = true;
    }

    /// The network side is gone (its event channel closed): the status bar says so, pending
    /// messages are marked failed, and the conversation stays readable until the user quits.
    pub fn network_gone(&mut self, now: UnixMs) {
        self.now = now;
        let mut status = self.link.clone();
        status.state = LinkState::Disconnected("the network task ended".to_owned());
        self.link_update(status);
        let pending: Vec<u64> = self.pending.keys().copied().collect();
        for local_id in pending {
            self.handle_event(
                UiEvent::Failed {
                    local_id,
                    reason: "disconnected".to_owned(),
                },
                now,
            );
        }
        self.dirty = true;
    }

    /// Time passed: call at [`App::poll_timeout`], then [`App::take_commands`].
    pub fn handle_timeout(&mut self, now: UnixMs) {
        self.now = now;
        if self.reconnect_at.is_some() {
            self.dirty = true;
        }
        self.settle();
    }

    /// After every input: forgets expired typing notices and sends the current buffer's read
    /// marker when it is due.
    fn settle(&mut self) {
        let now = self.now;
        for (i, b) in self.buffers.iter_mut().enumerate() {
            let before = b.typing.len();
            b.typing.retain(|&(_, until)| until > now);
            if i == self.current && b.typing.len() != before {
                self.dirty = true;
            }
        }
        self.check_read();
    }

    /// The read marker of the buffer in view: once it shows, at its bottom, ids newer than
    /// the marker, the newest of them is sent [`READ_DELAY_MS`] later (so a burst sends one),
    /// if it is still in view then.
    fn check_read(&mut self) {
        let now = self.now;
        let peer = self.config.peer;
        let b = &mut self.buffers[self.current];
        let conversation = match b.id {
            BufferId::Room(_) => b.joined,
            BufferId::Dm(_) => true,
            BufferId::Status => false,
        };
        let newest = b.newest_id.filter(|&n| n > b.read_id);
        let Some(id) = newest.filter(|_| !peer && conversation && b.scroll == 0) else {
            self.read_at = None;
            return;
        };
        match self.read_at {
            None => self.read_at = Some(now + READ_DELAY_MS),
            Some(at) if at <= now => {
                b.read_id = id;
                self.read_at = None;
                self.queued.push(UiCommand::Read {
                    buffer: b.id.clone(),
                    id,
                });
            }
            Some(_) => {}
        }
    }

    /// The user typed into a message (not a command) for a room or DM: tells the server, at
    /// most once every [`TYPING_EVERY_MS`] per buffer.
    fn typing_notice(&mut self) {
        if self.config.peer {
            return;
        }
        let text = self.editor.text();
        let command = text.starts_with('/') && !text.starts_with("//");
        if command || text.trim().is_empty() {
            return;
        }
        let now = self.now;
        let b = &mut self.buffers[self.current];
        let conversation = match b.id {
            BufferId::Room(_) => b.joined,
            BufferId::Dm(_) => true,
            BufferId::Status => false,
        };
        if !conversation || b.typing_sent.is_some_and(|at| now < at + TYPING_EVERY_MS) {
            return;
        }
        b.typing_sent = Some(now);
        self.queued.push(UiCommand::Typing {
            buffer: b.id.clone(),
        });
    }

    /// A bracketed paste: inserted as is, newlines included, so that Enter sends a multi-line
    /// paste as one message.
    pub fn handle_paste(&mut self, text: &str, now: UnixMs) {
        self.now = now;
        self.dirty = true;
        self.completion = None;
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        if let Some(search) = &mut self.search {
            search.query.push_str(&text.replace('\n', " "));
            self.search_update(false);
            return;
        }
        self.editor.insert_str(&text);
        self.buffers[self.current].input_history.reset();
        self.typing_notice();
        self.settle();
    }

    /// A key press; returns what to ask of the network (with [`App::take_commands`]'s).
    pub fn handle_key(&mut self, key: KeyEvent, now: UnixMs) -> Vec<UiCommand> {
        self.now = now;
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        let mut out = self.on_key(key);
        self.settle();
        out.append(&mut self.queued);
        out
    }

    fn on_key(&mut self, key: KeyEvent) -> Vec<UiCommand> {
        self.dirty = true;
        let mut out = Vec::new();
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);

        if ctrl && key.code == KeyCode::Char('c') {
            out.push(UiCommand::Quit { reason: None });
            return out;
        }
        if self.asking && alt {
            // Deliberate keys only: a question can arrive at any moment, while the user is
            // typing, so no plain letter may answer it.
            let answer = match key.code {
                KeyCode::Char('y' | 'Y') => Some(true),
                KeyCode::Char('n' | 'N') => Some(false),
                _ => None,
            };
            if let Some(yes) = answer {
                self.asking = false;
                self.info(if yes { "answered: yes" } else { "answered: no" });
                out.push(UiCommand::Answer(yes));
                return out;
            }
        }
        if !self.asking && alt && !self.file_offers.is_empty() {
            // The same deliberate keys answer the oldest file offer.
            let id = self.file_offers[0];
            let cmd = match key.code {
                KeyCode::Char('y' | 'Y') => Some(UiCommand::AcceptFile(Some(id))),
                KeyCode::Char('n' | 'N') => Some(UiCommand::DeclineFile(Some(id))),
                _ => None,
            };
            if let Some(cmd) = cmd {
                self.file_offers.remove(0);
                out.push(cmd);
                return out;
            }
        }
        if self.search.is_some() && self.search_key(key) {
            return out;
        }
        if !matches!(key.code, KeyCode::Tab | KeyCode::BackTab) {
            self.completion = None;
        }
        match key.code {
            KeyCode::Enter if alt => self.editor.insert_char('\n'),
            KeyCode::Enter => self.submit(&mut out),
            KeyCode::Tab => self.complete(true),
            KeyCode::BackTab => self.complete(false),
            KeyCode::Esc => {
                self.show_stats = false;
                self.buffers[self.current].scroll = 0;
            }
            KeyCode::F(2) => self.show_members = !self.show_members,
            KeyCode::F(3) => self.show_stats = !self.show_stats,
            KeyCode::PageUp => self.page_up(&mut out),
            KeyCode::PageDown => self.page_down(),
            KeyCode::Up if alt => self.switch_relative(-1),
            KeyCode::Down if alt => self.switch_relative(1),
            KeyCode::Up => {
                let current = self.editor.text().to_owned();
                if let Some(line) = self.buffers[self.current].input_history.up(&current) {
                    self.editor.set(line);
                }
            }
            KeyCode::Down => {
                if let Some(line) = self.buffers[self.current].input_history.down() {
                    self.editor.set(line);
                }
            }
            KeyCode::Left if ctrl || alt => self.editor.word_left(),
            KeyCode::Right if ctrl || alt => self.editor.word_right(),
            KeyCode::Left => self.editor.left(),
            KeyCode::Right => self.editor.right(),
            KeyCode::Home => self.editor.home(),
            KeyCode::End => self.editor.end(),
            KeyCode::Backspace if ctrl || alt => self.edit(Editor::delete_word_back),
            KeyCode::Backspace => self.edit(Editor::backspace),
            KeyCode::Delete if ctrl || alt => self.edit(Editor::delete_word_forward),
            KeyCode::Delete => self.edit(Editor::delete),
            KeyCode::Char(c) if alt && c.is_ascii_digit() => {
                // Alt+1 is the first buffer, Alt+0 the tenth.
                let n = c.to_digit(10).expect("is_ascii_digit checked"); // guarded by the match
                let index = if n == 0 { 9 } else { n as usize - 1 };
                if index < self.buffers.len() {
                    self.switch_to(index);
                }
            }
            KeyCode::Char(c) if alt => match c.to_ascii_lowercase() {
                'a' => self.next_unread(),
                'i' => self.show_ids = !self.show_ids,
                'r' => self.retry(&mut out),
                'm' => self.show_members = !self.show_members,
                'b' => self.editor.word_left(),
                'f' => self.editor.word_right(),
                'd' => self.edit(Editor::delete_word_forward),
                _ => self.dirty = false,
            },
            KeyCode::Char(c) if ctrl => match c.to_ascii_lowercase() {
                'a' => self.editor.home(),
                'e' => self.editor.end(),
                'b' => self.editor.left(),
                'f' => self.editor.right(),
                'w' => self.edit(Editor::delete_word_back),
                // Many terminals send ^H for Backspace.
                'h' => self.edit(Editor::backspace),
                'u' => self.edit(Editor::kill_to_start),
                'k' => self.edit(Editor::kill_to_end),
                'n' => self.switch_relative(1),
                'p' => self.switch_relative(-1),
                'r' => {
                    self.search = Some(Search::default());
                }
                'l' => self.full_redraw = true,
                'd' if self.editor.is_empty() => out.push(UiCommand::Quit { reason: None }),
                'd' => self.edit(Editor::delete),
                _ => self.dirty = false,
            },
            KeyCode::Char(c) => {
                self.editor.insert_char(c);
                self.buffers[self.current].input_history.reset();
                self.typing_notice();
            }
            _ => self.dirty = false,
        }
        out
    }

    fn edit(&mut self, f: fn(&mut Editor)) {
        f(&mut self.editor);
        self.buffers[self.current].input_history.reset();
    }

    /// Keys while searching. Returns false to let the key act normally (leaving search).
    fn search_key(&mut self, key: KeyEvent) -> bool {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('r') if ctrl => self.search_update(true),
            KeyCode::Char('g') if ctrl => self.search_cancel(),
            KeyCode::Esc => self.search_cancel(),
            KeyCode::Enter => self.search = None,
            KeyCode::Backspace => {
                if let Some(s) = &mut self.search {
                    s.query.pop();
                }
                self.search_update(false);
            }
            KeyCode::Char(c) if !ctrl && !key.modifiers.contains(KeyModifiers::ALT) => {
                if let Some(s) = &mut self.search {
                    s.query.push(c);
                }
                self.search_update(false);
            }
            _ => {
                self.search = None;
                return false;
            }
        }
        true
    }

    fn search_cancel(&mut self) {
        self.search = None;
        self.buffers[self.current].scroll = 0;
    }

    /// Finds the newest entry matching the query (or, with `older`, the next one above the
    /// current match) and scrolls it into view.
    fn search_update(&mut self, older: bool) {
        let Some(search) = &self.search else { return };
        let query = search.query.to_lowercase();
        let before = if older { search.found } else { None };
        let buffer = &self.buffers[self.current];
        let found = if query.is_empty() {
            None
        } else {
            let limit = before
                .and_then(|seq| buffer.entries.iter().position(|e| e.seq == seq))
                .unwrap_or(buffer.entries.len());
            buffer
                .entries
                .range(..limit)
                .rev()
                .find(|e| e.text().to_lowercase().contains(&query))
                .map(|e| e.seq)
        };
        let (found, failed) = match (found, older) {
            // A repeated Ctrl+R past the oldest match keeps the match and says so.
            (None, true) if before.is_some() => (before, true),
            (f, _) => (f, f.is_none() && !query.is_empty()),
        };
        if let Some(seq) = found {
            let width = self.msg_area.width as usize;
            let below = view::rows_below(self, &self.buffers[self.current], seq, width);
            // Put the match a third of the way up the pane, so context below it shows too.
            let lift = (self.msg_area.height as usize / 3).min(below);
            self.buffers[self.current].scroll = below - lift;
        }
        if let Some(s) = &mut self.search {
            s.found = found;
            s.failed = failed;
        }
    }

    fn complete(&mut self, forward: bool) {
        if let Some(c) = &mut self.completion {
            if c.is_current(&self.editor) {
                c.cycle(&mut self.editor, forward);
                return;
            }
        }
        let buffer = &self.buffers[self.current];
        let mut rooms: Vec<&str> = self
            .buffers
            .iter()
            .filter_map(|b| match &b.id {
                BufferId::Room(r) => Some(r.as_str()),
                _ => None,
            })
            .collect();
        rooms.extend(self.known_rooms.iter().map(String::as_str));
        let sources = Sources {
            nicks: buffer.completion_nicks(),
            rooms,
            peer: self.config.peer,
        };
        self.completion = Completion::start(&mut self.editor, &sources);
    }

    // ----- buffers -----

    fn index_of(&self, id: &BufferId) -> Option<usize> {
        self.buffers.iter().position(|b| &b.id == id)
    }

    /// The buffer for `id`, opened (at the end of the list) if needed.
    fn buffer_index(&mut self, id: &BufferId) -> usize {
        if let Some(i) = self.index_of(id) {
            return i;
        }
        self.buffers.push(Buffer::new(id.clone()));
        self.buffers.len() - 1
    }

    /// Shows buffer `index`. The buffer left remembers its last line, so that the unread
    /// marker can be drawn there when the user comes back.
    fn switch_to(&mut self, index: usize) {
        if index == self.current || index >= self.buffers.len() {
            return;
        }
        self.search = None;
        self.read_at = None;
        let old = &mut self.buffers[self.current];
        old.marker_after = old.entries.back().map(|e| e.seq);
        self.current = index;
        let new = &mut self.buffers[index];
        new.unread = 0;
        new.highlights = 0;
    }

    fn switch_relative(&mut self, delta: isize) {
        let n = self.buffers.len() as isize;
        let next = (self.current as isize + delta).rem_euclid(n) as usize;
        self.switch_to(next);
    }

    /// Alt+A: the next buffer with highlights, or else with unread messages, after the
    /// current one.
    fn next_unread(&mut self) {
        let n = self.buffers.len();
        let order = (1..n).map(|k| (self.current + k) % n);
        let target = order
            .clone()
            .find(|&i| self.buffers[i].highlights > 0)
            .or_else(|| order.clone().find(|&i| self.buffers[i].unread > 0));
        if let Some(i) = target {
            self.switch_to(i);
        }
    }

    /// `/buffer NAME|N`: a number (as in the list) or a name, exact or by unique prefix.
    fn switch_by_name(&mut self, name: &str) -> Result<(), String> {
        if let Ok(n) = name.parse::<usize>() {
            if n >= 1 && n <= self.buffers.len() {
                self.switch_to(n - 1);
                return Ok(());
            }
            return Err(format!("no buffer {n}"));
        }
        let lower = name.to_lowercase();
        if let Some(i) = self
            .buffers
            .iter()
            .position(|b| b.id.name().to_lowercase() == lower)
        {
            self.switch_to(i);
            return Ok(());
        }
        let matches: Vec<usize> = (0..self.buffers.len())
            .filter(|&i| self.buffers[i].id.name().to_lowercase().contains(&lower))
            .collect();
        match matches.as_slice() {
            [i] => {
                self.switch_to(*i);
                Ok(())
            }
            [] => Err(format!("no buffer matches {name}")),
            _ => Err(format!("{name} matches several buffers")),
        }
    }

    fn close_current(&mut self, out: &mut Vec<UiCommand>) {
        match self.buffers[self.current].id.clone() {
            BufferId::Status => self.error("the status buffer stays open"),
            BufferId::Room(room) => {
                if self.buffers[self.current].joined {
                    out.push(UiCommand::Part { room, reason: None });
                }
                self.remove_current();
            }
            // In peer mode the peer's conversation is the chat itself, and nothing could
            // reopen it.
            BufferId::Dm(_) if self.config.peer => {
                self.error("the conversation with the peer stays open; /quit leaves chirp");
            }
            BufferId::Dm(_) => self.remove_current(),
        }
    }

    fn remove_current(&mut self) {
        self.buffers.remove(self.current);
        self.current = self.current.saturating_sub(1).min(self.buffers.len() - 1);
        let b = &mut self.buffers[self.current];
        b.unread = 0;
        b.highlights = 0;
    }

    // ----- lines -----

    fn next_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Appends a live entry to buffer `index`, keeping the view still if the user scrolled
    /// up, and trimming the oldest lines past the limit.
    fn push_entry(&mut self, index: usize, ts: UnixMs, kind: EntryKind) {
        let seq = self.next_seq();
        let entry = Entry { seq, ts, kind };
        let width = self.msg_area.width as usize;
        if self.buffers[index].scroll > 0 {
            let prev = self.buffers[index].entries.back();
            let rows = view::entry_rows_with_separators(self, prev, &entry, width);
            self.buffers[index].scroll += rows;
        }
        let buffer = &mut self.buffers[index];
        buffer.entries.push_back(entry);
        if buffer.entries.len() > self.config.max_lines {
            buffer.entries.pop_front();
            if buffer.history == History::Complete && buffer.id != BufferId::Status {
                buffer.history = History::More;
            }
        }
        self.dirty = true;
    }

    fn event_line(&mut self, index: usize, ts: UnixMs, kind: EventKind, text: String) {
        self.push_entry(index, ts, EntryKind::Event { kind, text });
    }

    /// An error in the current buffer.
    fn error(&mut self, text: impl Into<String>) {
        let now = self.now;
        self.event_line(self.current, now, EventKind::Error, text.into());
    }

    fn info(&mut self, text: impl Into<String>) {
        let now = self.now;
        self.event_line(self.current, now, EventKind::Info, text.into());
    }

    fn mentions_me(&self, text: &str) -> bool {
        let Some(nick) = &self.nick else { return false };
        if nick.is_empty() {
            return false;
        }
        let text = text.to_lowercase();
        let nick = nick.to_lowercase();
        let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
        let mut from = 0;
        while let Some(pos) = text[from..].find(&nick) {
            let start = from + pos;
            let end = start + nick.len();
            let before_ok = text[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !is_word(c));
            let after_ok = text[end..].chars().next().is_none_or(|c| !is_word(c));
            if before_ok && after_ok {
                return true;
            }
            from = start + text[start..].chars().next().map_or(1, char::len_utf8);
        }
        false
    }

    fn add_message(&mut self, buffer: &BufferId, msg: ChatMessage, own: bool) {
        if *buffer == BufferId::Status {
            return;
        }
        let index = self.buffer_index(buffer);
        if let Some(id) = msg.id {
            if self.buffers[index].has_id(id) {
                return;
            }
        }
        if let Some(id) = msg.id {
            self.buffers[index].saw_id(id);
        }
        // Their message is what they were typing.
        self.buffers[index].stopped_typing(&msg.from);
        let own = own || self.nick.as_deref() == Some(msg.from.as_str());
        if own && self.echo_confirms_pending(index, &msg) {
            return;
        }
        let mention = !own && self.mentions_me(&msg.text);
        let is_dm = matches!(buffer, BufferId::Dm(_));
        let highlight = mention || (is_dm && !own);
        self.push_entry(
            index,
            msg.ts,
            EntryKind::Chat {
                id: msg.id,
                from: msg.from,
                text: msg.text,
                action: msg.action,
                own,
                highlight: mention,
                send: SendState::None,
                edited: msg.edited,
                deleted: msg.deleted,
                reactions: msg.reactions,
            },
        );
        if own {
            return;
        }
        if index != self.current {
            let b = &mut self.buffers[index];
            b.unread += 1;
            if highlight {
                b.highlights += 1;
            }
        }
        if highlight && self.config.bell {
            self.bell = true;
        }
    }

    /// An echo of our own message that overtook its [`UiEvent::Delivered`]: it confirms the
    /// oldest pending send with the same text instead of showing the line twice.
    fn echo_confirms_pending(&mut self, index: usize, msg: &ChatMessage) -> bool {
        let pending = self.buffers[index].entries.iter_mut().find(|e| {
            matches!(&e.kind, EntryKind::Chat { send: SendState::Pending { .. }, text, action, .. }
                if *text == msg.text && *action == msg.action)
        });
        let Some(entry) = pending else { return false };
        entry.ts = msg.ts;
        let EntryKind::Chat { send, id, .. } = &mut entry.kind else {
            return false;
        };
        if let SendState::Pending { local_id } = *send {
            self.pending.remove(&local_id);
        }
        *send = SendState::Delivered;
        *id = msg.id;
        true
    }

    fn insert_history(
        &mut self,
        buffer: &BufferId,
        messages: Vec<(ChatMessage, bool)>,
        more: bool,
    ) {
        if *buffer == BufferId::Status {
            return;
        }
        let index = self.buffer_index(buffer);
        let mut page = Vec::with_capacity(messages.len());
        for (msg, own) in messages {
            if msg.id.is_some_and(|id| self.buffers[index].has_id(id)) {
                continue;
            }
            let own = own || self.nick.as_deref() == Some(msg.from.as_str());
            let highlight = !own && self.mentions_me(&msg.text);
            let seq = self.next_seq();
            page.push(Entry {
                seq,
                ts: msg.ts,
                kind: EntryKind::Chat {
                    id: msg.id,
                    from: msg.from,
                    text: msg.text,
                    action: msg.action,
                    own,
                    highlight,
                    send: SendState::None,
                    edited: msg.edited,
                    deleted: msg.deleted,
                    reactions: msg.reactions,
                },
            });
        }
        let b = &mut self.buffers[index];
        // Older lines go on top; `scroll` counts rows from the bottom, so the view stays.
        for entry in page.into_iter().rev() {
            b.entries.push_front(entry);
        }
        while b.entries.len() > self.config.max_lines {
            b.entries.pop_front();
        }
        b.history = if more {
            History::More
        } else {
            History::Complete
        };
        self.dirty = true;
    }

    fn find_pending(&mut self, local_id: u64) -> Option<&mut Entry> {
        let id = self.pending.get(&local_id)?.clone();
        let index = self.index_of(&id)?;
        self.buffers[index].entries.iter_mut().rev().find(|e| {
            matches!(&e.kind, EntryKind::Chat { send: SendState::Pending { local_id: l } | SendState::Failed { local_id: l, .. }, .. } if *l == local_id)
        })
    }

    /// Handles what the network reported; then call [`App::take_commands`].
    pub fn handle_event(&mut self, event: UiEvent, now: UnixMs) {
        self.now = now;
        // Link snapshots arrive every second; they decide for themselves (`link_update`).
        if !matches!(event, UiEvent::Link(_)) {
            self.dirty = true;
        }
        self.event(event);
        self.settle();
    }

    fn event(&mut self, event: UiEvent) {
        let now = self.now;
        match event {
            UiEvent::SelfNick(nick) => self.nick = Some(nick),
            UiEvent::Open(buffer) => {
                let index = self.buffer_index(&buffer);
                self.switch_to(index);
            }
            UiEvent::Message { buffer, msg, own } => self.add_message(&buffer, msg, own),
            UiEvent::Delivered { local_id, id, ts } => {
                let entry = self.find_pending(local_id);
                if let Some(entry) = entry {
                    if let Some(ts) = ts {
                        entry.ts = ts;
                    }
                    if let EntryKind::Chat { send, id: eid, .. } = &mut entry.kind {
                        *send = SendState::Delivered;
                        *eid = id;
                    }
                }
                self.pending.remove(&local_id);
            }
            UiEvent::Failed { local_id, reason } => {
                if let Some(entry) = self.find_pending(local_id) {
                    if let EntryKind::Chat { send, .. } = &mut entry.kind {
                        *send = SendState::Failed { local_id, reason };
                    }
                }
            }
            UiEvent::Join { room, nick, ts } => {
                let id = BufferId::Room(room.clone());
                let me = self.nick.as_deref() == Some(nick.as_str());
                let index = self.buffer_index(&id);
                self.buffers[index].add_member(&nick);
                let text = if me {
                    self.buffers[index].joined = true;
                    format!("you joined {room}")
                } else {
                    format!("{nick} joined {room}")
                };
                self.event_line(index, ts, EventKind::Join, text);
                if me {
                    self.switch_to(index);
                }
            }
            UiEvent::Part {
                room,
                nick,
                reason,
                ts,
            } => {
                let Some(index) = self.index_of(&BufferId::Room(room.clone())) else {
                    return;
                };
                let me = self.nick.as_deref() == Some(nick.as_str());
                let who = if me { "you" } else { nick.as_str() };
                let text = match reason {
                    Some(r) => format!("{who} left {room} ({r})"),
                    None => format!("{who} left {room}"),
                };
                self.buffers[index].remove_member(&nick);
                if me {
                    self.buffers[index].joined = false;
                    self.buffers[index].members.clear();
                }
                self.event_line(index, ts, EventKind::Part, text);
            }
            UiEvent::Quit { nick, reason, ts } => {
                let text = match reason {
                    Some(r) => format!("{nick} quit ({r})"),
                    None => format!("{nick} quit"),
                };
                for index in 0..self.buffers.len() {
                    let b = &mut self.buffers[index];
                    let was_here = b.remove_member(&nick) || b.id == BufferId::Dm(nick.clone());
                    if was_here {
                        self.event_line(index, ts, EventKind::Quit, text.clone());
                    }
                }
            }
            UiEvent::NickChange { old, new, ts } => self.nick_change(&old, &new, ts),
            UiEvent::Topic {
                room,
                topic,
                by,
                ts,
            } => {
                let index = self.buffer_index(&BufferId::Room(room));
                let text = match (&topic, by) {
                    (Some(t), Some(by)) => format!("{by} set the topic: {t}"),
                    (None, Some(by)) => format!("{by} cleared the topic"),
                    (Some(t), None) => format!("topic: {t}"),
                    (None, None) => "no topic".to_owned(),
                };
                self.buffers[index].topic = topic;
                self.event_line(index, ts, EventKind::Topic, text);
            }
            UiEvent::Members { room, nicks } => {
                let index = self.buffer_index(&BufferId::Room(room));
                self.buffers[index].set_members(nicks);
            }
            UiEvent::RoomList(rooms) => {
                let mut text = format!("{} room(s):", rooms.len());
                for r in &rooms {
                    text.push_str(&format!("\n  {} ({})", r.name, r.members));
                    if let Some(t) = &r.topic {
                        text.push_str(&format!(" {t}"));
                    }
                }
                self.known_rooms = rooms.into_iter().map(|r| r.name).collect();
                self.event_line(0, now, EventKind::Info, text);
            }
            UiEvent::HistoryPage {
                buffer,
                messages,
                more,
            } => self.insert_history(&buffer, messages, more),
            UiEvent::Info { buffer, text } => {
                let index = buffer.map_or(0, |b| self.buffer_index(&b));
                self.event_line(index, now, EventKind::Info, text);
            }
            UiEvent::Error(text) => self.error(text),
            UiEvent::Ask { question } => {
                self.asking = true;
                let current = self.current;
                let text = format!("{question} Alt+Y accepts it, Alt+N refuses.");
                self.event_line(current, now, EventKind::Error, text);
                self.bell = self.config.bell;
            }
            UiEvent::FileOffer { id, text } => {
                if !self.file_offers.contains(&id) {
                    self.file_offers.push(id);
                }
                let current = self.current;
                let text = format!(
                    "{text} /accept {id} or Alt+Y accepts it, /decline {id} or Alt+N declines."
                );
                self.event_line(current, now, EventKind::Error, text);
                self.bell = self.config.bell;
            }
            UiEvent::FileAnswered { id } => self.file_offers.retain(|&o| o != id),
            UiEvent::FileProgress(line) => self.file_progress = line,
            UiEvent::MessageLimit(limit) => self.config.max_message_bytes = limit,
            UiEvent::Link(status) => self.link_update(status),
            UiEvent::Edited {
                buffer,
                id,
                target,
                text,
            } => self.amend(&buffer, id, target, |kind| {
                if let EntryKind::Chat {
                    text: t,
                    edited,
                    deleted: false,
                    ..
                } = kind
                {
                    *t = text;
                    *edited = true;
                }
            }),
            UiEvent::Deleted { buffer, id, target } => self.amend(&buffer, id, target, |kind| {
                if let EntryKind::Chat {
                    text,
                    deleted,
                    reactions,
                    ..
                } = kind
                {
                    text.clear();
                    reactions.clear();
                    *deleted = true;
                }
            }),
            UiEvent::Reaction {
                buffer,
                id,
                target,
                emoji,
                count,
            } => self.amend(&buffer, id, target, |kind| {
                if let EntryKind::Chat {
                    reactions,
                    deleted: false,
                    ..
                } = kind
                {
                    set_reaction(reactions, emoji, count);
                }
            }),
            UiEvent::Typing { buffer, nick } => {
                let me = self.nick.as_deref() == Some(nick.as_str());
                if let Some(index) = self.index_of(&buffer).filter(|_| !me) {
                    self.buffers[index].typing(&nick, now + TYPING_SHOWN_MS);
                }
            }
            UiEvent::ReadMarker { buffer, id, unread } => {
                if let Some(index) = self.index_of(&buffer) {
                    let b = &mut self.buffers[index];
                    b.read_id = b.read_id.max(id);
                    let left = u32::try_from(unread).unwrap_or(u32::MAX);
                    b.unread = b.unread.min(left);
                    b.highlights = b.highlights.min(left);
                }
            }
            UiEvent::SearchResults {
                buffer,
                query,
                hits,
                more,
            } => self.search_results(buffer, query, hits, more),
        }
    }

    /// A change to message `target` of `buffer` (event `id`), applied to its line if loaded.
    fn amend(&mut self, buffer: &BufferId, id: u64, target: u64, f: impl FnOnce(&mut EntryKind)) {
        let Some(index) = self.index_of(buffer) else {
            return;
        };
        let b = &mut self.buffers[index];
        b.saw_id(id);
        if let Some(kind) = b.chat_mut(target) {
            f(kind);
        }
    }

    /// Shows a page of server search results in the buffer searched, newest first.
    fn search_results(
        &mut self,
        buffer: BufferId,
        query: String,
        hits: Vec<ChatMessage>,
        more: bool,
    ) {
        let next = if more {
            hits.last().and_then(|m| m.id)
        } else {
            None
        };
        if let Some((b, q, before)) = &mut self.last_search {
            if *b == buffer && *q == query {
                *before = next;
            }
        }
        let index = self.index_of(&buffer).unwrap_or(0);
        let mut text = match hits.len() {
            0 => format!("search for \"{query}\" in {buffer}: no matches"),
            1 => format!("search for \"{query}\" in {buffer}: 1 match"),
            n => format!("search for \"{query}\" in {buffer}: {n} matches, newest first"),
        };
        if next.is_some() {
            text.push_str(&format!(" (/search {query} again: older ones)"));
        }
        for m in &hits {
            let when = view::stamp(m.ts, self.config.utc_offset_secs);
            let id = m.id.map(|i| format!("#{i} ")).unwrap_or_default();
            // One row per hit: a hit's own line breaks must not look like other hits.
            let body = m.text.replace(['\r', '\n'], " ↵ ");
            let edited = if m.edited { " (edited)" } else { "" };
            if m.action {
                text.push_str(&format!("\n  {id}{when} * {} {body}{edited}", m.from));
            } else {
                text.push_str(&format!("\n  {id}{when} <{}> {body}{edited}", m.from));
            }
        }
        let now = self.now;
        self.buffers[index].scroll = 0;
        self.event_line(index, now, EventKind::Info, text);
    }

    fn nick_change(&mut self, old: &str, new: &str, ts: UnixMs) {
        for b in &mut self.buffers {
            b.stopped_typing(old);
        }
        let me = self.nick.as_deref() == Some(old);
        if me {
            self.nick = Some(new.to_owned());
        }
        let text = if me {
            format!("you are now known as {new}")
        } else {
            format!("{old} is now known as {new}")
        };
        for index in 0..self.buffers.len() {
            let b = &mut self.buffers[index];
            let was_here = b.remove_member(old);
            if was_here {
                b.add_member(new);
            }
            let dm = b.id == BufferId::Dm(old.to_owned());
            if was_here || dm || (me && index == 0) {
                self.event_line(index, ts, EventKind::Nick, text.clone());
            }
        }
        // The conversation follows the person, unless one with the new name exists already.
        let new_id = BufferId::Dm(new.to_owned());
        if self.index_of(&new_id).is_none() {
            if let Some(i) = self.index_of(&BufferId::Dm(old.to_owned())) {
                self.buffers[i].id = new_id.clone();
                for b in self.pending.values_mut() {
                    if *b == BufferId::Dm(old.to_owned()) {
                        *b = new_id.clone();
                    }
                }
            }
        }
    }

    fn link_update(&mut self, status: LinkStatus) {
        if let Some(rtt) = status.rtt {
            if self.rtt_samples.len() == RTT_SAMPLES {
                self.rtt_samples.pop_front();
            }
            self.rtt_samples
                .push_back(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
        }
        self.reconnect_at = match status.state {
            LinkState::Reconnecting { in_secs } => Some(self.now + u64::from(in_secs) * 1000),
            _ => None,
        };
        // A repeated identical snapshot only moves the sparkline.
        self.dirty |= self.link != status || self.show_stats;
        self.link = status;
    }

    // ----- scrolling -----

    fn page_rows(&self) -> usize {
        (self.msg_area.height as usize).saturating_sub(1).max(1)
    }

    fn page_up(&mut self, out: &mut Vec<UiCommand>) {
        let height = self.msg_area.height as usize;
        let width = self.msg_area.width as usize;
        let page = self.page_rows();
        let b = &self.buffers[self.current];
        let want = b.scroll + page;
        let total = view::count_rows(self, b, width, want + height + 1);
        let max_scroll = total.saturating_sub(height);
        let at_top = want >= max_scroll;
        let scroll = want.min(max_scroll);
        let b = &mut self.buffers[self.current];
        b.scroll = scroll;
        if at_top && b.history == History::More {
            b.history = History::Fetching;
            out.push(UiCommand::FetchHistory {
                buffer: b.id.clone(),
                before_id: b.entries.iter().find_map(Entry::id),
                limit: self.config.history_page,
            });
        }
    }

    fn page_down(&mut self) {
        let page = self.page_rows();
        let b = &mut self.buffers[self.current];
        b.scroll = b.scroll.saturating_sub(page);
    }

    // ----- sending -----

    fn own_nick(&self) -> String {
        self.nick.clone().unwrap_or_else(|| "me".to_owned())
    }

    fn check_length(&mut self, text: &str) -> bool {
        let limit = self.config.max_message_bytes;
        if text.len() > limit {
            self.error(format!(
                "message not sent: {} bytes, the limit is {limit} ({} over); it is still in the input line",
                text.len(),
                text.len() - limit
            ));
            return false;
        }
        true
    }

    /// Sends `text` to `buffer`, with a pending local echo.
    fn send(&mut self, buffer: BufferId, text: String, action: bool, out: &mut Vec<UiCommand>) {
        let local_id = self.next_local_id;
        self.next_local_id += 1;
        let index = self.buffer_index(&buffer);
        self.pending.insert(local_id, buffer.clone());
        let now = self.now;
        let from = self.own_nick();
        self.push_entry(
            index,
            now,
            EntryKind::Chat {
                id: None,
                from,
                text: text.clone(),
                action,
                own: true,
                highlight: false,
                send: SendState::Pending { local_id },
                edited: false,
                deleted: false,
                reactions: Vec::new(),
            },
        );
        self.buffers[index].scroll = 0;
        out.push(UiCommand::Send {
            buffer,
            text,
            action,
            local_id,
        });
    }

    /// Alt+R, `/retry`: sends every failed message of the current buffer again.
    fn retry(&mut self, out: &mut Vec<UiCommand>) {
        let buffer = self.buffers[self.current].id.clone();
        let mut count = 0;
        for e in self.buffers[self.current].entries.iter_mut() {
            if let EntryKind::Chat {
                text, action, send, ..
            } = &mut e.kind
            {
                if let SendState::Failed { local_id, .. } = *send {
                    *send = SendState::Pending { local_id };
                    count += 1;
                    out.push(UiCommand::Send {
                        buffer: buffer.clone(),
                        text: text.clone(),
                        action: *action,
                        local_id,
                    });
                }
            }
        }
        if count == 0 {
            self.info("nothing to retry in this buffer");
        }
    }

    /// Enter: a command, or a message to the current buffer.
    fn submit(&mut self, out: &mut Vec<UiCommand>) {
        let line = self.editor.text().to_owned();
        if line.trim().is_empty() {
            return;
        }
        if self.command(&line, out) {
            self.buffers[self.current].input_history.push(&line);
            self.editor.take();
        }
    }

    /// A message to the current buffer; false if it was refused (kept in the input line).
    fn say(&mut self, text: String, action: bool, out: &mut Vec<UiCommand>) -> bool {
        let buffer = self.buffers[self.current].id.clone();
        match &buffer {
            BufferId::Status => {
                self.error(if self.config.peer {
                    "nothing is sent from the status buffer: Alt+2 is the conversation with the peer"
                } else {
                    "nothing is sent from the status buffer: /join #room or /query nick"
                });
                return false;
            }
            BufferId::Room(room) if !self.buffers[self.current].joined => {
                self.error(format!("you are not in {room}: /join {room}"));
                return false;
            }
            _ => {}
        }
        if !self.check_length(&text) {
            return false;
        }
        self.send(buffer, text, action, out);
        true
    }

    /// The current buffer, if it is a conversation the server can act on (a room we are in,
    /// or a DM); else says why `word` does not work here.
    fn conversation(&mut self, word: &str) -> Option<BufferId> {
        let b = &self.buffers[self.current];
        match &b.id {
            BufferId::Status => {
                self.error(format!(
                    "{word} works in a room or a conversation: /join #ROOM or /query NICK"
                ));
                None
            }
            BufferId::Room(room) if !b.joined => {
                let text = format!("you are not in {room}: /join {room}");
                self.error(text);
                None
            }
            id => Some(id.clone()),
        }
    }

    fn current_room(&self) -> Option<String> {
        match &self.buffers[self.current].id {
            BufferId::Room(r) => Some(r.clone()),
            _ => None,
        }
    }

    /// `/send ARGS` as a [`UiCommand::SendFile`]: in peer mode the whole argument is the path
    /// (to the peer); in `chirp connect`, in a DM buffer too (to its nick), and elsewhere the
    /// first word is the nick and the rest the path.
    fn file_target(&self, args: String) -> Result<UiCommand, &'static str> {
        if self.config.peer {
            return Ok(UiCommand::SendFile {
                to: None,
                path: args,
            });
        }
        if let BufferId::Dm(nick) = self.current_buffer() {
            return Ok(UiCommand::SendFile {
                to: Some(nick.clone()),
                path: args,
            });
        }
        match args.split_once(' ') {
            Some((to, path)) if !path.trim().is_empty() => Ok(UiCommand::SendFile {
                to: Some(to.to_owned()),
                path: path.trim().to_owned(),
            }),
            _ => Err("usage: /send NICK PATH (or /send PATH in a DM buffer, to its nick)"),
        }
    }

    /// Where the UI's lines are parsed: `chirp peer`'s UI or `chirp connect`'s.
    fn context(&self) -> Context {
        if self.config.peer {
            Context::PeerUi
        } else {
            Context::ChatUi
        }
    }

    /// Runs a typed line (a `/command`, or text for the current buffer); false if it was
    /// refused (the line stays for fixing).
    fn command(&mut self, line: &str, out: &mut Vec<UiCommand>) -> bool {
        let parsed = match command::parse(line, self.context()) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.error(e.to_string());
                return false;
            }
        };
        let room_arg = |s: String| {
            if s.starts_with('#') {
                s
            } else {
                format!("#{s}")
            }
        };
        let conversation = |name: String| {
            if name.starts_with('#') {
                BufferId::Room(name)
            } else {
                BufferId::Dm(name)
            }
        };
        match parsed {
            Command::Text(text) => return self.say(text, false, out),
            Command::Join { key: Some(_), .. } => {
                self.error("a room key works in line mode only for now: chirp connect --line");
                return false;
            }
            Command::Join { room, key: None } => out.push(UiCommand::Join {
                room: room_arg(room),
            }),
            Command::Part { room, reason } => {
                let Some(room) = room.or_else(|| self.current_room()) else {
                    self.error("/part works in a room, or names one: /part #ROOM [REASON]");
                    return false;
                };
                out.push(UiCommand::Part { room, reason });
            }
            // Sends and stays: the next line must not go privately by surprise.
            Command::Msg { to, text } => {
                if !self.check_length(&text) {
                    return false;
                }
                let id = conversation(to);
                let index = self.buffer_index(&id);
                self.send(id.clone(), text, false, out);
                if index != self.current {
                    self.info(format!(
                        "message sent to {id} (/query {id} shows the conversation)"
                    ));
                }
            }
            Command::Query { nick, text } => {
                if text.as_deref().is_some_and(|t| !self.check_length(t)) {
                    return false;
                }
                let id = conversation(nick);
                let index = self.buffer_index(&id);
                self.switch_to(index);
                if let Some(text) = text {
                    self.send(id, text, false, out);
                }
            }
            Command::Me { text } => return self.say(text, true, out),
            Command::Nick { nick } => out.push(UiCommand::Nick { nick }),
            Command::Topic { text } => {
                let Some(room) = self.current_room() else {
                    self.error("/topic works in a room");
                    return false;
                };
                out.push(UiCommand::Topic { room, topic: text });
            }
            Command::List => out.push(UiCommand::List),
            Command::Who { room } => {
                let Some(room) = room.map(room_arg).or_else(|| self.current_room()) else {
                    self.error("/who works in a room, or names one: /who #ROOM");
                    return false;
                };
                out.push(UiCommand::Who { room });
            }
            Command::Buffer { name } => {
                if let Err(e) = self.switch_by_name(&name) {
                    self.error(e);
                    return false;
                }
            }
            Command::Close => self.close_current(out),
            // A peer has no server: its UI searches what is loaded, as Ctrl+R does.
            Command::Search { text } if self.config.peer => {
                self.search = Some(Search {
                    query: text,
                    ..Search::default()
                });
                self.search_update(false);
            }
            Command::Search { text } => {
                let Some(buffer) = self.conversation("/search") else {
                    return false;
                };
                let query = text.trim().to_owned();
                if query.is_empty() {
                    self.error(
                        "usage: /search WORDS (the server's history of this buffer; Ctrl+R searches the lines loaded here)",
                    );
                    return false;
                }
                // The same search again goes on below the last page.
                let before = match &self.last_search {
                    Some((b, q, before)) if *b == buffer && *q == query => *before,
                    _ => None,
                };
                self.last_search = Some((buffer.clone(), query.clone(), None));
                out.push(UiCommand::Search {
                    buffer,
                    query,
                    before,
                });
            }
            Command::Stats => self.show_stats = !self.show_stats,
            Command::Members => self.show_members = !self.show_members,
            Command::Retry => self.retry(out),
            Command::Clear => {
                let b = &mut self.buffers[self.current];
                b.entries.clear();
                b.scroll = 0;
            }
            Command::Bell { on } => {
                self.config.bell = on.unwrap_or(!self.config.bell);
                let state = if self.config.bell { "on" } else { "off" };
                self.info(format!("bell on highlights: {state}"));
            }
            Command::Mod(command) => out.push(UiCommand::Moderate {
                command,
                room: self.current_room(),
            }),
            Command::Ignore { nick } => out.push(UiCommand::Ignore(nick)),
            Command::Unignore { nick } => out.push(UiCommand::Unignore(nick)),
            Command::Edit { id, text } => {
                if !self.check_length(&text) {
                    return false;
                }
                let Some(buffer) = self.conversation("/edit") else {
                    return false;
                };
                out.push(UiCommand::Edit { buffer, id, text });
            }
            Command::Delete { id } => {
                let Some(buffer) = self.conversation("/delete") else {
                    return false;
                };
                out.push(UiCommand::Delete { buffer, id });
            }
            Command::React { id, emoji, remove } => {
                let word = if remove { "/unreact" } else { "/react" };
                let Some(buffer) = self.conversation(word) else {
                    return false;
                };
                out.push(UiCommand::React {
                    buffer,
                    id,
                    emoji,
                    remove,
                });
            }
            Command::Ids => {
                self.show_ids = !self.show_ids;
                let state = if self.show_ids { "shown" } else { "hidden" };
                self.info(format!("message ids {state} (Alt+I switches)"));
            }
            Command::Accept { id: Some(id) } => {
                self.file_offers.retain(|&o| o != id);
                out.push(UiCommand::AcceptFile(Some(id)));
            }
            Command::Accept { id: None } if !self.asking && !self.file_offers.is_empty() => {
                let id = self.file_offers.remove(0);
                out.push(UiCommand::AcceptFile(Some(id)));
            }
            Command::Send { path } => match self.file_target(path) {
                Ok(cmd) => out.push(cmd),
                Err(e) => {
                    self.error(e);
                    return false;
                }
            },
            Command::Decline { id } => {
                let id = id.or_else(|| self.file_offers.first().copied());
                self.file_offers.retain(|&o| Some(o) != id);
                out.push(UiCommand::DeclineFile(id));
            }
            // The UI does not know which files are being sent: the transfers choose (or say
            // why they cannot).
            Command::Cancel { id } => out.push(UiCommand::CancelFile(id)),
            Command::Accept { id: None } | Command::Refuse => {
                if !self.asking {
                    // A chat server asks no key question: only file offers are answered.
                    self.error(if self.config.peer {
                        "no question is open"
                    } else {
                        "no file offer waits for an answer"
                    });
                    return false;
                }
                let yes = matches!(parsed, Command::Accept { .. });
                self.asking = false;
                self.info(if yes { "answered: yes" } else { "answered: no" });
                out.push(UiCommand::Answer(yes));
            }
            Command::Help => {
                let text = command::help(self.context());
                self.info(text);
            }
            Command::Quit { reason } => out.push(UiCommand::Quit { reason }),
            // `parse` refuses them in the UI, with this reason.
            c @ (Command::History { .. } | Command::Read | Command::Typing) => {
                let name = c.name().unwrap_or(command::Name::History);
                self.error(
                    command::CommandError::Unavailable {
                        word: command::spec(name).word.to_owned(),
                        name,
                        context: self.context(),
                    }
                    .to_string(),
                );
                return false;
            }
        }
        true
    }
}

/// Sets the count of `emoji` among `reactions` (0 removes it), keeping first-use order.
fn set_reaction(reactions: &mut Vec<ReactionCount>, emoji: String, count: u64) {
    match reactions.iter().position(|r| r.emoji == emoji) {
        Some(i) if count == 0 => {
            reactions.remove(i);
        }
        Some(i) => reactions[i].count = count,
        None if count == 0 || reactions.len() >= MAX_REACTIONS => {}
        None => reactions.push(ReactionCount { emoji, count }),
    }
}
