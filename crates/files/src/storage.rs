//! Where files come from and go to, behind the [`Storage`] trait: the state machine never
//! touches a disk itself. [`FsStorage`] is the real one (a download directory);
//! [`MemStorage`] keeps everything in memory for tests, and can be told to fail writes and
//! finishes.
//!
//! [`Storage::finish`] is the one call that may take long on a real disk (it waits until the
//! file is durable): a driver that must not stall runs it elsewhere, through
//! [`crate::Finish::run`] (see [`crate::Transfers::finish_outside`]).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// File access for [`crate::Transfers`]. Sources are named by the path the user gave;
/// received files by their (sanitised) name in the download directory.
pub trait Storage {
    /// The size of the file at `path`, and whether it is a regular file.
    fn source_len(&mut self, path: &Path) -> io::Result<u64>;
    /// Fills `buf` from `path` at `offset`.
    fn read_source(&mut self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Whether `name` exists in the download directory.
    fn exists(&mut self, name: &str) -> bool;
    /// The length of `name` in the download directory, if it exists.
    fn len(&mut self, name: &str) -> io::Result<Option<u64>>;
    /// Fills `buf` from `name` in the download directory at `offset`.
    fn read(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` into `name` (created if need be) at `offset`.
    fn write(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes `part` durable and gives it the name `name`, which must not exist (an error
    /// otherwise: nothing is ever overwritten). `size` is its final length. On a real disk
    /// this waits for every byte written to reach it: it may take seconds.
    fn finish(&mut self, part: &str, name: &str, size: u64) -> io::Result<()>;
    /// Closes whatever is held open for `name` (the transfer ended).
    fn close(&mut self, name: &str);
    /// Closes and deletes `name` in the download directory (a partial file whose sender gave
    /// the transfer up). A name that does not exist is not an error; a symbolic link there is
    /// removed itself, never followed.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Closes the source at `path` (the transfer ended).
    fn close_source(&mut self, path: &Path);
}

impl<S: Storage + ?Sized> Storage for Box<S> {
    fn source_len(&mut self, path: &Path) -> io::Result<u64> {
        (**self).source_len(path)
    }
    fn read_source(&mut self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_source(path, offset, buf)
    }
    fn exists(&mut self, name: &str) -> bool {
        (**self).exists(name)
    }
    fn len(&mut self, name: &str) -> io::Result<Option<u64>> {
        (**self).len(name)
    }
    fn read(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read(name, offset, buf)
    }
    fn write(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        (**self).write(name, offset, data)
    }
    fn finish(&mut self, part: &str, name: &str, size: u64) -> io::Result<()> {
        (**self).finish(part, name, size)
    }
    fn close(&mut self, name: &str) {
        (**self).close(name);
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        (**self).remove(name)
    }
    fn close_source(&mut self, path: &Path) {
        (**self).close_source(path);
    }
}

/// The real file system: sources at the paths given, received files in `dir`. Open files are
/// cached, one per name.
#[derive(Debug)]
pub struct FsStorage {
    dir: PathBuf,
    open: HashMap<PathBuf, File>,
}

impl FsStorage {
    /// Received files go into `dir` (created when the first one is written).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            open: HashMap::new(),
        }
    }

    /// The download directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The open file at `path`: a source (read only; a path the user gave, which may be a
    /// symbolic link) or, with `write`, a file in the download directory, created if need be
    /// ([`open_received`]).
    fn file(&mut self, path: PathBuf, write: bool) -> io::Result<&File> {
        use std::collections::hash_map::Entry;
        match self.open.entry(path) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let f = if write {
                    std::fs::create_dir_all(&self.dir)?;
                    open_received(e.key(), true)?
                } else {
                    File::open(e.key())?
                };
                Ok(e.insert(f))
            }
        }
    }
}

/// Opens `path` in the download directory for reading and writing (`create`: created if it
/// does not exist). It is never followed if it is a symbolic link (`O_NOFOLLOW`: someone who
/// can write there cannot make us write elsewhere) and must be a regular file.
fn open_received(path: &Path, create: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|err| match err.raw_os_error() {
            Some(libc::ELOOP) => io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is a symbolic link (refused: never followed)",
            ),
            _ => err,
        })?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

impl Storage for FsStorage {
    fn source_len(&mut self, path: &Path) -> io::Result<u64> {
        let meta = std::fs::metadata(path)?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(meta.len())
    }

    fn read_source(&mut self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file(path.to_owned(), false)?
            .read_exact_at(buf, offset)
    }

    fn exists(&mut self, name: &str) -> bool {
        // `symlink_metadata`: a dangling link is a name taken too.
        std::fs::symlink_metadata(self.dir.join(name)).is_ok()
    }

    fn len(&mut self, name: &str) -> io::Result<Option<u64>> {
        match std::fs::symlink_metadata(self.dir.join(name)) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let path = self.dir.join(name);
        self.file(path, true)?.read_exact_at(buf, offset)
    }

    fn write(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let path = self.dir.join(name);
        self.file(path, true)?.write_all_at(data, offset)
    }

    fn finish(&mut self, part: &str, name: &str, size: u64) -> io::Result<()> {
        let (from, to) = (self.dir.join(part), self.dir.join(name));
        // Never created here: a partial file that is gone (saved by someone else meanwhile)
        // is an error, not an empty file saved under the name.
        let f = match self.open.remove(&from) {
            Some(f) => f,
            None => open_received(&from, false)?,
        };
        // A partial file from an earlier, longer attempt is cut to the verified size.
        f.set_len(size)?;
        f.sync_all()?;
        drop(f);
        // A hard link fails if `to` exists: never overwrites, even if it appeared meanwhile.
        std::fs::hard_link(&from, &to)?;
        std::fs::remove_file(&from)
    }

    fn close(&mut self, name: &str) {
        self.open.remove(&self.dir.join(name));
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        let path = self.dir.join(name);
        self.open.remove(&path);
        // `unlink` removes a symbolic link itself, never what it points to.
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn close_source(&mut self, path: &Path) {
        self.open.remove(path);
    }
}

/// Everything in memory: for tests of the state machine without a disk.
#[derive(Debug, Default)]
pub struct MemStorage {
    /// Files to send, by path.
    pub sources: HashMap<PathBuf, Vec<u8>>,
    /// The download directory's files, by name.
    pub files: HashMap<String, Vec<u8>>,
    /// Writes fail (as on a full disk) once the download directory holds this many bytes.
    pub capacity: Option<usize>,
    /// [`Storage::finish`] fails with this error (as an fsync on a full disk does), leaving
    /// the partial file as it is.
    pub fail_finish: Option<io::ErrorKind>,
}

impl Storage for MemStorage {
    fn source_len(&mut self, path: &Path) -> io::Result<u64> {
        self.sources
            .get(path)
            .map(|d| d.len() as u64)
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn read_source(&mut self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let d = self.sources.get(path).ok_or(io::ErrorKind::NotFound)?;
        copy_out(d, offset, buf)
    }

    fn exists(&mut self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    fn len(&mut self, name: &str) -> io::Result<Option<u64>> {
        Ok(self.files.get(name).map(|d| d.len() as u64))
    }

    fn read(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let d = self.files.get(name).ok_or(io::ErrorKind::NotFound)?;
        copy_out(d, offset, buf)
    }

    fn write(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let used: usize = self.files.values().map(Vec::len).sum();
        let f = self.files.entry(name.to_owned()).or_default();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start + data.len();
        let grow = end.saturating_sub(f.len());
        if self.capacity.is_some_and(|cap| used + grow > cap) {
            return Err(io::ErrorKind::StorageFull.into());
        }
        if f.len() < end {
            f.resize(end, 0);
        }
        f[start..end].copy_from_slice(data);
        Ok(())
    }

    fn finish(&mut self, part: &str, name: &str, size: u64) -> io::Result<()> {
        if let Some(kind) = self.fail_finish {
            return Err(kind.into());
        }
        if self.files.contains_key(name) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let mut d = self.files.remove(part).ok_or(io::ErrorKind::NotFound)?;
        d.truncate(usize::try_from(size).map_err(|_| io::ErrorKind::InvalidInput)?);
        self.files.insert(name.to_owned(), d);
        Ok(())
    }

    fn close(&mut self, _name: &str) {}

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.files.remove(name);
        Ok(())
    }

    fn close_source(&mut self, _path: &Path) {}
}

fn copy_out(d: &[u8], offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    let src = start
        .checked_add(buf.len())
        .and_then(|end| d.get(start..end))
        .ok_or(io::ErrorKind::UnexpectedEof)?;
    buf.copy_from_slice(src);
    Ok(())
}
