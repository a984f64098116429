//! Telling a plugin call in progress to end now, from another thread: a
//! partition worker told to stop (a rebalance, a shutdown) must not wait
//! for its plugin's time limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Raised once, it ends the calls of every instance it was given to, at
/// once, wherever they are (running their own code or waiting in a host
/// import), and every call after.
#[derive(Debug, Default, Clone)]
pub struct Interrupt {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    raised: AtomicBool,
    notify: Notify,
}

impl Interrupt {
    /// A new, unraised interrupt.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends the calls in progress and refuses new ones.
    pub fn raise(&self) {
        self.inner.raised.store(true, Ordering::Release);
        self.inner.notify.notify_waiters();
    }

    /// Whether it was raised.
    #[must_use]
    pub fn is_raised(&self) -> bool {
        self.inner.raised.load(Ordering::Acquire)
    }

    /// Resolves once raised (at once if it already was).
    pub(super) async fn raised(&self) {
        let notified = self.inner.notify.notified();
        tokio::pin!(notified);
        // Registered before the check, so a raise in between is not missed.
        notified.as_mut().enable();
        if self.is_raised() {
            return;
        }
        notified.await;
    }
}
