//! Shutdown: one trigger, many listeners. Whoever must stop holds a [`Shutdown`].

use tokio::sync::watch;

/// Fires the shutdown for everyone holding a [`Shutdown`] from it.
#[derive(Clone)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// Tells a task that it should stop taking new work and finish what it holds.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// A linked trigger and listener.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        // Fails only when no listener is left, which means nothing needs telling.
        let _ = self.tx.send(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown has been triggered (at once if it already was).
    pub async fn wait(&mut self) {
        // An error means the trigger was dropped: treat it as a shutdown too.
        let _ = self.rx.wait_for(|stop| *stop).await;
    }
}
