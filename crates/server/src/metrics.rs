//! Node metrics: one explicit Prometheus registry per node, so several nodes in one test
//! process never mix their figures.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use speedlayer_api::Coordinator;

/// Labels of a request metric. `route` is the matched route template (bounded
/// cardinality), never the raw path.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template, e.g. `/v1/views/{view}/update`.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Response status code.
    pub status: u16,
}

/// Labels of a per-route latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route template.
    pub route: String,
}

/// Labels of the keys-per-epoch gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EpochLabels {
    /// View name.
    pub view: String,
    /// Epoch index.
    pub epoch: u64,
}

/// Labels of the per-view batch boundary gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViewLabels {
    /// View name.
    pub view: String,
}

/// Labels of the RESP command counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// Lower-case command name, or `unknown`.
    pub command: String,
}

/// Metrics of the front ends plus the node's registry.
pub struct NodeMetrics {
    registry: Registry,
    /// Requests by route, method and status.
    pub http_requests: Family<RequestLabels, Counter>,
    /// Requests answered with a 4xx or 5xx, by route, method and status.
    pub http_errors: Family<RequestLabels, Counter>,
    /// Request latency by route.
    pub http_latency: Family<RouteLabels, Histogram>,
    /// Approximate keys per live epoch, refreshed at every scrape.
    pub epoch_keys: Family<EpochLabels, Gauge>,
    /// RESP commands by name.
    pub resp_commands: Family<CommandLabels, Counter>,
    /// Each view's current batch boundary (Unix seconds; 0 before the first import),
    /// refreshed at every scrape: `time() - boundary` is how far behind the batch layer is.
    pub batch_boundary: Family<ViewLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

impl NodeMetrics {
    /// A registry holding `registry`'s metrics (the store's) plus the front ends'.
    pub fn new(mut registry: Registry) -> Arc<Self> {
        let http_requests = Family::<RequestLabels, Counter>::default();
        let http_errors = Family::<RequestLabels, Counter>::default();
        let http_latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let epoch_keys = Family::<EpochLabels, Gauge>::default();
        let resp_commands = Family::<CommandLabels, Counter>::default();
        let batch_boundary = Family::<ViewLabels, Gauge>::default();
        registry.register(
            "speedlayer_batch_boundary_seconds",
            "Current batch boundary of each view (Unix seconds; 0 before the first import)",
            batch_boundary.clone(),
        );
        registry.register(
            "speedlayer_resp_commands",
            "Redis-protocol commands by name",
            resp_commands.clone(),
        );
        registry.register(
            "speedlayer_http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        registry.register(
            "speedlayer_http_errors",
            "HTTP requests answered with an error status",
            http_errors.clone(),
        );
        registry.register(
            "speedlayer_http_request_seconds",
            "HTTP request latency",
            http_latency.clone(),
        );
        registry.register(
            "speedlayer_epoch_keys",
            "Keys that exist per live epoch on this node (exact as of the last checkpoint, which a scrape runs first)",
            epoch_keys.clone(),
        );
        Arc::new(NodeMetrics {
            registry,
            http_requests,
            http_errors,
            http_latency,
            epoch_keys,
            resp_commands,
            batch_boundary,
        })
    }

    /// Renders every metric in the Prometheus text format, refreshing the gauges that are
    /// read through the coordinator at scrape time.
    pub fn render(&self, coordinator: &dyn Coordinator) -> Result<String, std::fmt::Error> {
        self.epoch_keys.clear();
        self.batch_boundary.clear();
        for view in coordinator.views().iter() {
            if let Ok(boundary) = coordinator.boundary(&view.name) {
                self.batch_boundary
                    .get_or_create(&ViewLabels {
                        view: view.name.clone(),
                    })
                    .set(i64::try_from(boundary.secs()).unwrap_or(i64::MAX));
            }
            if let Ok(epochs) = coordinator.epochs(&view.name) {
                for info in epochs {
                    self.epoch_keys
                        .get_or_create(&EpochLabels {
                            view: view.name.clone(),
                            epoch: info.epoch,
                        })
                        .set(i64::try_from(info.approx_keys).unwrap_or(i64::MAX));
                }
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
