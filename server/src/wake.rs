//! Wake-ups: a decided challenge wakes the long-polls waiting for it, new outbox rows wake
//! the workers. Within one process this is a broadcast; across PostgreSQL replicas the store
//! forwards `NOTIFY`s into it (see `store::notify`).

use tokio::sync::{Notify, broadcast};

/// The process's wake-up channels.
#[derive(Debug)]
pub struct Wake {
    challenges: broadcast::Sender<String>,
    /// Kicks the webhook worker.
    pub outbox: Notify,
    /// Kicks the push delivery worker.
    pub push: Notify,
}

impl Wake {
    /// New, unconnected channels.
    pub fn new() -> Self {
        let (challenges, _) = broadcast::channel(1024);
        Wake { challenges, outbox: Notify::new(), push: Notify::new() }
    }

    /// Subscribes to challenge changes (ids of challenges that left `pending`).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.challenges.subscribe()
    }

    /// Announces that a challenge changed.
    pub fn challenge_changed(&self, id: &str) {
        // No receiver is fine: nobody is waiting.
        let _ = self.challenges.send(id.to_owned());
    }
}

impl Default for Wake {
    fn default() -> Self {
        Self::new()
    }
}
