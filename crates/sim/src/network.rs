//! The in-memory network: a [`Transport`] per node whose links the simulation cuts,
//! stalls and delays.
//!
//! A connection is a `tokio::io::duplex` pair. A blocked direction (`from → to`) stalls:
//! reads of what `from` sent and writes by `from` wait until the link is healed (as
//! dropped TCP segments do; the coordinator's RPC timeout is what notices), and dialling
//! across a blocked link fails after a short while. Every write may first wait a delay
//! drawn from the seed, so messages on different connections arrive in orders TCP on
//! loopback almost never produces.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use speedlayer_cluster::transport::{BoxStream, Listener, Transport};
use speedlayer_torture::scenario::SeededRng;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::Sleep;

/// Buffer of one direction of a connection.
const PIPE_BYTES: usize = 1 << 20;
/// How long a dial across a blocked link takes to fail.
const DIAL_TIMEOUT: Duration = Duration::from_millis(100);

type Incoming = mpsc::UnboundedSender<(BoxStream, SocketAddr)>;

struct Shared {
    listeners: Mutex<HashMap<SocketAddr, Incoming>>,
    blocked: Mutex<HashSet<(SocketAddr, SocketAddr)>>,
    /// Streams waiting for a link to heal.
    waiting: Mutex<Vec<Waker>>,
    rng: Mutex<SeededRng>,
    max_delay: Duration,
}

/// The network of one simulated cluster.
#[derive(Clone)]
pub struct Network {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Network {
    /// A network whose writes wait up to `max_delay`, drawn from `seed`.
    pub fn new(seed: u64, max_delay: Duration) -> Network {
        Network {
            shared: Arc::new(Shared {
                listeners: Mutex::new(HashMap::new()),
                blocked: Mutex::new(HashSet::new()),
                waiting: Mutex::new(Vec::new()),
                rng: Mutex::new(SeededRng::new(seed ^ 0x0005_EED0_F0E7)),
                max_delay,
            }),
        }
    }

    /// The transport of the node at `me`.
    pub fn transport(&self, me: SocketAddr) -> Arc<dyn Transport> {
        Arc::new(NodeTransport {
            net: self.clone(),
            me,
        })
    }

    /// Stalls everything `from` sends to `to`.
    pub fn block(&self, from: SocketAddr, to: SocketAddr) {
        lock(&self.shared.blocked).insert((from, to));
    }

    /// Removes every fault.
    pub fn heal(&self) {
        lock(&self.shared.blocked).clear();
        for waker in lock(&self.shared.waiting).drain(..) {
            waker.wake();
        }
    }

    fn is_blocked(&self, from: SocketAddr, to: SocketAddr) -> bool {
        lock(&self.shared.blocked).contains(&(from, to))
    }

    fn park(&self, waker: &Waker) {
        lock(&self.shared.waiting).push(waker.clone());
    }

    fn delay(&self) -> Option<Duration> {
        let max = self.shared.max_delay.as_micros() as u64;
        if max == 0 {
            return None;
        }
        let mut rng = lock(&self.shared.rng);
        // Most writes go at once; one in four waits.
        (rng.below(4) == 0).then(|| Duration::from_micros(rng.below(max + 1)))
    }
}

struct NodeTransport {
    net: Network,
    me: SocketAddr,
}

#[async_trait]
impl Transport for NodeTransport {
    async fn connect(&self, to: SocketAddr) -> io::Result<BoxStream> {
        if self.net.is_blocked(self.me, to) || self.net.is_blocked(to, self.me) {
            tokio::time::sleep(DIAL_TIMEOUT).await;
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "simulated: link blocked",
            ));
        }
        let incoming = lock(&self.net.shared.listeners).get(&to).cloned();
        let Some(incoming) = incoming else {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "simulated: nobody listens",
            ));
        };
        let (near, far) = tokio::io::duplex(PIPE_BYTES);
        let far: BoxStream = Box::new(SimStream::new(far, to, self.me, self.net.clone()));
        incoming.send((far, self.me)).map_err(|_| {
            io::Error::new(io::ErrorKind::ConnectionRefused, "simulated: listener gone")
        })?;
        Ok(Box::new(SimStream::new(
            near,
            self.me,
            to,
            self.net.clone(),
        )))
    }

    async fn bind(&self, at: SocketAddr) -> io::Result<Box<dyn Listener>> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.net.shared.listeners).insert(at, tx);
        Ok(Box::new(SimListener { at, incoming: rx }))
    }
}

struct SimListener {
    at: SocketAddr,
    incoming: mpsc::UnboundedReceiver<(BoxStream, SocketAddr)>,
}

#[async_trait]
impl Listener for SimListener {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.at)
    }

    async fn accept(&mut self) -> io::Result<(BoxStream, SocketAddr)> {
        self.incoming
            .recv()
            .await
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "simulated: network gone"))
    }
}

/// One end of a connection, held by `me`, talking to `peer`.
struct SimStream {
    inner: DuplexStream,
    me: SocketAddr,
    peer: SocketAddr,
    net: Network,
    delay: Option<Pin<Box<Sleep>>>,
}

impl SimStream {
    fn new(inner: DuplexStream, me: SocketAddr, peer: SocketAddr, net: Network) -> SimStream {
        SimStream {
            inner,
            me,
            peer,
            net,
            delay: None,
        }
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.net.is_blocked(self.peer, self.me) {
            self.net.park(cx.waker());
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.net.is_blocked(self.me, self.peer) {
            self.net.park(cx.waker());
            return Poll::Pending;
        }
        if self.delay.is_none() {
            if let Some(d) = self.net.delay() {
                self.delay = Some(Box::pin(tokio::time::sleep(d)));
            }
        }
        if let Some(sleep) = self.delay.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if written.is_ready() {
            self.delay = None;
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
