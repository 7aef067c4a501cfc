//! Local mode's `getFile`, as slow as the real one.
//!
//! `telegram-bot-api --local` answers `getFile` only after it has
//! downloaded the whole file from Telegram's data centres into its working
//! directory, which for a 2000 MB file takes minutes. Meanwhile the HTTP
//! request stays open and the file grows on disk at its final path. The
//! download belongs to the server, not to the request: a client that gives
//! up and asks again finds it further along, and every caller gets the
//! answer when it is done.
//!
//! Each `file_id` has one [`LocalCopy`]: the fetch (started by the first
//! `getFile`, then shared), how far it got, and how many `getFile` calls
//! asked for it (what tests read to tell that a second worker asked).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::content;

/// Bytes written between two looks at the clock.
const SLICE: usize = 256 * 1024;

/// Where a fetch stands: `None` while it runs, then its outcome (errors
/// as text: `io::Error` is not `Clone`).
type Outcome = Option<Result<PathBuf, String>>;

/// The local-mode copy of one `file_id`.
#[derive(Debug, Default)]
pub struct LocalCopy {
    fetch: Mutex<Option<watch::Receiver<Outcome>>>,
    fetched: AtomicU64,
    get_file_calls: AtomicU32,
}

/// What to fetch, and how fast.
pub struct FetchSpec {
    pub key: u64,
    pub size: u64,
    pub target: PathBuf,
    /// Bytes per second; `None`: at once.
    pub rate: Option<u64>,
}

impl LocalCopy {
    /// Counts one `getFile` call.
    pub fn count_call(&self) {
        self.get_file_calls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get_file_calls(&self) -> u32 {
        self.get_file_calls.load(Ordering::Relaxed)
    }

    pub fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// Whether a fetch has been started (and maybe finished).
    pub fn started(&self) -> bool {
        self.fetch.lock().expect("fetch lock").is_some()
    }

    /// The copy's path once it is complete: starts the fetch on the first
    /// call, joins it on later ones. Dropping the future (the client hung
    /// up) leaves the fetch running; a failed fetch is tried anew by the
    /// next call.
    pub async fn get(
        self: &std::sync::Arc<Self>,
        spec: FetchSpec,
        stop: &CancellationToken,
    ) -> std::io::Result<PathBuf> {
        let mut rx = {
            let mut slot = self.fetch.lock().expect("fetch lock");
            let failed = slot.as_ref().is_some_and(|rx| matches!(&*rx.borrow(), Some(Err(_))));
            if slot.is_none() || failed {
                let (tx, rx) = watch::channel(None);
                *slot = Some(rx);
                let me = self.clone();
                let stop = stop.clone();
                tokio::task::spawn_blocking(move || {
                    let outcome = me.write(&spec, &stop).map(|()| spec.target).map_err(|e| e.to_string());
                    let _ = tx.send(Some(outcome));
                });
            }
            slot.as_ref().expect("set above").clone()
        };
        let done = tokio::select! {
            r = rx.wait_for(Option::is_some) => r.map_err(|_| std::io::Error::other("fetch task vanished"))?.clone(),
            _ = stop.cancelled() => return Err(std::io::Error::other("shutting down")),
        };
        done.expect("waited for Some").map_err(std::io::Error::other)
    }

    /// Writes the content at its final path, paced to `spec.rate`.
    fn write(&self, spec: &FetchSpec, stop: &CancellationToken) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(parent) = spec.target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        self.fetched.store(0, Ordering::Relaxed);
        let mut out = std::fs::File::create(&spec.target)?;
        let mut buf = vec![0u8; SLICE];
        let started = Instant::now();
        let mut offset = 0u64;
        while offset < spec.size {
            if stop.is_cancelled() {
                return Err(std::io::Error::other("simulator shut down"));
            }
            let n = (spec.size - offset).min(SLICE as u64) as usize;
            content::fill(spec.key, offset, &mut buf[..n]);
            out.write_all(&buf[..n])?;
            offset += n as u64;
            self.fetched.store(offset, Ordering::Relaxed);
            if let Some(due) = due_at(offset, spec.rate) {
                let ahead = due.saturating_sub(started.elapsed());
                // A blocking thread of its own: sleeping here paces only
                // this fetch.
                std::thread::sleep(ahead);
            }
        }
        out.sync_all()
    }
}

/// When `bytes` should have been written at `rate` bytes per second.
fn due_at(bytes: u64, rate: Option<u64>) -> Option<Duration> {
    let rate = rate.filter(|r| *r > 0)?;
    Some(Duration::from_secs_f64(bytes as f64 / rate as f64))
}

/// The copy's path under the simulator's working directory.
pub fn target(local_dir: &Path, token: &str, rel: &str) -> std::io::Result<PathBuf> {
    Ok(std::path::absolute(local_dir)?.join(token).join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn pacing_spreads_bytes_over_time() {
        assert_eq!(due_at(10, None), None);
        assert_eq!(due_at(10, Some(0)), None);
        assert_eq!(due_at(5_000_000, Some(1_000_000)), Some(Duration::from_secs(5)));
    }

    #[tokio::test]
    async fn callers_share_one_fetch_that_outlives_them() {
        let dir = tempfile::tempdir().unwrap();
        let copy = Arc::new(LocalCopy::default());
        let stop = CancellationToken::new();
        let size = 4 * SLICE as u64;
        let spec = |d: &Path| FetchSpec {
            key: 7,
            size,
            target: d.join("a/file_1.bin"),
            rate: Some(size * 4),
        };
        // The first caller hangs up at once: the fetch goes on.
        let first = copy.get(spec(dir.path()), &stop);
        drop(tokio::time::timeout(Duration::ZERO, first).await);
        assert!(copy.started());
        let path = copy.get(spec(dir.path()), &stop).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        assert_eq!(copy.fetched(), size);
        let mut want = vec![0u8; size as usize];
        content::fill(7, 0, &mut want);
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }
}
