//! The views' event mappings, compiled once per catalog change.
//!
//! Storage keeps declarations without knowing the mapping language (the coordinator
//! checks a mapping when it is declared); ingest compiles them here, and recompiles only
//! when the catalog snapshot it is given is not the one it compiled last.

use std::sync::{Arc, Mutex};

use speedlayer_api::{Coordinator, View};
use speedlayer_events::Mapping;

/// A view with an event mapping, compiled.
#[derive(Clone, Debug)]
pub struct MappedView {
    /// The view.
    pub view: Arc<View>,
    /// Its compiled mapping.
    pub mapping: Arc<Mapping>,
}

/// The compiled mappings of every mapped view, sorted by view name, with the views they
/// were compiled from.
#[derive(Default)]
pub struct MappedViews {
    compiled: Mutex<Compiled>,
}

/// Mappings compiled from a catalog snapshot.
#[derive(Default)]
struct Compiled {
    /// The snapshot they were compiled from.
    from: Arc<Vec<Arc<View>>>,
    /// The mapped ones among them, compiled.
    mapped: Arc<Vec<MappedView>>,
}

impl MappedViews {
    /// The mapped views of the coordinator's current catalog.
    pub fn current(&self, coordinator: &dyn Coordinator) -> Arc<Vec<MappedView>> {
        let views = coordinator.views();
        let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&compiled.from, &views) {
            compiled.mapped = Arc::new(compile(&views));
            compiled.from = views;
        }
        compiled.mapped.clone()
    }
}

/// Compiles the mapping of every view that has one, in the order given.
pub fn compile(views: &[Arc<View>]) -> Vec<MappedView> {
    views
        .iter()
        .filter_map(|view| {
            let spec = view.spec.mapping.as_ref()?;
            match Mapping::compile(spec, view.spec.value_type.typed()) {
                Ok(mapping) => Some(MappedView {
                    view: view.clone(),
                    mapping: Arc::new(mapping),
                }),
                Err(e) => {
                    tracing::error!(view = %view.name, error = %e, "stored mapping no longer compiles; the view gets no events");
                    None
                }
            }
        })
        .collect()
}
