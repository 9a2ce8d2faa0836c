//! How nodes reach each other: a seam between the internode protocol and the network.
//!
//! Production uses [`Tcp`], or [`Tls`] (TCP in mutual TLS, `--cluster-tls-*`). The simulation (`crates/sim`) plugs in an in-memory network
//! whose links it can cut, stall and delay from a seed, and runs the same coordinator,
//! replication, hints and repair code over it. Everything above this module speaks only
//! to a [`Transport`]: dialling ([`Transport::connect`]) and accepting
//! ([`Transport::bind`]) byte streams.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::{server, Accept, TlsAcceptor, TlsConnector};

/// A byte stream between two nodes.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;

/// Dials and accepts internode connections.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Opens a stream to the node listening at `to`.
    async fn connect(&self, to: SocketAddr) -> io::Result<BoxStream>;
    /// Listens at `at` for streams from other nodes.
    async fn bind(&self, at: SocketAddr) -> io::Result<Box<dyn Listener>>;
}

impl fmt::Debug for dyn Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Transport")
    }
}

/// The accepting side of a [`Transport`].
#[async_trait]
pub trait Listener: Send + 'static {
    /// The address peers reach it at (resolves a port 0).
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The next stream and where it came from.
    async fn accept(&mut self) -> io::Result<(BoxStream, SocketAddr)>;
}

/// TCP, with Nagle off (internode frames are small and latency-bound).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tcp;

#[async_trait]
impl Transport for Tcp {
    async fn connect(&self, to: SocketAddr) -> io::Result<BoxStream> {
        let stream = tokio::net::TcpStream::connect(to).await?;
        let _ = stream.set_nodelay(true);
        Ok(Box::new(stream))
    }

    async fn bind(&self, at: SocketAddr) -> io::Result<Box<dyn Listener>> {
        Ok(Box::new(TcpListener(
            tokio::net::TcpListener::bind(at).await?,
        )))
    }
}

struct TcpListener(tokio::net::TcpListener);

#[async_trait]
impl Listener for TcpListener {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(BoxStream, SocketAddr)> {
        let (stream, from) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((Box::new(stream), from))
    }
}

/// TCP in TLS, both ways authenticated: a node dials a peer and checks the certificate it
/// presents names the peer's cluster IP address and was signed by the cluster CA, and the
/// listener asks the dialler for a certificate that CA signed too. The cluster secret's
/// handshake still runs inside; TLS adds confidentiality and keeps out any process
/// without a node certificate before it can send a frame.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    acceptor: TlsAcceptor,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// A transport presenting and checking certificates as `server` (accepting) and
    /// `client` (dialling) say; both are built by the node from its files.
    pub fn new(server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) -> Tls {
        Tls {
            connector: TlsConnector::from(client),
            acceptor: TlsAcceptor::from(server),
        }
    }
}

#[async_trait]
impl Transport for Tls {
    async fn connect(&self, to: SocketAddr) -> io::Result<BoxStream> {
        let stream = tokio::net::TcpStream::connect(to).await?;
        let _ = stream.set_nodelay(true);
        // A cluster address is an IP address: the peer's certificate must name it.
        let name = rustls::pki_types::ServerName::IpAddress(to.ip().into());
        Ok(Box::new(self.connector.connect(name, stream).await?))
    }

    async fn bind(&self, at: SocketAddr) -> io::Result<Box<dyn Listener>> {
        Ok(Box::new(TlsListener {
            tcp: tokio::net::TcpListener::bind(at).await?,
            acceptor: self.acceptor.clone(),
        }))
    }
}

struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
}

#[async_trait]
impl Listener for TlsListener {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Returns at once: the handshake runs when the connection's own task first reads,
    /// inside the listener's handshake timeout, so a stalled client never holds up the
    /// accept loop.
    async fn accept(&mut self) -> io::Result<(BoxStream, SocketAddr)> {
        let (stream, from) = self.tcp.accept().await?;
        let _ = stream.set_nodelay(true);
        let accepting = Accepting::Handshake(Box::new(self.acceptor.accept(stream)));
        Ok((Box::new(accepting), from))
    }
}

/// An accepted TLS connection whose handshake completes on first use.
enum Accepting {
    Handshake(Box<Accept<tokio::net::TcpStream>>),
    Ready(Box<server::TlsStream<tokio::net::TcpStream>>),
    Failed,
}

impl Accepting {
    /// Drives the handshake; ready once the stream can carry data.
    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<&mut server::TlsStream<tokio::net::TcpStream>>> {
        if let Accepting::Handshake(accept) = self {
            match ready!(Pin::new(accept.as_mut()).poll(cx)) {
                Ok(stream) => *self = Accepting::Ready(Box::new(stream)),
                Err(e) => {
                    *self = Accepting::Failed;
                    return Poll::Ready(Err(e));
                }
            }
        }
        match self {
            Accepting::Ready(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }
}

impl AsyncRead for Accepting {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepting {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Accepting::Ready(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
}
