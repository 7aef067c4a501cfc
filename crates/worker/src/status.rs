//! The status message while a file is on its way.
//!
//! A job's status message ("⏳ Receiving …") is edited in place while the
//! job waits for `getFile` (a local Bot API server answers only once it
//! holds the whole file, minutes for big ones) and while the bytes flow.
//! One editor task per phase edits it at most once per interval, because
//! teloxide's throttle does not pace edits and Telegram answers 429 to
//! bursts; a 429's `retry_after` is honoured before the next edit.

use crate::replies;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use teledrop_core::{ChatId, IncomingFile, MessageId};
use teledrop_telegram::Telegram;
use tokio_util::sync::CancellationToken;

/// A running editor of one status message.
pub(crate) struct StatusEditor {
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl StatusEditor {
    /// Every `every`, asks `text` for the message's new text and edits the
    /// message when there is one (`None`: nothing new to say). Without a
    /// status message (the user blocked the bot, or deleted it) nothing is
    /// edited.
    fn spawn<F>(telegram: &Telegram, chat: ChatId, message: Option<MessageId>, every: Duration, mut text: F) -> Self
    where
        F: FnMut() -> Option<String> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let Some(message) = message else {
            return StatusEditor { cancel, task: None };
        };
        let telegram = telegram.clone();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let Some(text) = text() else { continue };
                if let Err(e) = telegram.edit_html(chat, message, &text).await
                    && let Some(wait) = e.retry_after()
                {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        });
        StatusEditor {
            cancel,
            task: Some(task),
        }
    }

    /// While `getFile` is asked: how long it has been asking.
    pub(crate) fn asking(telegram: &Telegram, f: &IncomingFile, message: Option<MessageId>, every: Duration) -> Self {
        let (file, since) = (f.clone(), Instant::now());
        let text = move || Some(replies::asking(&file, since.elapsed()));
        Self::spawn(telegram, f.chat_id, message, every, text)
    }

    /// While the bytes flow: how many of the `expected` have arrived, as
    /// `received` counts them; no edit while that does not move.
    pub(crate) fn receiving(
        telegram: &Telegram,
        f: &IncomingFile,
        message: Option<MessageId>,
        every: Duration,
        received: Arc<AtomicU64>,
        expected: Option<u64>,
    ) -> Self {
        let (file, mut last) = (f.clone(), 0);
        let text = move || {
            let done = received.load(Ordering::Relaxed);
            (done != last).then(|| {
                last = done;
                replies::progress(&file, done, expected)
            })
        };
        Self::spawn(telegram, f.chat_id, message, every, text)
    }

    /// Stops editing and waits for an edit in flight to land, so that it
    /// cannot overwrite what is said next (the final reply).
    pub(crate) async fn stop(self) {
        self.cancel.cancel();
        if let Some(t) = self.task {
            let _ = t.await;
        }
    }
}
