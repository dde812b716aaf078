//! A spawned task that ends when its handle is dropped, so that a subscription's tasks never
//! outlive what owns them: dropping the last [`Reactions`](super::Reactions) handle without a
//! shutdown stops its coordinators, their partition workers and their lease keepers at once,
//! as a crash would (the leases then expire and other nodes take over).

use std::future::Future;

use tokio::task::{JoinError, JoinHandle};

/// A task aborted when dropped.
#[derive(Debug)]
pub(crate) struct Task<T>(JoinHandle<T>);

impl<T: Send + 'static> Task<T> {
    /// Spawns `future` on the current runtime.
    pub(crate) fn spawn(future: impl Future<Output = T> + Send + 'static) -> Self {
        Self(tokio::spawn(future))
    }
}

impl<T> Task<T> {
    /// Whether the task has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Waits for the task to end (cancel-safe: the task keeps running if this is dropped).
    pub(crate) async fn join(&mut self) -> Result<T, JoinError> {
        (&mut self.0).await
    }

    /// Stops the task at its next await point.
    pub(crate) fn abort(&self) {
        self.0.abort();
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
