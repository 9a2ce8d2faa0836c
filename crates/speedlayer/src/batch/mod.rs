//! The batch hand-over, from the user's side (docs/batch.md): `batch-export` recomputes a
//! view exactly from raw event files, `import` hands the rows to a node.
//!
//! This module is the glue both share: turning a node address into a URL, fetching and
//! checking a view's declaration, and the `batch-export` command itself. The arithmetic
//! lives in [`aggregate`] (pure, unit-tested), the file reading and writing in
//! [`files`], the upload in [`import`].

pub mod aggregate;
mod files;
pub mod import;

use anyhow::{bail, Context};
use serde_json::Value as Json;
use speedlayer_api::{ViewSpec, ViewType};
use speedlayer_core::{BatchBoundary, ValueType};
use speedlayer_events::{MappingSpec, MAX_TS_SECS};

use crate::cli::{BatchExportArgs, NodeAccess};

/// What `batch-export` needs of a view's declaration.
#[derive(Debug)]
pub struct Declaration {
    /// The one value type of every row.
    pub value_type: ValueType,
    /// Epoch length: a boundary must be a multiple of it.
    pub epoch_secs: u64,
    /// How events become updates; `None` for a view written only by updates.
    pub mapping: Option<MappingSpec>,
}

/// Reads a declaration from JSON: the body of `PUT /v1/views/{view}` or the answer of
/// `GET /v1/views/{view}` (whose extra fields, such as `name`, are ignored, so either can
/// be pasted into `--view-spec`).
pub fn declaration(json: &Json) -> anyhow::Result<Declaration> {
    let Json::Object(fields) = json else {
        bail!("a view declaration is a JSON object like {{\"type\":\"counter\",\"epoch_secs\":3600,\"mapping\":{{..}}}}");
    };
    let mut spec = serde_json::Map::new();
    for name in ["type", "epoch_secs", "mapping"] {
        if let Some(value) = fields.get(name) {
            spec.insert(name.to_string(), value.clone());
        }
    }
    let spec: ViewSpec =
        serde_json::from_value(Json::Object(spec)).context("invalid view declaration")?;
    let value_type = match spec.value_type {
        ViewType::Typed(ty) => ty,
        ViewType::Any => bail!(
            "the view's type is 'any' (each key takes the type of its first write): a batch \
             view needs one value type for all its rows"
        ),
    };
    Ok(Declaration {
        value_type,
        epoch_secs: spec.epoch_secs,
        mapping: spec.mapping,
    })
}

/// The boundary as event-time seconds, checked to be a time events can have.
pub fn boundary_secs(covers_until: u64) -> anyhow::Result<i64> {
    match i64::try_from(covers_until) {
        Ok(t) if (1..=MAX_TS_SECS).contains(&t) => Ok(t),
        _ => bail!("--covers-until {covers_until} is not Unix seconds between 1 and {MAX_TS_SECS}"),
    }
}

/// A node's error answer as one line: its `{"error","detail"}` when it sent JSON, else
/// the raw text.
pub fn node_error(status: reqwest::StatusCode, body: &str) -> String {
    match serde_json::from_str::<Json>(body) {
        Ok(json) if json.get("error").is_some() => {
            let error = json["error"].as_str().unwrap_or("error");
            match json.get("detail").and_then(Json::as_str) {
                Some(detail) if !detail.is_empty() => format!("{status}: {error}: {detail}"),
                _ => format!("{status}: {error}"),
            }
        }
        _ => format!("{status}: {}", body.trim()),
    }
}

/// Fetches `GET /v1/views/{view}` from the node.
pub async fn fetch_view(
    client: &reqwest::Client,
    access: &NodeAccess,
    view: &str,
) -> anyhow::Result<Json> {
    let node = &access.node;
    let url = format!("{}/v1/views/{view}", access.base_url());
    let response = access
        .authorize(client.get(&url))
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {node}"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        bail!("view '{view}' on {node}: {}", node_error(status, &body));
    }
    serde_json::from_str(&body).with_context(|| format!("{url} answered something not JSON"))
}

/// `speedlayer batch-export`: resolves the declaration, reads the events (on a blocking
/// thread: it is file I/O and CPU work), writes the rows and prints the summary.
pub async fn export(args: BatchExportArgs) -> anyhow::Result<()> {
    let covers_until = boundary_secs(args.covers_until)?;
    let (name, json) = match (&args.view_spec, &args.view) {
        (Some(text), _) => ("--view-spec".to_string(), spec_json(text)?),
        (None, Some(view)) => {
            let client = args.access.client(reqwest::Client::builder())?;
            let json = fetch_view(&client, &args.access, view).await?;
            (format!("view '{view}'"), json)
        }
        (None, None) => bail!("give the view's declaration: --view-spec JSON or --view NAME"),
    };
    let decl = declaration(&json).with_context(|| name.clone())?;
    let Some(mapping) = decl.mapping else {
        bail!(
            "{name} has no event mapping: batch-export recomputes a view from raw events \
             through its mapping. Declare one, or compute the rows yourself (docs/batch.md)"
        );
    };
    // The node's rule (speedlayer-core); the rows are still written, for a dry run.
    if let Err(e) = BatchBoundary::for_view(args.covers_until, decl.epoch_secs) {
        eprintln!("warning: {e}; a node refuses to import at that boundary");
    }
    let aggregator = aggregate::Aggregator::new(&mapping, decl.value_type, covers_until)
        .with_context(|| format!("{name}: the mapping does not compile"))?;
    let summary = tokio::task::spawn_blocking(move || {
        files::export(aggregator, &args.events, args.out.as_deref())
    })
    .await
    .context("the export thread failed")??;
    eprintln!("{summary}");
    Ok(())
}

/// The text of `--view-spec`: JSON, or `@FILE` holding it.
fn spec_json(text: &str) -> anyhow::Result<Json> {
    let (source, text) = match text.strip_prefix('@') {
        Some(path) => (
            path.to_string(),
            std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?,
        ),
        None => ("--view-spec".to_string(), text.to_string()),
    };
    serde_json::from_str(&text).with_context(|| format!("{source} is not JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_from_put_bodies_and_get_answers() {
        let put = serde_json::json!({"type":"counter","epoch_secs":60,
            "mapping":{"key":"url","op":"incr 1"}});
        let decl = declaration(&put).unwrap();
        assert_eq!(decl.value_type, ValueType::Counter);
        assert_eq!(decl.epoch_secs, 60);
        assert!(decl.mapping.is_some());
        let get = serde_json::json!({"name":"v","type":"hll","epoch_secs":3600});
        assert!(declaration(&get).unwrap().mapping.is_none());
        assert!(declaration(&serde_json::json!({"type":"any"})).is_err());
        assert!(declaration(&serde_json::json!({"type":"nope"})).is_err());
        assert!(declaration(&serde_json::json!([1])).is_err());
    }

    #[test]
    fn node_errors_read_well() {
        let status = reqwest::StatusCode::BAD_REQUEST;
        assert_eq!(
            node_error(
                status,
                r#"{"error":"invalid_boundary","detail":"not aligned"}"#
            ),
            "400 Bad Request: invalid_boundary: not aligned"
        );
        assert_eq!(node_error(status, "oops\n"), "400 Bad Request: oops");
        assert!(boundary_secs(0).is_err());
        assert_eq!(boundary_secs(3600).unwrap(), 3600);
    }
}
