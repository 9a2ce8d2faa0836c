//! The view catalog: which views exist, their value type and epoch length.
//!
//! Declarations are few and rarely change, so the whole catalog lives in memory behind a
//! read-mostly lock and every change is written (and fsynced) to the `catalog` keyspace
//! before it is acknowledged. Each view gets a small numeric id that names its epoch
//! keyspaces, so view names never have to fit keyspace-name rules.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize};
use speedlayer_core::{Op, ValueType};
use speedlayer_events::{Mapping, MappingSpec};

use crate::error::{Result, StoreError};

/// Epoch length used when a declaration does not give one: one hour, the seed's bucket.
pub const DEFAULT_EPOCH_SECS: u64 = 3600;
/// Longest accepted view name.
pub const MAX_VIEW_NAME_LEN: usize = 128;

const VIEW_PREFIX: &str = "view:";
const NODE_ID_KEY: &str = "node_id";

/// The type of a view's values: one CRDT type for every key, or `any`, where each key
/// takes the type of its first write (what Redis clients expect of their keys; a later
/// write of another type is refused as WRONGTYPE by the key's owner shard).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViewType {
    /// Every key holds this type.
    Typed(ValueType),
    /// Each key's type is set by its first write.
    Any,
}

impl ViewType {
    /// The type a key of this view gets when `op` is its first write.
    pub fn type_for(self, op: &Op) -> ValueType {
        match self {
            ViewType::Typed(t) => t,
            ViewType::Any => op.natural_type(),
        }
    }
}

impl ViewType {
    /// The one type of every key, `None` for an `any` view.
    pub fn typed(self) -> Option<ValueType> {
        match self {
            ViewType::Typed(t) => Some(t),
            ViewType::Any => None,
        }
    }
}

impl std::fmt::Display for ViewType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ViewType::Typed(t) => t.fmt(f),
            ViewType::Any => f.write_str("any"),
        }
    }
}

impl From<ValueType> for ViewType {
    fn from(t: ValueType) -> Self {
        ViewType::Typed(t)
    }
}

impl Serialize for ViewType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ViewType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if name.eq_ignore_ascii_case("any") {
            return Ok(ViewType::Any);
        }
        name.parse::<ValueType>()
            .map(ViewType::Typed)
            .map_err(serde::de::Error::custom)
    }
}

/// What a user declares: the view's value type and epoch length.
///
/// Invariant once stored: neither field changes (a redeclaration with other values is a
/// [`StoreError::Conflict`]), because stored states and epoch keyspaces depend on both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewSpec {
    /// CRDT type of the view's values.
    #[serde(rename = "type")]
    pub value_type: ViewType,
    /// Length of an epoch, the unit of expiry, in seconds.
    #[serde(default = "default_epoch_secs")]
    pub epoch_secs: u64,
    /// Which events feed the view and how ([`MappingSpec`]); `None` for a view written
    /// only by updates. Checked by [`Mapping::compile`] at declaration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<MappingSpec>,
}

fn default_epoch_secs() -> u64 {
    DEFAULT_EPOCH_SECS
}

impl ViewSpec {
    /// A spec of `value_type` with the default epoch length.
    pub fn new(value_type: ValueType) -> Self {
        ViewSpec {
            value_type: ViewType::Typed(value_type),
            epoch_secs: DEFAULT_EPOCH_SECS,
            mapping: None,
        }
    }
}

/// A declared view as the node knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Numeric id naming the view's epoch keyspaces; never reused.
    pub id: u32,
    /// The view's name (`[A-Za-z0-9_.-]`, 1 to 128 bytes).
    pub name: String,
    /// Its declaration.
    #[serde(flatten)]
    pub spec: ViewSpec,
}

/// Result of a declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declared {
    /// The view is new.
    Created,
    /// The same declaration existed already (declaring is idempotent).
    Unchanged,
}

/// Checks a view name: non-empty, at most [`MAX_VIEW_NAME_LEN`] bytes of `[A-Za-z0-9_.-]`.
/// The alphabet keeps names safe in URLs, metric labels and Redis keys (`view:partition`
/// splits on `:`).
pub fn validate_view_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_VIEW_NAME_LEN {
        Some("longer than 128 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        Some("only letters, digits, '_', '-' and '.' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::InvalidViewName {
            name: name.chars().take(MAX_VIEW_NAME_LEN).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The persistent, in-memory-cached set of views of one node.
pub struct Catalog {
    db: Database,
    keyspace: Keyspace,
    views: RwLock<HashMap<String, Arc<View>>>,
    /// The compiled mappings of every view that has one, rebuilt on each declaration,
    /// so an event is mapped without re-parsing expressions.
    mapped: RwLock<Arc<Vec<MappedView>>>,
}

/// A view with an event mapping, compiled.
#[derive(Clone, Debug)]
pub struct MappedView {
    /// The view.
    pub view: Arc<View>,
    /// Its compiled mapping.
    pub mapping: Arc<Mapping>,
}

/// Checks a spec's mapping against its type: the compiled mapping, if it has one.
pub fn compile_mapping(spec: &ViewSpec) -> Result<Option<Mapping>> {
    let Some(mapping) = &spec.mapping else {
        return Ok(None);
    };
    let value_type = match spec.value_type {
        ViewType::Typed(t) => Some(t),
        ViewType::Any => None,
    };
    Mapping::compile(mapping, value_type)
        .map(Some)
        .map_err(|e| StoreError::InvalidDeclaration(e.to_string()))
}

fn compile_all(views: &HashMap<String, Arc<View>>) -> Arc<Vec<MappedView>> {
    let mut mapped: Vec<MappedView> = views
        .values()
        .filter_map(|view| match compile_mapping(&view.spec) {
            Ok(Some(mapping)) => Some(MappedView {
                view: view.clone(),
                mapping: Arc::new(mapping),
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(view = %view.name, error = %e, "stored mapping no longer compiles; the view gets no events");
                None
            }
        })
        .collect();
    mapped.sort_by(|a, b| a.view.name.cmp(&b.view.name));
    Arc::new(mapped)
}

impl Catalog {
    /// Opens the catalog keyspace and loads every declared view.
    pub fn open(db: &Database) -> Result<Catalog> {
        let keyspace = db.keyspace("catalog", KeyspaceCreateOptions::default)?;
        let mut views = HashMap::new();
        for guard in keyspace.prefix(VIEW_PREFIX) {
            let (_, value) = guard.into_inner()?;
            let view: View = serde_json::from_slice(&value).map_err(|e| {
                StoreError::InvalidDeclaration(format!("stored view does not parse: {e}"))
            })?;
            views.insert(view.name.clone(), Arc::new(view));
        }
        let mapped = RwLock::new(compile_all(&views));
        Ok(Catalog {
            db: db.clone(),
            keyspace,
            views: RwLock::new(views),
            mapped,
        })
    }

    /// The view named `name`, if declared.
    pub fn get(&self, name: &str) -> Option<Arc<View>> {
        self.read().get(name).cloned()
    }

    /// Every view with an event mapping, sorted by name, compiled.
    pub fn mapped(&self) -> Arc<Vec<MappedView>> {
        self.mapped
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every view, sorted by name.
    pub fn list(&self) -> Vec<Arc<View>> {
        let mut views: Vec<_> = self.read().values().cloned().collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    /// Declares `name` with `spec`, durably. Idempotent for an identical spec; a different
    /// spec for an existing view is a [`StoreError::Conflict`].
    pub fn declare(&self, name: &str, spec: ViewSpec) -> Result<(Arc<View>, Declared)> {
        validate_view_name(name)?;
        if spec.epoch_secs == 0 {
            return Err(StoreError::InvalidDeclaration(
                "epoch_secs must be at least 1".into(),
            ));
        }
        compile_mapping(&spec)?;
        let mut views = self.views.write().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = views.get(name) {
            if existing.spec == spec {
                return Ok((existing.clone(), Declared::Unchanged));
            }
            return Err(StoreError::Conflict {
                name: name.to_string(),
                existing: describe(&existing.spec),
                requested: describe(&spec),
            });
        }
        let id = views.values().map(|v| v.id + 1).max().unwrap_or(1);
        let view = Arc::new(View {
            id,
            name: name.to_string(),
            spec,
        });
        let json = serde_json::to_vec(&*view)
            .map_err(|e| StoreError::InvalidDeclaration(format!("cannot encode view: {e}")))?;
        self.keyspace.insert(format!("{VIEW_PREFIX}{name}"), json)?;
        self.db.persist(PersistMode::SyncData)?;
        views.insert(name.to_string(), view.clone());
        *self.mapped.write().unwrap_or_else(|p| p.into_inner()) = compile_all(&views);
        Ok((view, Declared::Created))
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
