//! Group commit: one journal sync acknowledges every update committed before it.
//!
//! Owner shards commit their write batches to the fjall journal without syncing, then
//! hand their pending acknowledgements here. A single sync thread drains everything that
//! is waiting, calls `persist(SyncData)` once, and only then releases the replies. While
//! one sync runs, the shards keep committing, so the next sync covers all of their
//! batches: the number of syncs per second stays bounded by the disk, the number of
//! acknowledged updates per sync grows with load.
//!
//! Invariant: a reply leaves this module only after a sync that started after the
//! reply's batch was committed has succeeded. A failed sync poisons the store: every
//! later write is refused (the kernel may have dropped the dirty pages; retrying the sync
//! could falsely succeed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use fjall::{Database, PersistMode};

use crate::error::StoreError;
use crate::metrics::StoreMetrics;

/// Replies waiting for durability, with how many updates they acknowledge.
pub(crate) struct PendingAcks {
    /// Number of updates these replies acknowledge (for the group-commit metric).
    pub updates: u64,
    /// Called with the sync's result; sends the replies.
    pub deliver: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
}

/// Handle to the sync thread. Dropping every handle stops the thread after it has
/// synced what was queued.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    tx: mpsc::Sender<PendingAcks>,
    failed: Arc<AtomicBool>,
}

impl GroupCommit {
    /// Starts the sync thread for `db`.
    pub fn start(
        db: Database,
        metrics: StoreMetrics,
    ) -> std::io::Result<(GroupCommit, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel::<PendingAcks>();
        let failed = Arc::new(AtomicBool::new(false));
        let thread_failed = failed.clone();
        let handle = std::thread::Builder::new()
            .name("journal-sync".into())
            .spawn(move || sync_loop(db, rx, metrics, thread_failed))?;
        Ok((GroupCommit { tx, failed }, handle))
    }

    /// Queues replies to be delivered after the next journal sync.
    pub fn after_sync(&self, pending: PendingAcks) {
        if let Err(mpsc::SendError(pending)) = self.tx.send(pending) {
            (pending.deliver)(Err(StoreError::ShuttingDown));
        }
    }

    /// True once a sync has failed: the store must refuse writes.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The flag behind [`GroupCommit::is_failed`], for holders that must not keep the
    /// sync thread alive.
    pub fn failed_flag(&self) -> Arc<AtomicBool> {
        self.failed.clone()
    }
}

fn sync_loop(
    db: Database,
    rx: mpsc::Receiver<PendingAcks>,
    metrics: StoreMetrics,
    failed: Arc<AtomicBool>,
) {
    let mut waiting = Vec::new();
    while let Ok(first) = rx.recv() {
        waiting.push(first);
        waiting.extend(rx.try_iter());
        let started = Instant::now();
        let result = if failed.load(Ordering::Acquire) {
            Err(StoreError::Failed)
        } else {
            db.persist(PersistMode::SyncData).map_err(|e| {
                tracing::error!(error = %e, "journal sync failed; refusing further writes");
                failed.store(true, Ordering::Release);
                StoreError::Failed
            })
        };
        metrics.fsyncs.inc();
        metrics
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        let updates: u64 = waiting.iter().map(|p| p.updates).sum();
        metrics.fsync_batch_updates.observe(updates as f64);
        for pending in waiting.drain(..) {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(_) => Err(StoreError::Failed),
            };
            (pending.deliver)(outcome);
        }
    }
}
