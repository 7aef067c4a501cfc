//! Watch streams: `{"type": …, "object": …}` JSON lines. A watch resumes
//! from a resourceVersion still in the history, or gets an `ERROR` event
//! carrying a 410 `Expired` Status, as the API server does, and the
//! client must list again. Streams end at `timeoutSeconds`, when the test
//! closes them, or when a watcher falls too far behind.

use crate::api::stream_response;
use crate::resource::Resource;
use crate::selector::Selector;
use crate::state::Shared;
use crate::store::Change;
use axum::body::Bytes;
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

fn line(type_: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": type_, "object": object})).expect("JSON");
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(resource: Resource, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"apiVersion": resource.api_version(), "kind": resource.kind, "metadata": metadata}),
    )
}

/// Decrements the open-watch count however the stream ends.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) fn serve(
    shared: Arc<Shared>,
    resource: Resource,
    namespace: Option<&str>,
    selector: Selector,
    query: &HashMap<String, String>,
) -> Response {
    let flag = |k: &str| query.get(k).is_some_and(|v| v == "true" || v == "1");
    let (bookmarks, initial_events) = (flag("allowWatchBookmarks"), flag("sendInitialEvents"));
    let timeout = Duration::from_secs(query.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(1800));
    let from = query.get("resourceVersion").map(String::as_str);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let started = {
        let store = shared.store();
        store
            .watch_from(resource, namespace, from)
            .map(|(first, live)| (first, live, store.resource_version()))
    };
    let (first, live, start_rv) = match started {
        Ok(s) => s,
        Err(e) => {
            // The API server answers 200 and reports it in the stream.
            let _ = tx.try_send(line("ERROR", &e.to_json()));
            return stream_response(rx);
        }
    };
    shared.open_watches.fetch_add(1, Ordering::SeqCst);
    let open = Open(shared.clone());
    let namespace = namespace.map(str::to_owned);
    let closer = shared.close_watches.subscribe();
    tokio::spawn(async move {
        let _open = open;
        run(
            Watch {
                shared,
                resource,
                namespace,
                selector,
                tx,
                bookmarks,
            },
            first,
            live,
            closer,
            (initial_events, start_rv),
            timeout,
        )
        .await;
    });
    stream_response(rx)
}

struct Watch {
    shared: Arc<Shared>,
    resource: Resource,
    /// `None`: every namespace.
    namespace: Option<String>,
    selector: Selector,
    tx: mpsc::Sender<Bytes>,
    bookmarks: bool,
}

impl Watch {
    /// False once the client is gone.
    async fn send(&self, change: &Change) -> bool {
        if !self.selector.matches(&change.object) {
            return true;
        }
        self.tx.send(line(change.type_, &change.object)).await.is_ok()
    }
}

async fn run(
    w: Watch,
    first: Vec<Arc<Change>>,
    mut live: broadcast::Receiver<Arc<Change>>,
    mut closer: tokio::sync::watch::Receiver<u64>,
    (initial_events, start_rv): (bool, u64),
    timeout: Duration,
) {
    for c in &first {
        if !w.send(c).await {
            return;
        }
    }
    if initial_events && w.tx.send(bookmark(w.resource, start_rv, true)).await.is_err() {
        return;
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticks = tokio::time::interval(w.shared.bookmark_every);
    ticks.tick().await;
    loop {
        // Biased: once the test closed the watches, no change made after
        // that may still reach the client through this stream.
        tokio::select! {
            biased;
            _ = closer.changed() => return,
            () = &mut deadline => return,
            () = w.tx.closed() => return,
            _ = ticks.tick(), if w.bookmarks => {
                let rv = w.shared.store().resource_version();
                if w.tx.send(bookmark(w.resource, rv, false)).await.is_err() {
                    return;
                }
            }
            change = live.recv() => match change {
                Ok(c) => {
                    let same_scope = c.resource == w.resource
                        && w.namespace.as_ref().is_none_or(|ns| *ns == c.namespace);
                    if same_scope && !w.send(&c).await {
                        return;
                    }
                }
                // Fell behind (or the server is going): end the stream;
                // the client resumes from the last version it saw.
                Err(_) => return,
            },
        }
    }
}
