//! `GET /v1/openapi.json`: the OpenAPI document generated from the handlers'
//! annotations validates (openapi-spec-validator, from the venv `compat/redis-py/setup.sh`
//! makes, as `.ci/run` does) and every operation it lists is routed on a real node (none
//! answers the router's own `not_found` or `method_not_allowed`).

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use reqwest::Method;
use serde_json::Value;
use support::http::TestNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_validates_and_lists_only_routed_operations() {
    let node = TestNode::start().await;
    let response = node
        .client
        .get(node.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let document: Value = serde_json::from_str(&text).expect("the document is JSON");

    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/redis-py/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run compat/redis-py/setup.sh (.ci/run does)",
        python.display()
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let validated = Command::new(&python)
        .args([
            "-c",
            "import json, sys; from openapi_spec_validator import validate; \
             validate(json.load(open(sys.argv[1]))); print('valid')",
        ])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "openapi-spec-validator refuses the document:\n{}",
        String::from_utf8_lossy(&validated.stderr)
    );

    let paths = document["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, methods) in paths {
        for method in methods.as_object().expect("methods").keys() {
            // Leaving would start this node's decommission; it is routed like the rest.
            if path == "/v1/cluster/leave" {
                continue;
            }
            operations += 1;
            let url = node.url(
                &path
                    .replace("{view}", "no_such_view")
                    .replace("{epoch}", "1")
                    .replace("{addr}", "127.0.0.1:1"),
            );
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let answer = node
                .client
                .request(method.clone(), &url)
                .send()
                .await
                .unwrap();
            let status = answer.status();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            assert!(
                !matches!(
                    body["error"].as_str(),
                    Some("not_found" | "method_not_allowed")
                ),
                "{method} {path} is documented but not routed: {status} {body}"
            );
        }
    }
    assert!(operations >= 19, "only {operations} operations documented");
    // The bodies clients send are described by their types.
    for schema in ["ViewSpec", "MappingSpec", "UpdateBody", "ErrorBody"] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "no schema {schema} in the document"
        );
    }
}
