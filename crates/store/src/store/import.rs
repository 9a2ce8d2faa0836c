//! Batch imports on one node: stage rows, finish, publish (see [`crate::batch`]).
//!
//! The cluster layer drives these steps on every node: all nodes stage and finish before
//! any publishes, so any boundary a coordinator has seen published is readable on every
//! node that staged it.

use std::sync::Arc;

use speedlayer_core::{BatchBoundary, BatchValue, Key, ValueType};

use super::Store;
use speedlayer_api::{Retiring, Staged};

use crate::batch::BatchRecord;
use crate::catalog::View;
use crate::clock::wall_clock_us;
use crate::error::{Result, StoreError};

/// A checked import request: the view and the boundary it would publish.
#[derive(Clone, Debug)]
pub struct ImportCheck {
    /// The view imported into.
    pub view: Arc<View>,
    /// The boundary, aligned and after the view's current one.
    pub boundary: BatchBoundary,
    /// The view's one value type (batch views need a typed view).
    pub value_type: ValueType,
}

impl Store {
    /// What this node knows of `view`'s batch views.
    pub fn batch_record(&self, view: &str) -> Result<BatchRecord> {
        let view = self.view(view)?;
        Ok(self.inner.batches.record(view.id))
    }

    /// `view`'s current batch boundary ([`speedlayer_core::BatchBoundary::NONE`] before
    /// the first import): what coordinators read at.
    pub fn boundary(&self, view: &str) -> Result<BatchBoundary> {
        let view = self.view(view)?;
        Ok(self.inner.batches.published(view.id))
    }

    /// `(view name, published boundary, its import)` of every view with a batch view:
    /// what catalog gossip compares between nodes.
    pub fn published_boundaries(&self) -> Vec<(String, BatchBoundary, u64)> {
        let views = self.views();
        let mut out: Vec<_> = self
            .inner
            .batches
            .records()
            .into_iter()
            .filter(|(_, r)| r.published != BatchBoundary::NONE)
            .filter_map(|(id, r)| {
                let view = views.iter().find(|v| v.id == id)?;
                Some((view.name.clone(), r.published, r.published_import))
            })
            .collect();
        out.sort();
        out
    }

    /// Checks that `view` may take a batch view covering until `covers_until` (Unix
    /// seconds): a typed view, an aligned boundary, later than the current one.
    pub fn check_import(&self, view: &str, covers_until: u64) -> Result<ImportCheck> {
        let (view, value_type) = self.typed_view(view)?;
        let boundary = BatchBoundary::for_view(covers_until, view.spec.epoch_secs)?;
        let current = self.inner.batches.published(view.id);
        if boundary <= current {
            return Err(StoreError::Request(
                speedlayer_api::Error::BoundaryNotAfter {
                    view: view.name.clone(),
                    requested: boundary,
                    current,
                },
            ));
        }
        Ok(ImportCheck {
            view,
            boundary,
            value_type,
        })
    }

    /// Starts staging import `import` of `view` at `boundary` (idempotent for the same
    /// import). Any other import of the view still staged here is abandoned: one import
    /// per view at a time, the latest wins.
    pub async fn stage_begin(
        &self,
        view: &str,
        boundary: BatchBoundary,
        import: u64,
    ) -> Result<()> {
        let check = self.check_import(view, boundary.secs())?;
        self.blocking(move |store| {
            let create = Some((check.boundary, import));
            store.inner.batches.update(check.view.id, create, |record| {
                let dropped = take_staged(record, |s| s.import != import);
                if !record.staged.iter().any(|s| s.import == import) {
                    record.staged.push(Staged {
                        boundary: check.boundary,
                        import,
                        finished: false,
                        started_us: wall_clock_us(),
                    });
                }
                Ok(((), dropped))
            })
        })
        .await
    }

    /// Writes rows into import `import`'s table (journaled, not yet synced: see
    /// [`Store::stage_finish`]). Every row is checked against the view's type first; a
    /// row that does not fit fails the call and writes nothing.
    pub async fn stage_rows(
        &self,
        view: &str,
        boundary: BatchBoundary,
        import: u64,
        rows: Vec<(Key, BatchValue)>,
    ) -> Result<usize> {
        let (view, value_type) = self.typed_view(view)?;
        if let Some((key, _)) = rows.iter().find(|(_, v)| !v.fits(value_type)) {
            return Err(StoreError::Request(speedlayer_api::Error::BatchRow(
                format!(
                    "row {:?} does not hold a {value_type} value",
                    String::from_utf8_lossy(&key.partition)
                ),
            )));
        }
        let Some(table) = self.inner.batches.staging_table(view.id, boundary, import) else {
            return Err(no_such_import(&view, boundary, import));
        };
        let count = rows.len();
        self.blocking(move |store| {
            let mut batch = store.inner.db.batch();
            for (key, value) in &rows {
                batch.insert(&table, key.encode(), value.encode());
            }
            batch.commit()?;
            store.inner.metrics.batch_rows_staged.inc_by(count as u64);
            Ok(count)
        })
        .await
    }

    /// Makes every staged row of import `import` durable and marks it staged: from now on
    /// reads may name its boundary here.
    pub async fn stage_finish(
        &self,
        view: &str,
        boundary: BatchBoundary,
        import: u64,
    ) -> Result<()> {
        let view = self.view(view)?;
        self.blocking(move |store| {
            store.inner.batches.sync()?;
            store.inner.batches.update(view.id, None, |record| {
                let staged = record
                    .staged
                    .iter_mut()
                    .find(|s| s.import == import && s.boundary == boundary)
                    .ok_or_else(|| no_such_import(&view, boundary, import))?;
                staged.finished = true;
                Ok(((), Vec::new()))
            })
        })
        .await
    }

    /// Makes staged import `import` the view's current boundary. The previous boundary
    /// stays readable for the grace period. Returns false when it already was current
    /// (publications repeat: gossip and the coordinator may both deliver one).
    pub async fn publish(&self, view: &str, boundary: BatchBoundary, import: u64) -> Result<bool> {
        let view = self.view(view)?;
        let name = view.name.clone();
        let grace_us = self.inner.batch_grace.as_micros() as u64;
        let published = self
            .blocking(move |store| {
                store.inner.batches.update(view.id, None, |record| {
                    if record.published >= boundary {
                        return Ok((false, Vec::new()));
                    }
                    let at = record
                        .staged
                        .iter()
                        .position(|s| s.import == import && s.boundary == boundary && s.finished)
                        .ok_or_else(|| no_such_import(&view, boundary, import))?;
                    record.staged.remove(at);
                    record.retiring.push(Retiring {
                        boundary: record.published,
                        import: record.published_import,
                        until_us: wall_clock_us().saturating_add(grace_us),
                    });
                    record.published = boundary;
                    record.published_import = import;
                    let obsolete = take_staged(record, |s| s.boundary <= boundary);
                    Ok((true, obsolete))
                })
            })
            .await?;
        if published {
            tracing::info!(view = %name, boundary = boundary.0, "batch view published");
        }
        Ok(published)
    }

    /// Abandons import `import` (a failed import): its table is deleted; nothing readers
    /// see changes. Unknown imports are ignored.
    pub async fn abort_import(&self, view: &str, import: u64) -> Result<()> {
        let view = self.view(view)?;
        self.blocking(move |store| {
            store.inner.batches.update(view.id, None, |record| {
                Ok(((), take_staged(record, |s| s.import == import)))
            })
        })
        .await
    }

    /// Rows of `view`'s batch table at `boundary` after key `after` (encoded; from the
    /// first when `None`), at most `limit`, in key order, as stored (encoded key, encoded
    /// value): what a node that missed an import copies. The boundary must be readable
    /// here ([`StoreError::Request(speedlayer_api::Error::BoundaryUnavailable)`] otherwise).
    pub async fn batch_page(
        &self,
        view: &str,
        boundary: BatchBoundary,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let view = self.view(view)?;
        let (_, table) = self.readable(&view, Some(boundary))?;
        let Some(table) = table else {
            return Ok(Vec::new());
        };
        self.blocking(move |_| {
            let lower = match after {
                Some(after) => std::ops::Bound::Excluded(after),
                None => std::ops::Bound::Unbounded,
            };
            let mut rows = Vec::new();
            for guard in table
                .range::<Vec<u8>, _>((lower, std::ops::Bound::Unbounded))
                .take(limit)
            {
                let (key, value) = guard.into_inner()?;
                rows.push((key.to_vec(), value.to_vec()));
            }
            Ok(rows)
        })
        .await
    }

    /// `view` and its one value type: batch views need a typed view.
    fn typed_view(&self, view: &str) -> Result<(Arc<View>, ValueType)> {
        let view = self.view(view)?;
        match view.spec.value_type.typed() {
            Some(value_type) => Ok((view, value_type)),
            None => Err(StoreError::Request(speedlayer_api::Error::UntypedBatch(
                view.name.clone(),
            ))),
        }
    }

    /// Runs blocking storage work (fsyncs, batch writes) off the async workers.
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|_| StoreError::ShuttingDown)?
    }
}

/// Removes the staged imports `which` selects; their tables, for deletion.
pub(super) fn take_staged(
    record: &mut BatchRecord,
    which: impl Fn(&Staged) -> bool,
) -> Vec<(BatchBoundary, u64)> {
    let mut dropped = Vec::new();
    record.staged.retain(|s| {
        let drop = which(s);
        if drop {
            dropped.push((s.boundary, s.import));
        }
        !drop
    });
    dropped
}

fn no_such_import(view: &View, boundary: BatchBoundary, import: u64) -> StoreError {
    StoreError::Request(speedlayer_api::Error::NoSuchImport {
        view: view.name.clone(),
        boundary,
        import,
    })
}
