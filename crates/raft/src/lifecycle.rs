//! [`Shutdown`]: one signal every task of a daemon watches to stop accepting work.

use std::sync::Arc;
use tokio::sync::watch;

/// A shared stop signal. Cheap to clone; `trigger` once, every `triggered` resolves.
#[derive(Clone)]
pub struct Shutdown {
    sender: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown { sender: Arc::new(watch::channel(false).0) }
    }

    /// Tells every listener to stop accepting.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        *self.sender.borrow()
    }

    /// Resolves once [`trigger`](Self::trigger) has been called (at once if it already was).
    pub async fn triggered(&self) {
        let mut receiver = self.sender.subscribe();
        // Only fails if the sender is gone, and we hold it.
        let _ = receiver.wait_for(|stopping| *stopping).await;
    }
}
