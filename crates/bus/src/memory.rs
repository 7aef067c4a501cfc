//! The in-process bus of `standalone`: a bounded channel. It holds nothing
//! across restarts; the poller records each update as a job in the catalog
//! before it confirms the update to Telegram, and unfinished jobs are
//! recovered from the catalog at start.

use crate::{Bus, BusError, Delivery, Envelope, Settle};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};

#[derive(Clone)]
pub struct MemoryBus {
    tx: mpsc::Sender<(Envelope, u32)>,
    rx: Arc<Mutex<mpsc::Receiver<(Envelope, u32)>>>,
}

impl MemoryBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Self {
            tx,
            rx: Arc::new(Mutex::new(rx)),
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, envelope: Envelope) -> Result<(), BusError> {
        self.tx.send((envelope, 1)).await.map_err(|_| BusError::Closed)
    }

    async fn next(&self) -> Result<Option<Delivery>, BusError> {
        let got = self.rx.lock().await.recv().await;
        Ok(got.map(|(envelope, attempt)| Delivery {
            envelope: envelope.clone(),
            attempt,
            settle: Box::new(MemorySettle {
                tx: self.tx.clone(),
                envelope,
                attempt,
            }),
        }))
    }
}

struct MemorySettle {
    tx: mpsc::Sender<(Envelope, u32)>,
    envelope: Envelope,
    attempt: u32,
}

#[async_trait]
impl Settle for MemorySettle {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        Ok(())
    }

    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BusError> {
        let MemorySettle { tx, envelope, attempt } = *self;
        // Redeliver later without holding the consumer; a full channel
        // makes the timer task wait, never drop.
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send((envelope, attempt + 1)).await;
        });
        Ok(())
    }

    async fn term(self: Box<Self>) -> Result<(), BusError> {
        Ok(())
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn env(id: i64) -> Envelope {
        Envelope::new(id, Bytes::from(format!("{{\"update_id\":{id}}}")))
    }

    #[tokio::test]
    async fn delivers_in_order_and_redelivers_after_nak() {
        let bus = MemoryBus::new(4);
        bus.publish(env(1)).await.unwrap();
        bus.publish(env(2)).await.unwrap();
        let d1 = bus.next().await.unwrap().unwrap();
        assert_eq!((d1.envelope.update_id, d1.attempt), (1, 1));
        d1.settle.nak(Duration::from_millis(1)).await.unwrap();
        let d2 = bus.next().await.unwrap().unwrap();
        assert_eq!(d2.envelope.update_id, 2);
        d2.settle.ack().await.unwrap();
        let again = bus.next().await.unwrap().unwrap();
        assert_eq!((again.envelope.update_id, again.attempt), (1, 2));
    }

    #[tokio::test]
    async fn publish_waits_when_full() {
        let bus = MemoryBus::new(1);
        bus.publish(env(1)).await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_millis(50), bus.publish(env(2))).await;
        assert!(blocked.is_err(), "publish into a full bus must wait");
        let d = bus.next().await.unwrap().unwrap();
        d.settle.ack().await.unwrap();
        bus.publish(env(3)).await.unwrap();
    }
}
