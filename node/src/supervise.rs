//! Fail fast: the node stops on its own when a part it cannot run without ends (the log writer
//! thread, the replicator thread, the swarm, a listener). A node that runs on without its writer
//! refuses every append; one without its replicator serves stale copies and witnesses nothing.
//! Both look alive to a supervisor. Stopping with an error instead lets the supervisor restart
//! the node, and a restart recovers the store as after a crash.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The first reason the node must stop, shared by every part that may raise one.
#[derive(Clone, Default)]
pub struct Fatal {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    why: Mutex<Option<String>>,
    raised: tokio::sync::Notify,
    /// Set when the node stops on purpose: parts ending then are not failures.
    standing_down: AtomicBool,
}

impl Fatal {
    /// Records `why` (the first reason is kept) and wakes [`Fatal::wait`].
    pub fn raise(&self, why: String) {
        if self.inner.standing_down.load(Ordering::Acquire) {
            tracing::debug!(reason = %why, "part ended while the node stops");
            return;
        }
        tracing::error!(reason = %why, "a part of the node failed; the node stops");
        let mut slot = match self.inner.why.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if slot.is_none() {
            *slot = Some(why);
        }
        drop(slot);
        // `notify_one` stores a permit, so a waiter that comes later still wakes.
        self.inner.raised.notify_one();
        self.inner.raised.notify_waiters();
    }

    /// Raises if `e` says the store takes no more writes until it is reopened: a restart does
    /// that, so the node stops rather than refuse every write.
    pub fn on_store_error(&self, e: &crate::store::Error) {
        if matches!(e, crate::store::Error::Failed) {
            self.raise(format!("the store failed: {e}"));
        }
    }

    /// The node stops on purpose: from now on, parts that end raise nothing.
    pub fn stand_down(&self) {
        self.inner.standing_down.store(true, Ordering::Release);
    }

    /// The reason, if one was raised.
    pub fn get(&self) -> Option<String> {
        match self.inner.why.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Resolves with the reason once one is raised.
    pub async fn wait(&self) -> String {
        loop {
            let notified = self.inner.raised.notified();
            if let Some(why) = self.get() {
                return why;
            }
            notified.await;
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Starts a named thread the node cannot run without: if `f` panics, `fatal` is raised. A
/// normal return is the part's own orderly end (its input closed because the node stops).
pub fn thread<F>(name: &str, fatal: Fatal, f: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let label = name.to_string();
    std::thread::Builder::new().name(name.into()).spawn(move || {
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            fatal.raise(format!("the {label} thread panicked: {}", panic_text(&*p)));
        }
    })
}

/// Watches a task that should run until the node stops: if it panics or returns, `fatal` is
/// raised. Aborting the returned handle (on shutdown) aborts the task, and raises nothing.
pub fn task(name: &str, fatal: Fatal, h: tokio::task::JoinHandle<()>) -> tokio::task::AbortHandle {
    let abort = h.abort_handle();
    let label = name.to_string();
    tokio::spawn(async move {
        match h.await {
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                let why = match e.try_into_panic() {
                    Ok(p) => panic_text(&*p),
                    Err(e) => e.to_string(),
                };
                fatal.raise(format!("the {label} task panicked: {why}"));
            }
            Ok(()) => fatal.raise(format!("the {label} task ended")),
        }
    });
    abort
}

/// Spawns `fut` as a watched task (see [`task`]).
pub fn spawn<F>(name: &str, fatal: Fatal, fut: F) -> tokio::task::AbortHandle
where
    F: Future<Output = ()> + Send + 'static,
{
    task(name, fatal, tokio::spawn(fut))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: failing loudly is the point
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_panicking_thread_raises_with_its_name_and_message() {
        let fatal = Fatal::default();
        let h = thread("test part", fatal.clone(), || panic!("boom")).unwrap();
        h.join().unwrap(); // the panic was caught
        let why = tokio::time::timeout(Duration::from_secs(5), fatal.wait()).await.unwrap();
        assert!(why.contains("test part") && why.contains("boom"), "{why}");
    }

    #[tokio::test]
    async fn a_thread_that_returns_raises_nothing() {
        let fatal = Fatal::default();
        thread("quiet", fatal.clone(), || {}).unwrap().join().unwrap();
        assert_eq!(fatal.get(), None);
    }

    #[tokio::test]
    async fn a_task_that_panics_or_ends_raises_and_an_aborted_one_does_not() {
        let fatal = Fatal::default();
        let a = spawn("sleeper", fatal.clone(), std::future::pending());
        a.abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(fatal.get(), None, "an aborted task is an orderly stop");

        spawn("ender", fatal.clone(), async {});
        let why = tokio::time::timeout(Duration::from_secs(5), fatal.wait()).await.unwrap();
        assert!(why.contains("ender") && why.contains("ended"), "{why}");

        let second = Fatal::default();
        spawn("panicker", second.clone(), async { panic!("task boom") });
        let why = tokio::time::timeout(Duration::from_secs(5), second.wait()).await.unwrap();
        assert!(why.contains("panicker") && why.contains("task boom"), "{why}");
    }

    #[tokio::test]
    async fn nothing_is_raised_once_the_node_stands_down() {
        let fatal = Fatal::default();
        fatal.stand_down();
        spawn("ender", fatal.clone(), async {});
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(fatal.get(), None);
    }

    #[tokio::test]
    async fn the_first_reason_is_kept() {
        let fatal = Fatal::default();
        fatal.raise("first".into());
        fatal.raise("second".into());
        assert_eq!(fatal.wait().await, "first");
    }
}
