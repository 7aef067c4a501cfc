//! A short-lived cache of token lookups.
//!
//! Every download starts by resolving its token to the link and its file
//! in the catalog: a round trip to Postgres (or to SQLite's connection
//! thread) that costs more than serving a small file. Lookups of links
//! without a download limit are kept for at most `ttl` (one second by
//! default), so a revocation, an expiry change or a deletion made on any
//! replica takes effect everywhere within that time. Links with a limit
//! are never cached: their admission needs the catalog's count read
//! against the flush epoch (see `counter`). Misses are not cached, so a
//! new link serves at once.
//!
//! A file of at most [`SMALL_FILE`] bytes keeps its content with its
//! lookup once it has been read (at most [`BODY_BUDGET`] bytes in all), so
//! repeat downloads of a hot small file skip the storage read as well.
//! Objects never change under a key, and the bytes go with the lookup, so
//! they cannot outlive a deletion by more than `ttl` either.
//!
//! Hand-written rather than a cache crate: entries only need a lifetime
//! and a size bound, and dropping everything when full is good enough for
//! a one-second window.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use teledrop_core::{FileRecord, LinkRecord, LinkToken};

/// Entries kept at most; when full, expired ones go, then all.
const CAPACITY: usize = 65_536;

/// Files up to this size keep their bytes with their lookup.
pub(crate) const SMALL_FILE: u64 = 64 * 1024;

/// Bytes of small files kept at most, over all entries.
const BODY_BUDGET: usize = 64 * 1024 * 1024;

#[derive(Debug)]
pub(crate) struct LookupCache {
    ttl: Duration,
    map: Mutex<Map>,
}

#[derive(Debug, Default)]
struct Map {
    entries: HashMap<LinkToken, Entry>,
    /// Sum of the kept bodies' lengths.
    body_bytes: usize,
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    link: LinkRecord,
    file: FileRecord,
    body: Option<Bytes>,
}

/// A lookup from the cache: the link, its file, and the file's bytes when
/// it is small and was read since.
#[derive(Debug)]
pub(crate) struct Lookup {
    pub(crate) link: LinkRecord,
    pub(crate) file: FileRecord,
    pub(crate) body: Option<Bytes>,
}

impl Map {
    fn remove(&mut self, token: &LinkToken) {
        if let Some(old) = self.entries.remove(token) {
            self.body_bytes -= old.body.map_or(0, |b| b.len());
        }
    }

    fn make_room(&mut self, ttl: Duration) {
        if self.entries.len() < CAPACITY && self.body_bytes < BODY_BUDGET {
            return;
        }
        self.entries.retain(|_, e| e.at.elapsed() < ttl);
        self.body_bytes = self
            .entries
            .values()
            .filter_map(|e| e.body.as_ref())
            .map(Bytes::len)
            .sum();
        if self.entries.len() >= CAPACITY || self.body_bytes >= BODY_BUDGET {
            self.entries.clear();
            self.body_bytes = 0;
        }
    }
}

impl LookupCache {
    /// `ttl` zero: nothing is cached.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        // A map of copies: a panic while holding it cannot leave it
        // inconsistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A lookup made less than `ttl` ago.
    pub(crate) fn get(&self, token: LinkToken) -> Option<Lookup> {
        if self.ttl.is_zero() {
            return None;
        }
        let map = self.lock();
        let e = map.entries.get(&token)?;
        (e.at.elapsed() < self.ttl).then(|| Lookup {
            link: e.link.clone(),
            file: e.file.clone(),
            body: e.body.clone(),
        })
    }

    /// Keeps a lookup just read from the catalog (`at`: when the read
    /// started, so the entry never outlives what the catalog said then).
    pub(crate) fn put(&self, at: Instant, link: &LinkRecord, file: &FileRecord) {
        if self.ttl.is_zero() || link.max_downloads.is_some() {
            return;
        }
        let mut map = self.lock();
        map.remove(&link.token);
        map.make_room(self.ttl);
        map.entries.insert(
            link.token,
            Entry {
                at,
                link: link.clone(),
                file: file.clone(),
                body: None,
            },
        );
    }

    /// Keeps the whole content of a small file with its link's lookup, if
    /// that lookup is still kept; it goes when the lookup does.
    pub(crate) fn keep_body(&self, token: LinkToken, body: &Bytes) {
        if body.len() as u64 > SMALL_FILE {
            return;
        }
        let mut map = self.lock();
        if map.body_bytes + body.len() > BODY_BUDGET {
            return;
        }
        let Some(e) = map.entries.get_mut(&token) else {
            return;
        };
        if e.body.is_some() || e.file.size != body.len() as u64 {
            return;
        }
        e.body = Some(body.clone());
        map.body_bytes += body.len();
    }

    /// Drops a lookup the storage contradicted (the object is gone).
    pub(crate) fn forget(&self, token: LinkToken) {
        self.lock().remove(&token);
    }
}
