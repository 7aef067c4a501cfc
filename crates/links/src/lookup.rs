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
//! Hand-written rather than a cache crate: entries only need a lifetime
//! and a size bound, and dropping everything when full is good enough for
//! a one-second window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use teledrop_core::{FileRecord, LinkRecord, LinkToken};

/// Entries kept at most; when full, expired ones go, then all.
const CAPACITY: usize = 65_536;

#[derive(Debug)]
pub(crate) struct LookupCache {
    ttl: Duration,
    entries: Mutex<HashMap<LinkToken, Entry>>,
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    link: LinkRecord,
    file: FileRecord,
}

impl LookupCache {
    /// `ttl` zero: nothing is cached.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LinkToken, Entry>> {
        // A map of copies: a panic while holding it cannot leave it
        // inconsistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A lookup made less than `ttl` ago.
    pub(crate) fn get(&self, token: LinkToken) -> Option<(LinkRecord, FileRecord)> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.lock();
        let e = entries.get(&token)?;
        (e.at.elapsed() < self.ttl).then(|| (e.link.clone(), e.file.clone()))
    }

    /// Keeps a lookup just read from the catalog (`at`: when the read
    /// started, so the entry never outlives what the catalog said then).
    pub(crate) fn put(&self, at: Instant, link: &LinkRecord, file: &FileRecord) {
        if self.ttl.is_zero() || link.max_downloads.is_some() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            let ttl = self.ttl;
            entries.retain(|_, e| e.at.elapsed() < ttl);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            link.token,
            Entry {
                at,
                link: link.clone(),
                file: file.clone(),
            },
        );
    }

    /// Drops a lookup the storage contradicted (the object is gone).
    pub(crate) fn forget(&self, token: LinkToken) {
        self.lock().remove(&token);
    }
}
