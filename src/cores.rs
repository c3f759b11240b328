//! One single-threaded runtime per core, each on its own thread, for the public connections. A
//! connection is handed to the next core in turn and stays there: its request tasks, its pooled
//! downstream connections and its Redis connection all run on that core's thread, so a request never
//! waits on a wake-up from another thread. This is how nginx's workers share out a machine.
//!
//! The accept loop, the admin port, the queue's workers and the background tasks stay on the main runtime.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

struct Core {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The per-core runtimes; dropping it stops them (tasks still running on them are dropped).
pub struct Cores {
    cores: Vec<Core>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Cores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cores").field("count", &self.cores.len()).finish()
    }
}

impl Cores {
    /// Starts `count` runtimes (at least one).
    pub fn start(count: usize) -> std::io::Result<Self> {
        let cores = (0..count.max(1))
            .map(|index| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let handle = runtime.handle().clone();
                let (stop, stopped) = oneshot::channel::<()>();
                let thread = std::thread::Builder::new()
                    .name(format!("hookgate-core-{index}"))
                    .spawn(move || {
                        // A current-thread runtime runs its tasks while something blocks on it.
                        runtime.block_on(async {
                            let _ = stopped.await;
                        });
                        runtime.shutdown_timeout(Duration::from_secs(1));
                    })?;
                Ok(Core {
                    handle,
                    stop: Some(stop),
                    thread: Some(thread),
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Cores {
            cores,
            next: AtomicUsize::new(0),
        })
    }

    /// The core that takes the next connection, in turn.
    pub fn next(&self) -> &Handle {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.cores.len();
        &self.cores[index].handle
    }

    /// How many runtimes (one per core).
    pub fn len(&self) -> usize {
        self.cores.len()
    }

    /// True when there are no runtimes.
    pub fn is_empty(&self) -> bool {
        self.cores.is_empty()
    }
}

impl Drop for Cores {
    fn drop(&mut self) {
        for core in &mut self.cores {
            if let Some(stop) = core.stop.take() {
                let _ = stop.send(());
            }
        }
        for core in &mut self.cores {
            if let Some(thread) = core.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
