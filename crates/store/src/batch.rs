//! Batch views on one node: imported tables, and which boundaries a read may use.
//!
//! An import for boundary T of a view goes through states kept in a durable
//! [`BatchRecord`] per view (keyspace `batches`):
//! **staging** (rows arriving into the table keyspace `b{view}_{T}_{import}`, invisible) →
//! **staged** (every row durable; a coordinator may now publish) → **published** (the
//! node's current boundary: new reads use it, realtime writes before T are late) →
//! **retiring** (an older boundary stays readable for a grace period, so a read that
//! picked it on any coordinator can finish) → gone (its table and the realtime epochs
//! before the newest boundary are dropped whole).
//!
//! A read names its boundary and is answered only if that boundary is *readable* here:
//! staged, published, or retiring within its grace. A staged boundary is readable before
//! this node has heard of the publication: a coordinator only names a boundary it saw
//! published, and publication waits until every node has staged it. So every answer is
//! `batch(T) ⊕ realtime epochs ≥ T` for the one T it names.

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize};
use speedlayer_api::{BatchStatus, Retiring, Staged};
use speedlayer_core::BatchBoundary;

use crate::error::{Result, StoreError};

/// Name of the keyspace holding every view's [`BatchRecord`].
const RECORDS: &str = "batches";

/// What a node knows of one view's batch views; persisted on every change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// The current boundary ([`BatchBoundary::NONE`] before the first import).
    pub published: BatchBoundary,
    /// The current boundary's import id (`0` for none).
    pub published_import: u64,
    /// Older boundaries still readable.
    pub retiring: Vec<Retiring>,
    /// Imports staged or staging, not yet published.
    pub staged: Vec<Staged>,
}

/// What a node answers about a view's batch views.
impl From<&BatchRecord> for BatchStatus {
    fn from(record: &BatchRecord) -> Self {
        BatchStatus {
            published: record.published,
            published_import: record.published_import,
            retiring: record.retiring.clone(),
            staged: record.staged.clone(),
        }
    }
}

impl BatchRecord {
    /// True when a read may use `boundary` at wall clock `now_us`.
    pub fn readable(&self, boundary: BatchBoundary, now_us: u64) -> bool {
        boundary == self.published
            || self
                .retiring
                .iter()
                .any(|r| r.boundary == boundary && r.until_us > now_us)
            || self
                .staged
                .iter()
                .any(|s| s.boundary == boundary && s.finished)
    }

    /// The oldest boundary a read may still use: realtime epochs before it are dropped.
    pub fn oldest_readable(&self) -> BatchBoundary {
        self.retiring
            .iter()
            .map(|r| r.boundary)
            .chain([self.published])
            .min()
            .unwrap_or(self.published)
    }

    /// The import id of `boundary`'s table, if this node has one in any state.
    pub fn import_of(&self, boundary: BatchBoundary) -> Option<u64> {
        if boundary == self.published && boundary != BatchBoundary::NONE {
            return Some(self.published_import);
        }
        self.retiring
            .iter()
            .find(|r| r.boundary == boundary)
            .map(|r| r.import)
            .or_else(|| {
                self.staged
                    .iter()
                    .find(|s| s.boundary == boundary)
                    .map(|s| s.import)
            })
    }
}

/// Every view's batch tables and records on this node.
///
/// Invariant: a table keyspace exists exactly for the (view, boundary, import) triples
/// its view's record names (published, retiring or staged); leftovers found at open
/// (an interrupted drop) are deleted.
pub struct BatchTables {
    db: Database,
    records_keyspace: Keyspace,
    state: RwLock<State>,
    /// Serializes record changes (see [`BatchTables::update`]).
    changing: Mutex<()>,
}

#[derive(Default)]
struct State {
    records: BTreeMap<u32, BatchRecord>,
    tables: BTreeMap<(u32, BatchBoundary, u64), Keyspace>,
}

fn table_name(view: u32, boundary: BatchBoundary, import: u64) -> String {
    format!("b{view}_{}_{import}", boundary.0)
}

fn parse_table_name(name: &str) -> Option<(u32, BatchBoundary, u64)> {
    let mut parts = name.strip_prefix('b')?.split('_');
    let view = parts.next()?.parse().ok()?;
    let boundary = BatchBoundary(parts.next()?.parse().ok()?);
    let import = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((view, boundary, import))
}

impl BatchTables {
    /// Loads the records and the table keyspaces they name; deletes unnamed tables.
    pub fn open(db: &Database) -> Result<BatchTables> {
        let records_keyspace = db.keyspace(RECORDS, KeyspaceCreateOptions::default)?;
        let mut state = State::default();
        for guard in records_keyspace.iter() {
            let (key, value) = guard.into_inner()?;
            let Ok(view) = <[u8; 4]>::try_from(key.as_ref()).map(u32::from_be_bytes) else {
                continue;
            };
            let record: BatchRecord = serde_json::from_slice(&value).map_err(|e| {
                StoreError::Request(speedlayer_api::Error::InvalidDeclaration(format!(
                    "stored batch record does not parse: {e}"
                )))
            })?;
            state.records.insert(view, record);
        }
        for name in db.list_keyspace_names() {
            let Some((view, boundary, import)) = parse_table_name(&name) else {
                continue;
            };
            let keyspace = db.keyspace(&name, KeyspaceCreateOptions::default)?;
            let named =
                state.records.get(&view).and_then(|r| r.import_of(boundary)) == Some(import);
            if named {
                state.tables.insert((view, boundary, import), keyspace);
            } else {
                db.delete_keyspace(keyspace)?;
            }
        }
        Ok(BatchTables {
            db: db.clone(),
            records_keyspace,
            state: RwLock::new(state),
            changing: Mutex::new(()),
        })
    }

    /// The record of `view` (the default, no batch, when none was ever imported).
    pub fn record(&self, view: u32) -> BatchRecord {
        self.read().records.get(&view).cloned().unwrap_or_default()
    }

    /// The current boundary of `view` (what every write checks: no record clone).
    pub fn published(&self, view: u32) -> BatchBoundary {
        self.read()
            .records
            .get(&view)
            .map_or(BatchBoundary::NONE, |r| r.published)
    }

    /// What a read at `at` (the current boundary when `None`) uses at wall clock
    /// `now_us`: the boundary and its table (none for [`BatchBoundary::NONE`]), under one
    /// look at the record. `Err(current)` when this node cannot read at it.
    pub fn read_at(
        &self,
        view: u32,
        at: Option<BatchBoundary>,
        now_us: u64,
    ) -> std::result::Result<(BatchBoundary, Option<Keyspace>), BatchBoundary> {
        let state = self.read();
        let none = BatchRecord::default();
        let record = state.records.get(&view).unwrap_or(&none);
        let boundary = at.unwrap_or(record.published);
        if !record.readable(boundary, now_us) {
            return Err(record.published);
        }
        if boundary == BatchBoundary::NONE {
            return Ok((boundary, None));
        }
        let import = record.import_of(boundary).ok_or(record.published)?;
        match state.tables.get(&(view, boundary, import)) {
            Some(table) => Ok((boundary, Some(table.clone()))),
            None => Err(record.published),
        }
    }

    /// The table import `import` of `view` at `boundary` is staging into, while it is
    /// (begun here and not finished); rows for anything else are refused.
    pub fn staging_table(
        &self,
        view: u32,
        boundary: BatchBoundary,
        import: u64,
    ) -> Option<Keyspace> {
        let state = self.read();
        let staging = state
            .records
            .get(&view)?
            .staged
            .iter()
            .any(|s| s.import == import && s.boundary == boundary && !s.finished);
        staging
            .then(|| state.tables.get(&(view, boundary, import)).cloned())
            .flatten()
    }

    /// Changes `view`'s record with `change` and persists it (fsynced) before returning
    /// `change`'s result; readers see the change only once it is durable. Tables `change`
    /// returns for deletion are deleted afterwards; `create` names a table to create
    /// (visible with the record that names it).
    pub fn update<T>(
        &self,
        view: u32,
        create: Option<(BatchBoundary, u64)>,
        change: impl FnOnce(&mut BatchRecord) -> Result<(T, Vec<(BatchBoundary, u64)>)>,
    ) -> Result<T> {
        // One change at a time; readers are not held up by the fsync: they see the new
        // record (and the table it names) only once it is durable.
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = self.record(view);
        let (answer, dropped) = change(&mut record)?;
        let created = match create {
            Some((boundary, import)) => {
                let keyspace = self.db.keyspace(
                    &table_name(view, boundary, import),
                    KeyspaceCreateOptions::default,
                )?;
                Some(((view, boundary, import), keyspace))
            }
            None => None,
        };
        let json = serde_json::to_vec(&record).map_err(|e| {
            StoreError::Request(speedlayer_api::Error::InvalidDeclaration(format!(
                "cannot encode batch record: {e}"
            )))
        })?;
        self.records_keyspace.insert(view.to_be_bytes(), json)?;
        self.db.persist(PersistMode::SyncAll)?;
        let doomed: Vec<Keyspace> = {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            if let Some((name, keyspace)) = created {
                state.tables.insert(name, keyspace);
            }
            state.records.insert(view, record);
            dropped
                .into_iter()
                .filter_map(|(b, i)| state.tables.remove(&(view, b, i)))
                .collect()
        };
        for keyspace in doomed {
            self.db.delete_keyspace(keyspace)?;
        }
        Ok(answer)
    }

    /// Every view's record, by view id.
    pub fn records(&self) -> Vec<(u32, BatchRecord)> {
        self.read()
            .records
            .iter()
            .map(|(v, r)| (*v, r.clone()))
            .collect()
    }

    /// Makes every staged row durable (the journal, fsynced).
    pub fn sync(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_round_trip() {
        assert_eq!(
            parse_table_name(&table_name(3, BatchBoundary(7200), 99)),
            Some((3, BatchBoundary(7200), 99))
        );
        assert_eq!(parse_table_name("e3_4_5"), None);
        assert_eq!(parse_table_name("batches"), None);
        assert_eq!(parse_table_name("b1_2_3_4"), None);
    }

    #[test]
    fn readable_boundaries() {
        let record = BatchRecord {
            published: BatchBoundary(7200),
            published_import: 5,
            retiring: vec![Retiring {
                boundary: BatchBoundary(3600),
                import: 4,
                until_us: 100,
            }],
            staged: vec![
                Staged {
                    boundary: BatchBoundary(10800),
                    import: 6,
                    finished: true,
                    started_us: 0,
                },
                Staged {
                    boundary: BatchBoundary(14400),
                    import: 7,
                    finished: false,
                    started_us: 0,
                },
            ],
        };
        assert!(record.readable(BatchBoundary(7200), 1000));
        assert!(record.readable(BatchBoundary(3600), 99));
        assert!(!record.readable(BatchBoundary(3600), 100));
        assert!(record.readable(BatchBoundary(10800), 1000));
        assert!(!record.readable(BatchBoundary(14400), 1000));
        assert!(!record.readable(BatchBoundary::NONE, 0));
        assert_eq!(record.oldest_readable(), BatchBoundary(3600));
        assert_eq!(record.import_of(BatchBoundary(10800)), Some(6));
        assert!(BatchRecord::default().readable(BatchBoundary::NONE, 0));
    }
}
