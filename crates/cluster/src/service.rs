//! The internode requests a node serves: what peers ask of its store.
//!
//! Every request is decoded (and so validated) here before it reaches the store; a
//! failure answers [`Response::Failed`] and never affects the node. A request about a
//! view this node has not heard of yet first pulls the catalog from the asking peer.

use std::sync::Arc;

use speedlayer_core::{BatchBoundary, Epoch};
use speedlayer_store::StoreError;

use crate::catalog_sync;
use crate::error::ClusterError;
use crate::listener::Handler;
use crate::node::ClusterNode;
use crate::wire::{self, Request, Response, WireState, WireWritten};

fn failed(e: impl std::fmt::Display) -> Response {
    Response::Failed(e.to_string())
}

impl Handler for ClusterNode {
    fn handle(
        self: Arc<Self>,
        from: Arc<str>,
        request: Request,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>> {
        Box::pin(async move {
            let first = self.serve(&request).await;
            // A view a peer already uses but this node has not heard of yet: learn the
            // catalog from that peer, then answer.
            if let Err(ClusterError::Store(StoreError::Request(
                speedlayer_api::Error::UnknownView(_),
            ))) = &first
            {
                if let Some(member) = self.members.member_named(&from) {
                    catalog_sync::pull(&self, member).await;
                    return self.serve(&request).await.unwrap_or_else(failed);
                }
            }
            first.unwrap_or_else(failed)
        })
    }
}

impl ClusterNode {
    /// The answer to `States` / `MemberStates`: this replica's parts of `keys` at `at`.
    async fn states(
        &self,
        view: &str,
        keys: &[Vec<u8>],
        at: u64,
        members: Option<Arc<[Vec<u8>]>>,
    ) -> Result<Response, ClusterError> {
        let store = &self.store;
        let keys = wire::keys(keys)?;
        let at = Some(BatchBoundary(at));
        Ok(
            match store.states_restricted(view, keys, members, at).await {
                Ok((_, states)) => Response::States {
                    rows: states.iter().map(wire::encode_row).collect(),
                    dropped: store.dropped_indexes(view),
                },
                Err(StoreError::Request(speedlayer_api::Error::BoundaryUnavailable {
                    current,
                    ..
                })) => Response::BoundaryUnavailable { current: current.0 },
                Err(e) => return Err(e.into()),
            },
        )
    }

    async fn serve(&self, request: &Request) -> Result<Response, ClusterError> {
        let store = &self.store;
        Ok(match request {
            Request::Ping { .. } => Response::Pong {
                catalog: catalog_sync::digest(store),
                clock_us: speedlayer_store::clock::wall_clock_us(),
                members: self.members_digest(),
            },
            Request::Members(theirs) => {
                self.learn_records(theirs.clone()).await;
                Response::Members(self.records().into_values().collect())
            }
            Request::Gossip(datagram) => {
                self.swim
                    .give(crate::swim_inbox::SwimInput::Datagram(datagram.clone()));
                Response::GossipReceived
            }
            Request::Apply {
                view,
                updates,
                kind,
            } => {
                let updates = updates
                    .iter()
                    .cloned()
                    .map(wire::WireUpdate::into_update)
                    .collect::<Result<Vec<_>, _>>()?;
                let written = store.apply_replicating(view, updates, *kind).await?;
                Response::Applied(
                    written
                        .iter()
                        .map(|w| WireWritten {
                            result: wire::encode_result(&w.result),
                            epoch: w.epoch.0,
                            delta: w.delta.as_ref().map(|d| d.encode()),
                        })
                        .collect(),
                )
            }
            Request::Merge {
                view,
                states,
                hint_for,
            } => {
                let states = states
                    .iter()
                    .map(WireState::decode)
                    .collect::<Result<Vec<_>, _>>()?;
                self.merge_here(view, states, hint_for.as_deref()).await?;
                Response::Merged
            }
            Request::States { view, keys, at } => self.states(view, keys, *at, None).await?,
            Request::MemberStates {
                view,
                keys,
                at,
                members,
            } => {
                let members = Some(Arc::from(members.as_slice()));
                self.states(view, keys, *at, members).await?
            }
            Request::SetSummaries { view, keys, at } => {
                let keys = wire::keys(keys)?;
                match store
                    .set_summaries(view, keys, Some(BatchBoundary(*at)))
                    .await
                {
                    Ok((_, rows)) => Response::Summaries {
                        rows,
                        dropped: store.dropped_indexes(view),
                    },
                    Err(StoreError::Request(speedlayer_api::Error::BoundaryUnavailable {
                        current,
                        ..
                    })) => Response::BoundaryUnavailable { current: current.0 },
                    Err(e) => return Err(e.into()),
                }
            }
            Request::Range {
                view,
                partition,
                from,
                to,
                limit,
                at,
            } => {
                let states = store
                    .range_states(
                        view,
                        partition.clone(),
                        from.clone(),
                        to.clone(),
                        usize::try_from(*limit).unwrap_or(usize::MAX),
                        Some(BatchBoundary(*at)),
                    )
                    .await;
                match states {
                    Ok(states) => Response::Range {
                        rows: states
                            .rows
                            .iter()
                            .map(|(c, parts)| (c.clone(), wire::encode_row(parts)))
                            .collect(),
                        truncated: states.truncated,
                        dropped: store.dropped_indexes(view),
                    },
                    Err(StoreError::Request(speedlayer_api::Error::BoundaryUnavailable {
                        current,
                        ..
                    })) => Response::BoundaryUnavailable { current: current.0 },
                    Err(e) => return Err(e.into()),
                }
            }
            Request::ScanKeys {
                view,
                from,
                to,
                limit,
            } => {
                store.checkpoint().await?;
                let page = store.scan_keys(view, *from, *to, *limit as usize).await?;
                Response::Keys {
                    keys: page
                        .keys
                        .iter()
                        .map(|(key, value_type)| (key.encode(), *value_type))
                        .collect(),
                    reached: page.reached,
                }
            }
            Request::Catalog => Response::Catalog(catalog_sync::entries(store)),
            Request::Declare { name, spec } => {
                catalog_sync::learn(self, name, spec).await?;
                Response::Declared
            }
            Request::Import {
                view,
                boundary,
                import,
                step,
            } => {
                crate::import::serve_step(store, view, BatchBoundary(*boundary), *import, step)
                    .await?;
                Response::Imported
            }
            Request::BatchPage {
                view,
                boundary,
                after,
                limit,
            } => {
                let page = store
                    .batch_page(
                        view,
                        BatchBoundary(*boundary),
                        after.clone(),
                        *limit as usize,
                    )
                    .await;
                match page {
                    Ok(rows) => Response::BatchPage(rows),
                    Err(StoreError::Request(speedlayer_api::Error::BoundaryUnavailable {
                        current,
                        ..
                    })) => Response::BoundaryUnavailable { current: current.0 },
                    Err(e) => return Err(e.into()),
                }
            }
            Request::DropEpochs { view, epochs } => {
                let epochs: Vec<Epoch> = epochs.iter().map(|&e| Epoch(e)).collect();
                Response::Dropped(store.drop_epochs(view, &epochs).await?)
            }
            Request::DroppedEpochs => Response::DroppedEpochs(store.dropped_epochs()),
            Request::AntiEntropy(request) => {
                Response::AntiEntropy(crate::anti_entropy::serve(store, request).await?)
            }
            Request::Boundaries => Response::Boundaries(
                store
                    .published_boundaries()
                    .into_iter()
                    .map(|(view, b, import)| (view, b.0, import))
                    .collect(),
            ),
        })
    }
}
