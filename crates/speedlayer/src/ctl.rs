//! `speedlayer ctl`: a small operator client over the node's HTTP API.

use anyhow::Context;
use speedlayer_events::bucket::Bucket;

use crate::cli::{CtlArgs, CtlCommand};

/// Runs one `ctl` command and prints its answer.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let base = args.access.base_url();
    let client = args.access.client(reqwest::Client::builder())?;
    let send = |method: reqwest::Method, path: String| {
        let request = args
            .access
            .authorize(client.request(method, format!("{base}{path}")));
        async move {
            let response = request
                .send()
                .await
                .with_context(|| format!("cannot reach {path} on the node"))?;
            let status = response.status();
            let body: serde_json::Value = response.json().await.context("reading the answer")?;
            if !status.is_success() {
                let detail = body["detail"]
                    .as_str()
                    .map_or(body.to_string(), str::to_owned);
                anyhow::bail!("{path}: {status}: {detail}");
            }
            Ok::<_, anyhow::Error>(body)
        }
    };
    let get = |path: String| send(reqwest::Method::GET, path);
    match args.command {
        CtlCommand::Leave => {
            send(reqwest::Method::POST, "/v1/cluster/leave".into()).await?;
            println!("leaving: the node hands its partitions over, then shows `left` in `speedlayer ctl status`; stop it then");
        }
        CtlCommand::Remove { node } => {
            send(reqwest::Method::DELETE, format!("/v1/cluster/nodes/{node}")).await?;
            println!("removed {node}: its partitions are rebuilt on their new owners from the other replicas");
        }
        CtlCommand::Status => {
            let health = get("/health".into()).await?;
            println!(
                "node {}  status {}",
                health["node"].as_str().unwrap_or("?"),
                health["status"]
            );
            println!(
                "event queue: {} event(s) waiting, oldest {:.1} s",
                health["event_queue"]["length"],
                health["event_queue"]["lag_seconds"].as_f64().unwrap_or(0.0)
            );
            let cluster = get("/v1/cluster".into()).await?;
            let nodes = cluster["nodes"].as_array().cloned().unwrap_or_default();
            println!(
                "cluster {}: {} node(s), {} partitions x {} replicas, ring {}, default consistency {} ({})",
                cluster["addr"].as_str().unwrap_or("?"),
                nodes.len(),
                cluster["partitions"],
                cluster["replicas"],
                cluster["ring_version"].as_str().unwrap_or("?"),
                cluster["consistency"].as_str().unwrap_or("?"),
                cluster["quorum"].as_str().unwrap_or("?"),
            );
            match cluster["moving_partitions"].as_i64() {
                Some(n) if n > 0 => {
                    println!("  this node is joining or leaving: {n} partition comparison(s) to go")
                }
                _ => {}
            }
            for node in &nodes {
                let owned = cluster["ring"]
                    .as_array()
                    .map(|ring| {
                        ring.iter()
                            .filter(|p| {
                                p["nodes"]
                                    .as_array()
                                    .is_some_and(|owners| owners.contains(&node["addr"]))
                            })
                            .count()
                    })
                    .unwrap_or(0);
                let clock = match node["clock_offset_ms"].as_i64() {
                    Some(ms) if node["self"].as_bool() != Some(true) => {
                        format!(", clock {ms:+} ms")
                    }
                    _ => String::new(),
                };
                println!(
                    "  {:<22} {:<10} {:<5}{} owns {owned} partition(s), {} hint(s) held for it{clock}",
                    node["addr"].as_str().unwrap_or("?"),
                    node["node_id"].as_str().unwrap_or("?"),
                    node["state"].as_str().unwrap_or("?"),
                    if node["self"].as_bool() == Some(true) {
                        " (this node)"
                    } else {
                        ""
                    },
                    node["hints_pending"]
                );
            }
            let ae = &cluster["anti_entropy"];
            match ae["interval_secs"].as_u64() {
                None => println!("  anti-entropy: off"),
                Some(every) => println!(
                    "  anti-entropy: every {every} s; {} round(s), last {} ({} ms, {} range(s) differed, {} failed); {} key(s) pulled, {} pushed, {} bytes",
                    ae["rounds"],
                    match ae["last_round_age_secs"].as_u64() {
                        Some(age) => format!("{age} s ago"),
                        None => "not yet".into(),
                    },
                    ae["last_round_ms"],
                    ae["differing_last_round"],
                    ae["failed_last_round"],
                    ae["keys_pulled"],
                    ae["keys_pushed"],
                    ae["bytes"],
                ),
            }
            if cluster["clock_skewed"].as_bool() == Some(true) {
                println!("  THIS NODE'S CLOCK is off from its peers': it coordinates no writes until fixed");
            }
            let views = get("/v1/views".into()).await?;
            let list = views["views"].as_array().cloned().unwrap_or_default();
            println!("{} view(s)", list.len());
            for view in list {
                let name = view["name"].as_str().unwrap_or("?");
                let epochs = get(format!("/v1/views/{name}/epochs")).await?;
                let epochs = epochs["epochs"].as_array().cloned().unwrap_or_default();
                let keys: u64 = epochs
                    .iter()
                    .filter_map(|e| e["approx_keys"].as_u64())
                    .sum();
                let batch = get(format!("/v1/views/{name}/batch")).await?;
                let boundary = match batch["boundary"].as_u64() {
                    Some(0) | None => "no batch view".to_string(),
                    Some(t) => format!(
                        "batch until {t} ({} UTC)",
                        Bucket::Minute.format(i64::try_from(t).unwrap_or(i64::MAX))
                    ),
                };
                println!(
                    "  {name:<24} {:<9} epoch {:>6}s  {} live epoch(s), {keys} keys, {boundary}",
                    view["type"].as_str().unwrap_or("?"),
                    view["epoch_secs"],
                    epochs.len()
                );
            }
        }
    }
    Ok(())
}
