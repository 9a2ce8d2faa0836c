//! The member table and health: every node this one has heard of, how to reach each,
//! and which are up as this node's failure detector (pings, `crate::start`) sees them.
//! Which of them own data is decided by their gossiped records ([`crate::gossip`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::metrics::ClusterMetrics;
use crate::peer::{Peer, RpcError};
use crate::transport::Transport;
use crate::wire::{Hello, Request, Response};

/// A ping (and other small control calls, e.g. telling a peer about a view) unanswered
/// this long counts as a failure.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Marks an offset not measured yet.
const UNKNOWN_OFFSET: i64 = i64::MIN;
/// Consecutive failed calls (timeouts) before a peer is considered down; a refused
/// connection marks it down at once.
const FAILURES_TO_DOWN: u32 = 2;

/// A member as this node sees it.
pub(crate) struct Member {
    /// Cluster address (ring name).
    pub name: Arc<str>,
    /// `None` for this node.
    pub peer: Option<Arc<Peer>>,
    up: AtomicBool,
    failures: AtomicU32,
    /// The peer's clock minus ours (µs), from the last pong; `i64::MIN` until known.
    clock_offset_us: AtomicI64,
}

/// Every node this one has heard of, by index, and their health.
///
/// Invariants: the table only grows, so an index names the same node for the life of
/// the process (rings and requests hold indexes across membership changes); index 0 is
/// this node, and it is always up. Which members own data is the ring's business
/// ([`crate::gossip`] builds it from the members' states), not this table's.
pub(crate) struct Membership {
    members: RwLock<Vec<Arc<Member>>>,
    me: usize,
    /// How a new member is dialled.
    hello: Hello,
    transport: Arc<dyn Transport>,
    /// Bound on one internode request.
    rpc_timeout: Duration,
    metrics: ClusterMetrics,
    /// Largest peer clock offset accepted (µs).
    max_clock_offset_us: i64,
    /// This node's clock skew when it is the odd one out (µs), `UNKNOWN_OFFSET` when not:
    /// recomputed at each pong and each peer going down, read by every write.
    own_skew_us: AtomicI64,
}

impl Membership {
    /// A table holding only this node (named `me_addr`); peers are dialled with `hello`.
    pub fn new(
        me_addr: SocketAddr,
        hello: Hello,
        rpc_timeout: Duration,
        max_clock_offset: Duration,
        metrics: ClusterMetrics,
        transport: Arc<dyn Transport>,
    ) -> Membership {
        let me = Arc::new(Member {
            name: me_addr.to_string().into(),
            peer: None,
            up: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            clock_offset_us: AtomicI64::new(UNKNOWN_OFFSET),
        });
        Membership {
            members: RwLock::new(vec![me]),
            me: 0,
            hello,
            transport,
            rpc_timeout,
            metrics,
            max_clock_offset_us: max_clock_offset.as_micros().min(i64::MAX as u128) as i64,
            own_skew_us: AtomicI64::new(UNKNOWN_OFFSET),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Member>>> {
        self.members.read().unwrap_or_else(|p| p.into_inner())
    }

    fn member(&self, member: usize) -> Arc<Member> {
        self.read()[member].clone()
    }

    /// The index of the node at cluster address `addr`, added (and dialled lazily, with
    /// the cluster secret) if it is new. `None` when `addr` is not an address.
    pub fn add(&self, addr: &str) -> Option<usize> {
        if let Some(known) = self.member_named(addr) {
            return Some(known);
        }
        let parsed: SocketAddr = addr.parse().ok()?;
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = members.iter().position(|m| &*m.name == addr) {
            return Some(known);
        }
        members.push(Arc::new(Member {
            name: addr.into(),
            peer: Some(Arc::new(Peer::new(
                parsed,
                self.hello.clone(),
                self.transport.clone(),
            ))),
            up: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            clock_offset_us: AtomicI64::new(UNKNOWN_OFFSET),
        }));
        Some(members.len() - 1)
    }

    /// Nodes known, this one included.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// This node's index.
    pub fn me(&self) -> usize {
        self.me
    }

    /// Every known node with its index.
    pub fn iter(&self) -> Vec<(usize, Arc<Member>)> {
        self.read().iter().cloned().enumerate().collect()
    }

    /// True when the failure detector considers `member` up (this node always is).
    pub fn is_up(&self, member: usize) -> bool {
        self.read()[member].up.load(Ordering::Acquire)
    }

    /// The cluster address of `member`.
    pub fn name(&self, member: usize) -> Arc<str> {
        self.read()[member].name.clone()
    }

    /// The cluster addresses of `members`.
    pub fn names(&self, members: impl IntoIterator<Item = usize>) -> Vec<String> {
        let table = self.read();
        members
            .into_iter()
            .map(|m| table[m].name.to_string())
            .collect()
    }

    /// Peers the failure detector considers up, among `among`.
    pub fn peers_up(&self, among: &[usize]) -> Vec<(usize, Arc<Peer>)> {
        let table = self.read();
        among
            .iter()
            .filter_map(|&i| {
                let m = &table[i];
                let peer = m.peer.as_ref()?;
                m.up.load(Ordering::Acquire).then(|| (i, peer.clone()))
            })
            .collect()
    }

    /// The index of the member named `name`.
    pub fn member_named(&self, name: &str) -> Option<usize> {
        self.read().iter().position(|m| &*m.name == name)
    }

    /// Records `member`'s clock offset (its clock minus ours, µs), warning when it crosses
    /// the bound either way.
    pub fn note_clock_offset(&self, member: usize, offset_us: i64) {
        let bound_us = self.max_clock_offset_us;
        let m = self.member(member);
        let before = m.clock_offset_us.swap(offset_us, Ordering::AcqRel);
        let was_off = before != UNKNOWN_OFFSET && before.unsigned_abs() > bound_us.unsigned_abs();
        let is_off = offset_us.unsigned_abs() > bound_us.unsigned_abs();
        if is_off && !was_off {
            tracing::warn!(peer = %m.name, offset_ms = offset_us / 1000, bound_ms = bound_us / 1000, "peer's clock is off from ours by more than the bound");
        } else if was_off && !is_off {
            tracing::info!(peer = %m.name, offset_ms = offset_us / 1000, "peer's clock is back within the bound");
        }
        self.metrics
            .clock_offset
            .get_or_create(&ClusterMetrics::target(&m.name))
            .set(offset_us as f64 / 1e6);
        self.refresh_own_skew();
    }

    /// `member`'s clock offset (its clock minus ours, µs), once known.
    pub fn clock_offset_us(&self, member: usize) -> Option<i64> {
        let offset = self.read()[member].clock_offset_us.load(Ordering::Acquire);
        (offset != UNKNOWN_OFFSET).then_some(offset)
    }

    /// If this node's clock is the odd one out, by how much (µs): see
    /// [`Membership::refresh_own_skew`]. One atomic load: every write asks.
    pub fn own_clock_skew_us(&self) -> Option<i64> {
        let skew = self.own_skew_us.load(Ordering::Acquire);
        (skew != UNKNOWN_OFFSET).then_some(skew)
    }

    /// Recomputes whether this node's clock is the odd one out: the median offset of the
    /// live peers when more than half of them (at least two) are off by more than the
    /// bound. With a single peer nobody can tell whose clock is wrong, so nobody is blamed.
    fn refresh_own_skew(&self) {
        let skew = self.compute_own_skew().unwrap_or(UNKNOWN_OFFSET);
        self.own_skew_us.store(skew, Ordering::Release);
    }

    fn compute_own_skew(&self) -> Option<i64> {
        let bound_us = self.max_clock_offset_us;
        let mut offsets: Vec<i64> = self
            .read()
            .iter()
            .filter(|m| m.peer.is_some() && m.up.load(Ordering::Acquire))
            .map(|m| m.clock_offset_us.load(Ordering::Acquire))
            .filter(|&o| o != UNKNOWN_OFFSET)
            .collect();
        let off = offsets
            .iter()
            .filter(|o| o.unsigned_abs() > bound_us.unsigned_abs())
            .count();
        if offsets.len() < 2 || off * 2 <= offsets.len() {
            return None;
        }
        offsets.sort_unstable();
        Some(-offsets[offsets.len() / 2])
    }

    /// Notes an answer from `member`: it is up.
    pub fn mark_up(&self, member: usize) {
        let m = self.member(member);
        m.failures.store(0, Ordering::Release);
        if !m.up.swap(true, Ordering::AcqRel) {
            tracing::info!(peer = %m.name, "peer up");
        }
        self.metrics
            .peer_up
            .get_or_create(&ClusterMetrics::target(&m.name))
            .set(1);
    }

    /// Notes a failed call to `member`; marks it down when it is certainly gone or has
    /// failed repeatedly.
    pub fn note_failure(&self, member: usize, error: &RpcError) {
        let m = self.member(member);
        let failures = m.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if error.is_unreachable() || failures >= FAILURES_TO_DOWN {
            self.mark_down(member, &error.to_string());
        }
    }

    /// Marks `member` down (gossip declared it down, or calls to it fail), saying why.
    /// The node itself is never marked down.
    pub fn mark_down(&self, member: usize, why: &str) {
        let m = self.member(member);
        if m.peer.is_some() && m.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(peer = %m.name, error = why, "peer down");
            self.refresh_own_skew();
            self.metrics
                .peer_up
                .get_or_create(&ClusterMetrics::target(&m.name))
                .set(0);
        }
    }

    /// How to reach `member`; `None` for this node.
    pub fn peer(&self, member: usize) -> Option<Arc<Peer>> {
        self.member(member).peer.clone()
    }

    /// Calls `member` (a peer), noting the outcome for the failure detector.
    pub async fn call(&self, member: usize, request: &Request) -> Result<Response, RpcError> {
        Ok(self.call_sized(member, request).await?.0)
    }

    /// [`Membership::call`], also returning the bytes of both frames.
    pub async fn call_sized(
        &self,
        member: usize,
        request: &Request,
    ) -> Result<(Response, u64), RpcError> {
        let Some(peer) = self.member(member).peer.clone() else {
            return Err(RpcError::Protocol {
                peer: self.name(member).to_string(),
                reason: "a node does not call itself".into(),
            });
        };
        match peer.call_sized(request, self.rpc_timeout).await {
            Ok((Response::Failed(reason), _)) => Err(RpcError::Protocol {
                peer: peer.name().to_owned(),
                reason,
            }),
            Ok(answer) => {
                self.mark_up(member);
                Ok(answer)
            }
            Err(e) => {
                self.note_failure(member, &e);
                Err(e)
            }
        }
    }
}
