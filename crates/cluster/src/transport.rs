//! How nodes reach each other: a seam between the internode protocol and the network.
//!
//! Production uses [`Tcp`]. The simulation (`crates/sim`) plugs in an in-memory network
//! whose links it can cut, stall and delay from a seed, and runs the same coordinator,
//! replication, hints and repair code over it. Everything above this module speaks only
//! to a [`Transport`]: dialling ([`Transport::connect`]) and accepting
//! ([`Transport::bind`]) byte streams.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

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
