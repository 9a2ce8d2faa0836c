//! From events to per-view updates, through every mapped view.

use speedlayer_api::{validate, QueuedView, Update};
use speedlayer_events::Event;

use crate::mapped::MappedView;

/// Most skip reasons kept per request (the count is exact either way).
pub const MAX_SKIPS_REPORTED: usize = 100;

/// An event a view's mapping could not use (it passed the filter but lacked a field,
/// or the update it made is invalid for the view).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Skip {
    /// Index of the event in the request (the front end turns it into a line number).
    pub event: usize,
    /// The view.
    pub view: String,
    /// Why.
    pub reason: String,
}

/// The updates a batch of events makes, per mapped view, and what did not map.
#[derive(Debug, Default)]
pub struct Derivation {
    /// Updates per view with the index of the event each came from, in event order
    /// (views in `mapped` order; views without updates left out): the form the queue
    /// stores, so an async submit appends it as is.
    pub per_view: Vec<QueuedView>,
    /// Events that fed no view.
    pub unmatched: u64,
    /// Number of (event, view) pairs skipped.
    pub skipped: u64,
    /// The first [`MAX_SKIPS_REPORTED`] skips.
    pub skips: Vec<Skip>,
}

impl Derivation {
    /// Total updates derived.
    pub fn updates(&self) -> u64 {
        self.per_view.iter().map(|v| v.updates.len() as u64).sum()
    }
}

/// Maps `events` through `mapped`. Each update keeps its event's id (none for events
/// without one: sync updates then count in the applying node's slot, queued ones get the
/// queue's id when applied).
pub fn derive(mapped: &[MappedView], events: &[Event]) -> Derivation {
    let mut out = Derivation::default();
    let mut per_view: Vec<Vec<(Update, u32)>> = mapped.iter().map(|_| Vec::new()).collect();
    for (i, event) in events.iter().enumerate() {
        let mut fed = false;
        for (v, mv) in mapped.iter().enumerate() {
            let reason = match mv.mapping.derive(event) {
                Ok(None) => continue,
                Ok(Some(d)) => {
                    let update = Update {
                        key: d.key,
                        op: d.op,
                        ts_us: Some(event.ts_us),
                        id: event.id.clone(),
                    };
                    match validate(&mv.view, &update) {
                        Ok(()) => {
                            per_view[v].push((update, i as u32));
                            fed = true;
                            continue;
                        }
                        Err(e) => e.to_string(),
                    }
                }
                Err(reason) => reason,
            };
            fed = true;
            out.skipped += 1;
            if out.skips.len() < MAX_SKIPS_REPORTED {
                out.skips.push(Skip {
                    event: i,
                    view: mv.view.name.clone(),
                    reason,
                });
            }
        }
        if !fed {
            out.unmatched += 1;
        }
    }
    out.per_view = mapped
        .iter()
        .zip(per_view)
        .filter(|(_, updates)| !updates.is_empty())
        .map(|(mv, updates)| QueuedView {
            view: mv.view.name.clone(),
            updates,
        })
        .collect();
    out
}
