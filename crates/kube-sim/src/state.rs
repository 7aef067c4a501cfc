//! What the server's tasks and the test share.

use crate::store::Store;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string (without `?`).
    pub query: String,
    pub content_type: Option<String>,
    /// The answer's status (200 for a watch that started streaming).
    pub status: u16,
}

impl RecordedRequest {
    /// Whether this is a watch (`watch=1` or `watch=true`).
    pub fn is_watch(&self) -> bool {
        self.query.split('&').any(|p| p == "watch=1" || p == "watch=true")
    }
}

pub(crate) struct Shared {
    store: Mutex<Store>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Requests still to be answered 500.
    pub fail_next: AtomicU32,
    /// While set, every request is answered 503.
    pub outage: AtomicBool,
    pub token: String,
    /// Bumped to end every open watch stream.
    pub close_watches: tokio::sync::watch::Sender<u64>,
    pub open_watches: AtomicUsize,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_every: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not wedge the server for the others.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub fn new(token: String, bookmark_every: Duration) -> Self {
        Self {
            store: Mutex::new(Store::new()),
            requests: Mutex::new(Vec::new()),
            fail_next: AtomicU32::new(0),
            outage: AtomicBool::new(false),
            token,
            close_watches: tokio::sync::watch::channel(0).0,
            open_watches: AtomicUsize::new(0),
            bookmark_every,
        }
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    pub fn log(&self, r: RecordedRequest) {
        lock(&self.requests).push(r);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }
}
