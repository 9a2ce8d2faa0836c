//! The view catalog: which views exist, their value type and epoch length.
//!
//! Declarations are few and rarely change, so the whole catalog lives in memory behind a
//! read-mostly lock and every change is written (and fsynced) to the `catalog` keyspace
//! before it is acknowledged. Each view gets a small numeric id that names its epoch
//! keyspaces, so view names never have to fit keyspace-name rules.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
pub use speedlayer_api::{
    validate_view_name, Declared, View, ViewSpec, ViewType, DEFAULT_EPOCH_SECS, MAX_VIEW_NAME_LEN,
};
use speedlayer_core::Epoch;

use crate::error::{Result, StoreError};

const VIEW_PREFIX: &str = "view:";
/// Key prefix of a view's dropped epochs (`dropped:{view}` → JSON list of epoch indexes).
const DROPPED_PREFIX: &str = "dropped:";
const NODE_ID_KEY: &str = "node_id";
const INCARNATION_KEY: &str = "incarnation";
/// Prefix of the cluster layer's metadata ([`Catalog::meta`]).
const META_PREFIX: &str = "meta/";
/// Prefix of the markers of one-time steps ([`Catalog::done`]).
const DONE_PREFIX: &str = "done/";

/// The persistent, in-memory-cached set of views of one node.
pub struct Catalog {
    db: Database,
    keyspace: Keyspace,
    views: RwLock<HashMap<String, Arc<View>>>,
    /// Every view sorted by name, rebuilt on each declaration: listing is one `Arc`
    /// clone, and a caller that caches what it derives from the views (ingest's compiled
    /// mappings) sees a change as a new pointer.
    listed: RwLock<Arc<Vec<Arc<View>>>>,
    /// Epochs dropped cluster-wide, per view name. A grow-only set (the union is the
    /// merge): once dropped, an epoch never takes data again on this node.
    dropped: RwLock<HashMap<String, Arc<BTreeSet<Epoch>>>>,
    /// Serialises recording drops (read, extend, fsync, publish), so the write path,
    /// which reads `dropped`, never waits for a drop's fsync.
    dropping: std::sync::Mutex<()>,
}

fn sorted(views: &HashMap<String, Arc<View>>) -> Arc<Vec<Arc<View>>> {
    let mut list: Vec<_> = views.values().cloned().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Arc::new(list)
}

impl Catalog {
    /// Opens the catalog keyspace and loads every declared view.
    pub fn open(db: &Database) -> Result<Catalog> {
        let keyspace = db.keyspace("catalog", KeyspaceCreateOptions::default)?;
        let mut views = HashMap::new();
        for guard in keyspace.prefix(VIEW_PREFIX) {
            let (_, value) = guard.into_inner()?;
            let view: View = serde_json::from_slice(&value).map_err(|e| {
                StoreError::Request(speedlayer_api::Error::InvalidDeclaration(format!(
                    "stored view does not parse: {e}"
                )))
            })?;
            views.insert(view.name.clone(), Arc::new(view));
        }
        let listed = RwLock::new(sorted(&views));
        let mut dropped = HashMap::new();
        for guard in keyspace.prefix(DROPPED_PREFIX) {
            let (key, value) = guard.into_inner()?;
            let name = String::from_utf8_lossy(&key[DROPPED_PREFIX.len()..]).into_owned();
            let epochs: BTreeSet<Epoch> = serde_json::from_slice(&value).map_err(|e| {
                StoreError::Request(speedlayer_api::Error::InvalidDeclaration(format!(
                    "stored dropped epochs do not parse: {e}"
                )))
            })?;
            dropped.insert(name, Arc::new(epochs));
        }
        Ok(Catalog {
            db: db.clone(),
            keyspace,
            views: RwLock::new(views),
            listed,
            dropped: RwLock::new(dropped),
            dropping: std::sync::Mutex::new(()),
        })
    }

    /// The view named `name`, if declared.
    pub fn get(&self, name: &str) -> Option<Arc<View>> {
        self.read().get(name).cloned()
    }

    /// Every view, sorted by name (a shared snapshot, replaced on each declaration).
    pub fn list(&self) -> Arc<Vec<Arc<View>>> {
        self.listed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Declares `name` with `spec`, durably. Idempotent for an identical spec; a different
    /// spec for an existing view is a [`StoreError::Request(speedlayer_api::Error::Conflict)`].
    pub fn declare(&self, name: &str, spec: ViewSpec) -> Result<(Arc<View>, Declared)> {
        validate_view_name(name)?;
        if spec.epoch_secs == 0 {
            return Err(StoreError::Request(
                speedlayer_api::Error::InvalidDeclaration("epoch_secs must be at least 1".into()),
            ));
        }
        let mut views = self.views.write().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = views.get(name) {
            if existing.spec == spec {
                return Ok((existing.clone(), Declared::Unchanged));
            }
            return Err(StoreError::Request(speedlayer_api::Error::Conflict {
                name: name.to_string(),
                existing: describe(&existing.spec),
                requested: describe(&spec),
            }));
        }
        let id = views.values().map(|v| v.id + 1).max().unwrap_or(1);
        let view = Arc::new(View {
            id,
            name: name.to_string(),
            spec,
        });
        let json = serde_json::to_vec(&*view).map_err(|e| {
            StoreError::Request(speedlayer_api::Error::InvalidDeclaration(format!(
                "cannot encode view: {e}"
            )))
        })?;
        self.keyspace.insert(format!("{VIEW_PREFIX}{name}"), json)?;
        self.db.persist(PersistMode::SyncData)?;
        views.insert(name.to_string(), view.clone());
        *self.listed.write().unwrap_or_else(|p| p.into_inner()) = sorted(&views);
        Ok((view, Declared::Created))
    }

    /// The epochs of `view` dropped cluster-wide (as far as this node knows), if any.
    pub fn dropped(&self, view: &str) -> Option<Arc<BTreeSet<Epoch>>> {
        self.dropped
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(view)
            .cloned()
    }

    /// Every view's dropped epochs, by view name (what gossip compares and sends).
    pub fn all_dropped(&self) -> Vec<(String, Vec<u64>)> {
        let dropped = self.dropped.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, Vec<u64>)> = dropped
            .iter()
            .map(|(view, epochs)| (view.clone(), epochs.iter().map(|e| e.0).collect()))
            .collect();
        out.sort();
        out
    }

    /// Adds `epochs` to `view`'s dropped set, durably (fsynced) before returning; the
    /// epochs that were not dropped before, in order.
    pub fn record_dropped(&self, view: &str, epochs: &[Epoch]) -> Result<Vec<Epoch>> {
        let _dropping = self.dropping.lock().unwrap_or_else(|p| p.into_inner());
        let mut set: BTreeSet<Epoch> = self.dropped(view).map(|s| (*s).clone()).unwrap_or_default();
        let new: Vec<Epoch> = epochs.iter().copied().filter(|e| set.insert(*e)).collect();
        if new.is_empty() {
            return Ok(new);
        }
        let json = serde_json::to_vec(&set).map_err(|e| {
            StoreError::Request(speedlayer_api::Error::InvalidDeclaration(format!(
                "cannot encode epochs: {e}"
            )))
        })?;
        self.keyspace
            .insert(format!("{DROPPED_PREFIX}{view}"), json)?;
        self.db.persist(PersistMode::SyncData)?;
        self.dropped
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(view.to_owned(), Arc::new(set));
        Ok(new)
    }

    /// The cluster layer's metadata stored under `name` (e.g. the member records).
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .keyspace
            .get(format!("{META_PREFIX}{name}"))?
            .map(|v| v.to_vec()))
    }

    /// Stores the cluster layer's metadata `name`, durably.
    pub fn set_meta(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.keyspace
            .insert(format!("{META_PREFIX}{name}"), bytes)?;
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// Whether the one-time step `name` (e.g. a format upgrade) has been done here.
    pub fn done(&self, name: &str) -> Result<bool> {
        Ok(self.keyspace.get(format!("{DONE_PREFIX}{name}"))?.is_some())
    }

    /// Records durably that the one-time step `name` is done.
    pub fn mark_done(&self, name: &str) -> Result<()> {
        self.keyspace
            .insert(format!("{DONE_PREFIX}{name}"), [1u8])?;
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// This data directory's incarnation: random, created with the directory and never
    /// reused. A node restarted on an empty directory (a lost disk, a replacement machine)
    /// keeps its configured id but gets a new incarnation, so the slots it counts
    /// anonymous increments in start afresh instead of re-counting from zero in a slot
    /// its peers still hold higher values of (which a join would silently ignore).
    pub fn incarnation(&self) -> Result<String> {
        if let Some(stored) = self.keyspace.get(INCARNATION_KEY)? {
            return Ok(String::from_utf8_lossy(&stored).into_owned());
        }
        let id = generated_node_id()
            .trim_start_matches('n')
            .get(8..)
            .unwrap_or_default()
            .to_owned();
        self.keyspace.insert(INCARNATION_KEY, id.as_bytes())?;
        self.db.persist(PersistMode::SyncData)?;
        Ok(id)
    }

    /// This node's id, created on first start and kept across restarts so anonymous
    /// counter updates keep counting in the same slot.
    pub fn node_id(&self, configured: Option<&str>) -> Result<String> {
        if let Some(id) = configured {
            return Ok(id.to_string());
        }
        if let Some(stored) = self.keyspace.get(NODE_ID_KEY)? {
            return Ok(String::from_utf8_lossy(&stored).into_owned());
        }
        let id = generated_node_id();
        self.keyspace.insert(NODE_ID_KEY, id.as_bytes())?;
        self.db.persist(PersistMode::SyncData)?;
        Ok(id)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<View>>> {
        self.views.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn describe(spec: &ViewSpec) -> String {
    let mut out = format!("{} with epoch_secs {}", spec.value_type, spec.epoch_secs);
    if let Some(m) = &spec.mapping {
        out.push_str(&format!(
            " and mapping {}",
            serde_json::to_string(m).unwrap_or_default()
        ));
    }
    out
}

/// A node id unlikely to collide with another node's: wall clock nanos mixed with the pid.
fn generated_node_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    format!("n{mixed:016x}")
}
