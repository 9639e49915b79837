//! The spool: batches LangSmith could not take, on disk, replayed in
//! order once it answers again (the design documents' `fallback_enabled`).
//!
//! One file per batch, `<sequence>-<runs>.json`, written to a temporary
//! name and renamed so that a crash never leaves half a batch under a
//! real name. The directory is bounded in bytes: when a new batch does not
//! fit, the oldest batches are dropped and counted. The index lives in
//! memory and is rebuilt from the directory at start, so batches spooled
//! before a restart are replayed after it.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::run::Run;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    sequence: u64,
    runs: usize,
    bytes: u64,
}

/// How full the spool is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpoolSize {
    pub batches: usize,
    pub runs: usize,
    pub bytes: u64,
}

pub struct Spool {
    directory: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
}

#[derive(Default)]
struct Index {
    entries: VecDeque<Entry>,
    bytes: u64,
    next_sequence: u64,
}

/// What `push` did with the oldest batches to make room.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    pub dropped_runs: usize,
}

impl Spool {
    /// Opens (creating if needed) the directory, reading what an earlier
    /// run left there.
    pub fn open(directory: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        fs::create_dir_all(directory)?;
        let mut entries = Vec::new();
        for dirent in fs::read_dir(directory)? {
            let dirent = dirent?;
            let name = dirent.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(dirent.path());
                continue;
            }
            if let Some((sequence, runs)) = parse_name(&name) {
                let bytes = dirent.metadata()?.len();
                entries.push(Entry {
                    sequence,
                    runs,
                    bytes,
                });
            }
        }
        entries.sort_by_key(|entry| entry.sequence);
        let index = Index {
            bytes: entries.iter().map(|entry| entry.bytes).sum(),
            next_sequence: entries.last().map_or(0, |entry| entry.sequence + 1),
            entries: entries.into(),
        };
        Ok(Spool {
            directory: directory.to_path_buf(),
            max_bytes,
            index: Mutex::new(index),
        })
    }

    pub fn size(&self) -> SpoolSize {
        let index = self.lock();
        SpoolSize {
            batches: index.entries.len(),
            runs: index.entries.iter().map(|entry| entry.runs).sum(),
            bytes: index.bytes,
        }
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// Writes a batch behind the others, dropping the oldest until it
    /// fits. A batch larger than the whole spool is dropped itself.
    pub fn push(&self, runs: &[Run]) -> std::io::Result<Pushed> {
        let json = serde_json::to_vec(runs).map_err(std::io::Error::other)?;
        let bytes = json.len() as u64;
        let mut index = self.lock();
        let mut pushed = Pushed::default();
        if bytes > self.max_bytes {
            pushed.dropped_runs = runs.len();
            return Ok(pushed);
        }
        while index.bytes + bytes > self.max_bytes {
            let Some(oldest) = index.entries.pop_front() else {
                break;
            };
            index.bytes -= oldest.bytes;
            pushed.dropped_runs += oldest.runs;
            let _ = fs::remove_file(self.path(&oldest));
        }
        let entry = Entry {
            sequence: index.next_sequence,
            runs: runs.len(),
            bytes,
        };
        let path = self.path(&entry);
        let temporary = path.with_extension("tmp");
        let mut file = fs::File::create(&temporary)?;
        file.write_all(&json)?;
        file.sync_data()?;
        fs::rename(&temporary, &path)?;
        index.next_sequence += 1;
        index.bytes += bytes;
        index.entries.push_back(entry);
        Ok(pushed)
    }

    /// The oldest batch, without removing it: `Ok(None)` when empty. A
    /// file that cannot be read back is removed and its runs reported in
    /// the error.
    pub fn oldest(&self) -> Result<Option<(u64, Vec<Run>)>, Unreadable> {
        let Some(entry) = self.lock().entries.front().copied() else {
            return Ok(None);
        };
        let read = fs::read(self.path(&entry))
            .map_err(|err| err.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|err| err.to_string()));
        match read {
            Ok(runs) => Ok(Some((entry.sequence, runs))),
            Err(reason) => {
                self.remove(entry.sequence);
                Err(Unreadable {
                    runs: entry.runs,
                    reason,
                })
            }
        }
    }

    /// Forgets a batch that was delivered.
    pub fn remove(&self, sequence: u64) {
        let mut index = self.lock();
        if let Some(position) = index.entries.iter().position(|e| e.sequence == sequence)
            && let Some(entry) = index.entries.remove(position)
        {
            index.bytes -= entry.bytes;
            let _ = fs::remove_file(self.path(&entry));
        }
    }

    fn path(&self, entry: &Entry) -> PathBuf {
        self.directory
            .join(format!("{:020}-{}.json", entry.sequence, entry.runs))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A spooled batch that could not be read back.
#[derive(Debug)]
pub struct Unreadable {
    pub runs: usize,
    pub reason: String,
}

fn parse_name(name: &str) -> Option<(u64, usize)> {
    let stem = name.strip_suffix(".json")?;
    let (sequence, runs) = stem.split_once('-')?;
    Some((sequence.parse().ok()?, runs.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::langsmith::wire::tests::sample;

    #[test]
    fn batches_come_back_in_order_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.push(&[sample(1, None)]).unwrap();
        spool
            .push(&[sample(2, None), sample(3, Some("x"))])
            .unwrap();
        assert_eq!(spool.size().runs, 3);
        drop(spool);

        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.size().batches, 2);
        let (first, runs) = spool.oldest().unwrap().unwrap();
        assert_eq!(runs, vec![sample(1, None)]);
        spool.remove(first);
        let (_, runs) = spool.oldest().unwrap().unwrap();
        assert_eq!(runs[1], sample(3, Some("x")));
        spool.push(&[sample(4, None)]).unwrap();
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("00000000000000000002-1")),
            "{names:?}"
        );
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let one = serde_json::to_vec(&[sample(1, None)]).unwrap().len() as u64;
        let spool = Spool::open(dir.path(), one * 2 + one / 2).unwrap();
        assert_eq!(spool.push(&[sample(1, None)]).unwrap().dropped_runs, 0);
        assert_eq!(spool.push(&[sample(2, None)]).unwrap().dropped_runs, 0);
        assert_eq!(spool.push(&[sample(3, None)]).unwrap().dropped_runs, 1);
        let (_, runs) = spool.oldest().unwrap().unwrap();
        assert_eq!(runs[0].core.id, sample(2, None).core.id);
        let huge: Vec<Run> = (10..20).map(|id| sample(id, None)).collect();
        assert_eq!(spool.push(&huge).unwrap().dropped_runs, 10);
        assert_eq!(spool.size().runs, 2);
    }

    #[test]
    fn a_corrupt_file_is_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("00000000000000000000-4.json"), b"{not json").unwrap();
        fs::write(dir.path().join("00000000000000000001-1.json.tmp"), b"half").unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let err = spool.oldest().unwrap_err();
        assert_eq!(err.runs, 4);
        assert!(spool.is_empty());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
