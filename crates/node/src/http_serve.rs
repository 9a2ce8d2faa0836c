//! Serving the HTTP API: axum's router on hyper connections, with the limits
//! `axum::serve` does not offer.
//!
//! - A client that stalls its request line or headers for `--request-timeout-secs` is
//!   closed (slow-loris), as on the RESP port; so is one whose body sends nothing for
//!   that long (tower-http's `TimeoutBody`: the clock restarts with every chunk, so the
//!   streamed routes, events and batch imports, may take as long as they keep sending).
//! - At most `--max-clients` connections are open on the port; one past the limit is
//!   answered 503 `too_many_connections` and closed, and the port keeps serving.
//! - On stop, each connection finishes the request it is serving and closes.
//! - With TLS (`--tls-cert`), a connection must finish its handshake within the header
//!   timeout before hyper sees it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

/// How the HTTP port bounds its clients.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Longest a client may take to send a request's line and headers, and longest a
    /// request body may go without sending a byte.
    pub header_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// What the port speaks.
#[derive(Clone)]
pub enum Security {
    /// Plain HTTP.
    Plain,
    /// HTTPS: every connection is a TLS one.
    Tls(crate::tls::TlsAcceptor),
}

/// Serves `app` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    security: Security,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut stopping = stop.clone();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: log, back off, keep serving.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = self::stopping(&mut stopping) => return Ok(()),
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let app = app.clone();
        let stop = stop.clone();
        let security = security.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            match security {
                Security::Plain => connection(stream, peer, app, limits.header_timeout, stop).await,
                Security::Tls(tls) => {
                    let handshake = tokio::time::timeout(limits.header_timeout, tls.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            connection(stream, peer, app, limits.header_timeout, stop).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Serves one connection's requests until it closes, stalls its headers, or the node
/// stops.
async fn connection(
    stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // The client's address reaches the handlers (the failed-password throttle).
        request.extensions_mut().insert(ConnectInfo(peer));
        let request = request.map(|body| TimeoutBody::new(header_timeout, body));
        app.clone().oneshot(request)
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    let outcome = tokio::select! {
        outcome = served.as_mut() => outcome,
        () = stopping(&mut stop) => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

/// Resolves once the node is stopping (or its stop signal is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Tells a client past the connection limit, and closes.
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"error":"too_many_connections","detail":"the node has --max-clients HTTP connections open; retry later"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
}
