//! The workload clients as the controller sees them: processes in their namespaces,
//! told `pause`, `resume` and `drain` on standard input.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::{harness, RunConfig, RunError};
use crate::workload::ClientConfig;

/// A client process and its control pipes.
pub(super) struct ClientProcess {
    pub(super) child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl ClientProcess {
    pub(super) async fn tell(
        &mut self,
        command: &str,
        answer: &str,
        within: Duration,
    ) -> Result<String, RunError> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(|e| harness(format!("client {command}: {e}")))?;
        let line = tokio::time::timeout(within, self.stdout.next_line())
            .await
            .map_err(|_| {
                harness(format!(
                    "client did not answer '{command}' within {within:?}"
                ))
            })?
            .map_err(|e| harness(format!("client {command}: {e}")))?
            .ok_or_else(|| harness(format!("client exited instead of answering '{command}'")))?;
        if !line.starts_with(answer) {
            return Err(harness(format!("client answered '{line}' to '{command}'")));
        }
        Ok(line)
    }
}

pub(super) fn spawn_client(
    config: &RunConfig,
    namespace: &str,
    client: &ClientConfig,
) -> Result<ClientProcess, RunError> {
    let json = serde_json::to_string(client).map_err(harness)?;
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", namespace])
        .arg(&config.torture)
        .args(["client", "--config", &json])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| harness(format!("starting client {}: {e}", client.name)))?;
    let stdin = child.stdin.take().ok_or_else(|| harness("client stdin"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| harness("client stdout"))?;
    Ok(ClientProcess {
        child,
        stdin,
        stdout: BufReader::new(stdout).lines(),
    })
}
