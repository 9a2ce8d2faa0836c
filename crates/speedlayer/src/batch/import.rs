//! `speedlayer import`: streams a batch view's NDJSON rows to
//! `POST /v1/views/{view}/batch?covers_until=T` and reports the node's answer.
//!
//! The file is sent as a stream of chunks, never read whole, so a batch larger than
//! memory imports; the progress bar counts the bytes handed to the connection.

use anyhow::{bail, Context};
use bytes::Bytes;
use indicatif::ProgressBar;
use serde_json::Value as Json;
use speedlayer_core::BatchBoundary;
use speedlayer_events::bucket::Bucket;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::files::{byte_progress, is_stdin};
use super::{boundary_secs, declaration, fetch_view, node_error};
use crate::cli::ImportArgs;

/// Bytes per chunk of the request body.
const CHUNK: usize = 256 * 1024;

/// Runs `import`: checks the view and the boundary with the node first (a misaligned T
/// fails in a moment, not after uploading gigabytes), then streams the file and prints
/// what the node published.
pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let covers_until = boundary_secs(args.covers_until)?;
    let client = args
        .access
        .client(reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(10)))?;
    let view = fetch_view(&client, &args.access, &args.view).await?;
    let decl = declaration(&view).with_context(|| format!("view '{}'", args.view))?;
    // The node's own rule (speedlayer-core), checked before uploading anything.
    BatchBoundary::for_view(args.covers_until, decl.epoch_secs)
        .with_context(|| format!("view '{}'", args.view))?;
    // A node that states the view's current boundary lets a stale T fail here too (a
    // node that refuses a large body early may lose its answer in a broken pipe).
    if let Some(current) = view.get("boundary").and_then(Json::as_u64) {
        if args.covers_until <= current {
            bail!(
                "view '{}' already has a batch view covering until {current}: --covers-until \
                 must be later than that",
                args.view
            );
        }
    }

    let (reader, total): (Box<dyn AsyncRead + Send + Unpin>, Option<u64>) = if is_stdin(&args.file)
    {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let name = args.file.display();
        let file = tokio::fs::File::open(&args.file)
            .await
            .with_context(|| format!("cannot open {name}"))?;
        let meta = file
            .metadata()
            .await
            .with_context(|| format!("cannot read the size of {name}"))?;
        let total = meta.is_file().then_some(meta.len());
        (Box::new(file), total)
    };
    let progress = byte_progress(total, "sending rows");
    let url = format!("{}/v1/views/{}/batch", args.access.base_url(), args.view);
    let request = client
        .post(&url)
        .query(&[("covers_until", args.covers_until)])
        .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(chunks(reader, progress.clone())));
    let sent = args.access.authorize(request).send().await;
    progress.finish_and_clear();
    // A node that refuses a request early (an old node without the batch endpoint, a
    // boundary not after the view's current one, a body over its size limit) may close
    // the connection before reading the whole body: the upload then fails with a broken
    // pipe and the answer is lost. Say so, rather than only "broken pipe".
    let response = sent.with_context(|| {
        format!(
            "sending {} to {} failed. If the connection broke mid-upload, the node probably \
             refused the batch before reading all of it (no batch endpoint on an older \
             node, a boundary not after the view's current one, a body over its size \
             limit); the node's log says which",
            args.file.display(),
            args.access.node
        )
    })?;
    let status = response.status();
    let body = response.text().await.context("reading the node's answer")?;
    if !status.is_success() {
        bail!("the node refused the batch: {}", node_error(status, &body));
    }
    let answer: Json = serde_json::from_str(&body)
        .with_context(|| format!("the node answered {status} with something not JSON: {body}"))?;
    let boundary = answer["boundary"].as_i64().unwrap_or(covers_until);
    println!(
        "imported {} row(s) into view '{}': boundary {} ({} UTC){}",
        answer["rows"],
        answer["view"].as_str().unwrap_or(&args.view),
        boundary,
        Bucket::Minute.format(boundary),
        match answer["published"].as_bool() {
            Some(false) => ", not published yet",
            _ => ", published",
        }
    );
    Ok(())
}

/// The reader as a stream of body chunks, advancing `progress` by each chunk's size and
/// saying so when the whole file has been handed over (the node may take a while to
/// publish after that).
fn chunks(
    reader: Box<dyn AsyncRead + Send + Unpin>,
    progress: ProgressBar,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(Some(reader), move |state| {
        let progress = progress.clone();
        async move {
            let mut reader = state?;
            let mut buf = Vec::with_capacity(CHUNK);
            match (&mut reader).take(CHUNK as u64).read_to_end(&mut buf).await {
                Ok(0) => {
                    progress.set_message("sent; waiting for the node to publish");
                    None
                }
                Ok(n) => {
                    progress.inc(n as u64);
                    Some((Ok(Bytes::from(buf)), Some(reader)))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    })
}
