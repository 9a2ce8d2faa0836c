//! The demo's own HTTP port (7780 when free): the dashboard, the node API forwarded to a
//! running node, and `/demo/nodes` to stop and start the demo's nodes from the page.
//!
//! The page is served here rather than by one of the nodes so that it stays up while a
//! visitor stops any node, and watches the others mark it down, keep answering through
//! sloppy quorums and hints, and repair it when it comes back. Forwarded requests are
//! reads (`GET`) only: writes go to a node's own port, as a client's would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::json;
use speedlayer_node::{Node, NodeConfig};
use tokio::sync::Mutex;

/// One of the demo's nodes: how to start it again, and the running node if it runs.
struct Slot {
    name: String,
    config: NodeConfig,
    running: Option<Node>,
}

/// The demo's nodes, which the page can stop and start. Their ports stay the same across
/// restarts (pinned after the first start), so clients and peers find them again.
pub struct DemoNodes {
    slots: Mutex<Vec<Slot>>,
    /// HTTP base URL of each node, in order (fixed).
    pub bases: Vec<String>,
    client: reqwest::Client,
}

impl DemoNodes {
    /// Takes over started nodes and the configurations they were started with.
    pub fn new(nodes: Vec<Node>, mut configs: Vec<NodeConfig>) -> DemoNodes {
        let bases = nodes
            .iter()
            .map(|n| format!("http://{}", n.http_addr))
            .collect();
        let slots = nodes
            .into_iter()
            .zip(configs.drain(..))
            .enumerate()
            .map(|(i, (node, mut config))| {
                config.http = node.http_addr;
                config.resp = node.resp_addr;
                Slot {
                    name: format!("n{i}"),
                    config,
                    running: Some(node),
                }
            })
            .collect();
        DemoNodes {
            slots: Mutex::new(slots),
            bases,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// The owners of `key` as a running node's ring names them (empty if none runs).
    pub async fn owners(&self, key: &[u8]) -> Vec<String> {
        let slots = self.slots.lock().await;
        slots
            .iter()
            .find_map(|s| s.running.as_ref())
            .map(|node| node.cluster.owners(key))
            .unwrap_or_default()
    }

    /// Stops node `index` (as a clean shutdown: the others see it go down).
    async fn stop(&self, index: usize) -> Result<(), String> {
        let node = {
            let mut slots = self.slots.lock().await;
            let slot = slots.get_mut(index).ok_or("no such node")?;
            slot.running.take().ok_or("the node is not running")?
        };
        node.shutdown().await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Starts node `index` again on its data directory and ports.
    async fn start(&self, index: usize) -> Result<(), String> {
        let mut slots = self.slots.lock().await;
        let slot = slots.get_mut(index).ok_or("no such node")?;
        if slot.running.is_some() {
            return Err("the node is running".into());
        }
        // A node just stopped may still be letting go of its store (its background
        // loops end within a tick): try for a few seconds.
        let mut last = String::new();
        for _ in 0..20 {
            match Node::start(slot.config.clone()).await {
                Ok(node) => {
                    slot.running = Some(node);
                    return Ok(());
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!("starting {}: {last}", slot.name))
    }

    /// Shuts every running node down and waits until they let go of their stores.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        let mut slots = self.slots.lock().await;
        let nodes: Vec<Node> = slots.iter_mut().filter_map(|s| s.running.take()).collect();
        drop(slots);
        super::stop_local_cluster(nodes).await
    }
}

/// Serves the demo's port on `listener` until the process ends.
pub fn serve(listener: tokio::net::TcpListener, nodes: Arc<DemoNodes>) {
    let (dashboard, _) = speedlayer_server::http::dashboard::routes().split_for_parts();
    let app = dashboard
        .route("/demo/nodes", get(list))
        .route("/demo/nodes/{index}/{action}", post(act))
        .fallback(forward)
        .with_state(nodes);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the demo's dashboard port stopped");
        }
    });
}

/// Binds 127.0.0.1:7780 (the port `ctl` uses by default), or a free port if it is taken.
pub async fn bind() -> anyhow::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind("127.0.0.1:7780").await {
        Ok(listener) => Ok(listener),
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the demo's dashboard port"),
    }
}

/// `GET /demo/nodes`: each node with its addresses and whether it runs.
async fn list(State(nodes): State<Arc<DemoNodes>>) -> Response {
    let slots = nodes.slots.lock().await;
    let list: Vec<_> = slots
        .iter()
        .enumerate()
        .map(|(index, slot)| {
            json!({
                "index": index,
                "name": slot.name,
                "http": slot.config.http.to_string(),
                "resp": slot.config.resp.to_string(),
                "cluster": slot.config.cluster.listen.to_string(),
                "running": slot.running.is_some(),
            })
        })
        .collect();
    Json(json!({ "nodes": list })).into_response()
}

/// `POST /demo/nodes/{index}/stop` or `/start`.
async fn act(
    State(nodes): State<Arc<DemoNodes>>,
    Path((index, action)): Path<(usize, String)>,
) -> Response {
    let result = match action.as_str() {
        "stop" => nodes.stop(index).await,
        "start" => nodes.start(index).await,
        _ => return (StatusCode::NOT_FOUND, "stop or start").into_response(),
    };
    match result {
        Ok(()) => Json(json!({ "node": index, "done": action })).into_response(),
        Err(detail) => (
            StatusCode::CONFLICT,
            Json(json!({ "error": "demo", "detail": detail })),
        )
            .into_response(),
    }
}

/// Any other `GET`: forwarded to the first node that answers (the page keeps working
/// while nodes are stopped).
async fn forward(
    State(nodes): State<Arc<DemoNodes>>,
    method: axum::http::Method,
    uri: Uri,
) -> Response {
    if method != axum::http::Method::GET {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            Json(json!({ "error": "method_not_allowed", "detail": "the demo's port forwards reads; write to a node's own port" })),
        )
            .into_response();
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut last = String::from("no node is running");
    for base in &nodes.bases {
        match nodes.client.get(format!("{base}{path}")).send().await {
            Ok(answer) => return relay(answer).await,
            Err(e) => last = format!("{base}: {e}"),
        }
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": "unavailable", "detail": last })),
    )
        .into_response()
}

/// A node's answer, passed on with its status and content type.
async fn relay(answer: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    match answer.bytes().await {
        Ok(body) => (status, [(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, Bytes::from(e.to_string())).into_response(),
    }
}

/// The address the page is served on, as a URL that opens the pageviews chart.
pub fn dashboard_url(addr: SocketAddr) -> String {
    format!("http://{addr}/?view=pageviews&key=/")
}
