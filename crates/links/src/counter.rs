//! Download counts kept in memory and written to the catalog in batches.
//!
//! Every counted download adds one to its file's *unflushed* count; a
//! flush moves those counts *in flight*, writes them with one
//! `record_downloads` call and forgets them once written (or puts them
//! back when the write failed). No request waits for a database write.
//!
//! A link with a download limit is checked against the catalog's count
//! plus what this server has not written yet. For that sum to be exact the
//! catalog read must not straddle a flush (it could otherwise miss counts
//! that were in memory when the request looked but written by the time it
//! compared, or see them twice). A flush therefore bumps an *epoch* when it
//! starts and again when it ends (odd while a write is running): a request
//! notes the epoch before its catalog read, and its admission is refused
//! as stale when the epoch moved or was odd, in which case the request
//! reads the catalog again. A request that keeps losing that race reads
//! once more while holding the flush gate (see `LinksState`), which no
//! flush can interleave with. Links without a limit never need this.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use teledrop_catalog::DownloadHit;
use teledrop_core::file::LinkGone;
use teledrop_core::{FileId, FileRecord, LinkRecord};
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct DownloadCounter {
    state: Mutex<State>,
    flush_ended: Notify,
}

#[derive(Debug, Default)]
struct State {
    epoch: u64,
    files: HashMap<FileId, Pending>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    unflushed: u64,
    in_flight: u64,
    last_at: DateTime<Utc>,
}

/// The answer to [`DownloadCounter::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The link may serve; `counted` says whether a download was added.
    Admitted { counted: bool },
    /// The link no longer serves.
    Gone(LinkGone),
    /// A flush ran since the catalog was read: read it again.
    Stale,
}

impl DownloadCounter {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every await-free step, so a
        // panic elsewhere while holding the lock does not corrupt it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The epoch to note before reading the catalog.
    pub(crate) fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Like [`epoch`](Self::epoch), but waits (at most
    /// `max_wait`) for a running flush to end, so the read that follows
    /// is not immediately stale.
    pub(crate) async fn settled_epoch(&self, max_wait: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let ended = self.flush_ended.notified();
            tokio::pin!(ended);
            // Register before looking, so an end in between is not missed.
            ended.as_mut().enable();
            let epoch = self.lock().epoch;
            if epoch.is_multiple_of(2) || tokio::time::timeout_at(deadline, ended).await.is_err() {
                return epoch;
            }
        }
    }

    /// Decides whether `link` may serve `file` now, counting a download
    /// when `count` is set and the link serves. `file` is as read from the
    /// catalog after `seen_epoch` was noted.
    pub(crate) fn admit(
        &self,
        seen_epoch: u64,
        link: &LinkRecord,
        file: &FileRecord,
        now: DateTime<Utc>,
        count: bool,
    ) -> Admission {
        let mut state = self.lock();
        let limited = link.max_downloads.is_some();
        if limited && (seen_epoch != state.epoch || !seen_epoch.is_multiple_of(2)) {
            return Admission::Stale;
        }
        let pending = state.files.get(&file.id).map_or(0, |p| p.unflushed + p.in_flight);
        let verdict = if pending == 0 {
            link.check(file, now)
        } else {
            let mut seen = file.clone();
            seen.download_count = seen.download_count.saturating_add(pending);
            link.check(&seen, now)
        };
        if let Err(gone) = verdict {
            return Admission::Gone(gone);
        }
        if count {
            let entry = state.files.entry(file.id).or_insert(Pending {
                unflushed: 0,
                in_flight: 0,
                last_at: now,
            });
            entry.unflushed += 1;
            entry.last_at = entry.last_at.max(now);
        }
        Admission::Admitted { counted: count }
    }

    /// Takes back a download counted by [`admit`](Self::admit) whose body
    /// could not be started. A no-op when it was flushed meanwhile.
    pub(crate) fn uncount(&self, file: FileId) {
        let mut state = self.lock();
        if let Some(p) = state.files.get_mut(&file) {
            p.unflushed = p.unflushed.saturating_sub(1);
            if p.unflushed == 0 && p.in_flight == 0 {
                state.files.remove(&file);
            }
        }
    }

    /// Downloads counted and not yet written, per file.
    #[cfg(test)]
    pub(crate) fn pending(&self, file: FileId) -> u64 {
        self.lock().files.get(&file).map_or(0, |p| p.unflushed + p.in_flight)
    }

    /// Starts a flush: moves every unflushed count in flight and returns
    /// them, or `None` when there is nothing to write. Flushes must not
    /// overlap; the caller serialises them. Every `Some` must be followed
    /// by [`end_flush`](Self::end_flush) (see [`FlushGuard`]).
    pub(crate) fn begin_flush(&self) -> Option<Vec<DownloadHit>> {
        let mut state = self.lock();
        let mut hits = Vec::new();
        for (&file_id, p) in &mut state.files {
            if p.unflushed > 0 {
                p.in_flight += p.unflushed;
                p.unflushed = 0;
                hits.push(DownloadHit {
                    file_id,
                    count: p.in_flight,
                    last_at: p.last_at,
                });
            }
        }
        if hits.is_empty() {
            return None;
        }
        state.epoch += 1;
        Some(hits)
    }

    /// Ends a flush: forgets the counts in flight when they were written,
    /// or makes them unflushed again for the next flush.
    pub(crate) fn end_flush(&self, written: bool) {
        {
            let mut state = self.lock();
            state.files.retain(|_, p| {
                if !written {
                    p.unflushed += p.in_flight;
                }
                p.in_flight = 0;
                p.unflushed > 0
            });
            state.epoch += 1;
        }
        self.flush_ended.notify_waiters();
    }
}

/// Ends a begun flush exactly once, as failed unless told otherwise, so a
/// cancelled flush puts its counts back instead of losing them.
pub(crate) struct FlushGuard<'a> {
    counter: &'a DownloadCounter,
    ended: bool,
}

impl<'a> FlushGuard<'a> {
    pub(crate) fn new(counter: &'a DownloadCounter) -> Self {
        Self { counter, ended: false }
    }

    pub(crate) fn end(mut self, written: bool) {
        self.ended = true;
        self.counter.end_flush(written);
    }
}

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.counter.end_flush(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use teledrop_core::file::{FileState, MediaKind};
    use teledrop_core::{ChatId, LinkToken, MessageId, ObjectKey, Sha256, UserId};

    fn file(count: u64) -> FileRecord {
        FileRecord {
            id: FileId::new(),
            owner: UserId(1),
            chat_id: ChatId(1),
            message_id: MessageId(1),
            kind: MediaKind::Document,
            file_unique_id: "u".into(),
            name: "n".into(),
            mime_type: "text/plain".into(),
            size: 1,
            sha256: Sha256::digest(b"x"),
            object_key: ObjectKey::for_new_blob(),
            state: FileState::Active,
            created_at: Utc::now(),
            last_download_at: None,
            download_count: count,
            deleted_at: None,
        }
    }

    fn link(file: &FileRecord, max: Option<u64>) -> LinkRecord {
        LinkRecord {
            token: LinkToken::generate(),
            file_id: file.id,
            created_at: Utc::now(),
            expires_at: None,
            max_downloads: max,
            password_hash: None,
            revoked_at: None,
        }
    }

    #[test]
    fn a_limit_counts_downloads_not_yet_flushed() {
        let c = DownloadCounter::default();
        let f = file(0);
        let l = link(&f, Some(2));
        let now = Utc::now();
        assert_eq!(c.admit(0, &l, &f, now, true), Admission::Admitted { counted: true });
        // Not counting (HEAD, mid-file range) still checks the limit.
        assert_eq!(c.admit(0, &l, &f, now, false), Admission::Admitted { counted: false });
        assert_eq!(c.admit(0, &l, &f, now, true), Admission::Admitted { counted: true });
        assert_eq!(
            c.admit(0, &l, &f, now, false),
            Admission::Gone(LinkGone::DownloadLimitReached)
        );
        assert_eq!(
            c.admit(0, &l, &f, now, true),
            Admission::Gone(LinkGone::DownloadLimitReached)
        );
        assert_eq!(c.pending(f.id), 2);
    }

    #[test]
    fn flush_moves_counts_and_bumps_the_epoch() {
        let c = DownloadCounter::default();
        let f = file(0);
        let l = link(&f, Some(3));
        let t1 = Utc::now();
        let t2 = t1 + chrono::Duration::seconds(5);
        c.admit(0, &l, &f, t2, true);
        c.admit(0, &l, &f, t1, true);
        let hits = c.begin_flush().unwrap();
        assert_eq!(
            hits,
            vec![DownloadHit {
                file_id: f.id,
                count: 2,
                last_at: t2
            }]
        );
        // A read noted before the flush began is stale now, and so is one
        // noted while it runs.
        assert_eq!(c.admit(0, &l, &f, t1, true), Admission::Stale);
        assert_eq!(c.admit(1, &l, &f, t1, true), Admission::Stale);
        c.end_flush(true);
        assert_eq!(c.pending(f.id), 0);
        assert!(c.begin_flush().is_none());
        // After the flush the catalog says 2.
        let f2 = FileRecord {
            download_count: 2,
            ..f.clone()
        };
        assert_eq!(c.admit(2, &l, &f2, t1, true), Admission::Admitted { counted: true });
        assert_eq!(
            c.admit(2, &l, &f2, t1, true),
            Admission::Gone(LinkGone::DownloadLimitReached)
        );
    }

    #[test]
    fn a_failed_or_cancelled_flush_keeps_the_counts() {
        let c = DownloadCounter::default();
        let f = file(0);
        let l = link(&f, None);
        let now = Utc::now();
        c.admit(0, &l, &f, now, true);
        let hits = c.begin_flush().unwrap();
        // Counted while the write runs.
        c.admit(1, &l, &f, now, true);
        c.end_flush(false);
        assert_eq!(c.pending(f.id), 2);
        assert_eq!(hits[0].count, 1);

        let hits = c.begin_flush().unwrap();
        assert_eq!(hits[0].count, 2);
        drop(FlushGuard::new(&c));
        assert_eq!(c.pending(f.id), 2);
        let hits = c.begin_flush().unwrap();
        assert_eq!(hits[0].count, 2);
        FlushGuard::new(&c).end(true);
        assert_eq!(c.pending(f.id), 0);
    }

    #[test]
    fn unlimited_links_are_never_stale() {
        let c = DownloadCounter::default();
        let f = file(0);
        let l = link(&f, None);
        c.admit(0, &l, &f, Utc::now(), true);
        c.begin_flush().unwrap();
        assert_eq!(
            c.admit(0, &l, &f, Utc::now(), true),
            Admission::Admitted { counted: true }
        );
    }

    #[test]
    fn uncount_takes_back_an_unflushed_download() {
        let c = DownloadCounter::default();
        let f = file(0);
        let l = link(&f, Some(1));
        let now = Utc::now();
        c.admit(0, &l, &f, now, true);
        c.uncount(f.id);
        assert_eq!(c.pending(f.id), 0);
        assert_eq!(c.admit(0, &l, &f, now, true), Admission::Admitted { counted: true });
        c.uncount(FileId::new());
    }

    #[tokio::test]
    async fn settled_epoch_waits_for_a_running_flush() {
        let c = std::sync::Arc::new(DownloadCounter::default());
        let f = file(0);
        c.admit(0, &link(&f, None), &f, Utc::now(), true);
        assert_eq!(c.settled_epoch(Duration::from_secs(60)).await, 0);
        c.begin_flush().unwrap();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.settled_epoch(Duration::from_secs(60)).await }
        });
        tokio::task::yield_now().await;
        c.end_flush(true);
        assert_eq!(waiter.await.unwrap(), 2);
        // A flush that never ends is waited for only so long.
        c.admit(2, &link(&f, None), &f, Utc::now(), true);
        c.begin_flush().unwrap();
        assert_eq!(c.settled_epoch(Duration::ZERO).await, 3);
    }
}
