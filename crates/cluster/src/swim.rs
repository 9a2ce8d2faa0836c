//! Who is alive, and how member records spread fast: SWIM, from the `foca` crate.
//!
//! foca is sans-I/O: this module gives it a transport, a clock and a place to report.
//! Its datagrams travel as [`Request::Gossip`] on the authenticated cluster connections
//! (so a process without the cluster secret can neither join nor change anyone's view),
//! its timers are kept here in deadline order (foca needs them delivered in order), and
//! its notifications feed the member table: a member foca finds alive is added and
//! marked up (and, when this node holds no record of it, the two exchange their
//! records), one it declares down is marked down.
//!
//! SWIM's cost per node does not grow with the cluster: each probe period one member is
//! probed (with indirect probes through others when it does not answer), and what
//! changed rides those messages to every node in O(log n) periods. The member records
//! ([`crate::gossip`]) ride them too, as foca's custom broadcasts: a state change made
//! here ([`ClusterNode::set_state`]) reaches every node in a few periods, and the
//! digest on the pings ([`crate::start`]) repairs whatever a lost datagram missed.
//!
//! Identities are the cluster address plus a bump (the wall clock at start): a node
//! restarted, or wrongly declared down, comes back under a newer identity at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use foca::{AccumulatingRuntime, BroadcastHandler, Foca, Invalidates, OwnedNotification};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use speedlayer_store::clock::wall_clock_us;
use tokio::sync::{mpsc, watch};

use crate::swim_inbox::SwimInput;
use tokio::time::Instant;

use crate::member_record::{MemberRecord, MemberState};
use crate::membership::PING_TIMEOUT;
use crate::node::ClusterNode;
use crate::wire::Request;

/// A member's identity in SWIM: its cluster address, and a bump that orders the
/// incarnations of one address (a later start, or a renewal after being declared down,
/// wins).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SwimId {
    /// Cluster address: the member's name in the ring.
    pub addr: SocketAddr,
    /// Larger for a later incarnation of the same address.
    pub bump: u64,
}

impl foca::Identity for SwimId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(SwimId {
            addr: self.addr,
            bump: self.bump.wrapping_add(1),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

/// Key of a record broadcast: a newer record of the same member replaces an older one
/// still being spread.
pub(crate) struct RecordKey {
    addr: String,
    version: u64,
    state: MemberState,
}

impl Invalidates for RecordKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.addr == other.addr && (self.version, self.state) > (other.version, other.state)
    }
}

/// A broadcast that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("a member record broadcast does not decode: {0}")]
pub(crate) struct BadRecord(postcard::Error);

/// Receives record broadcasts: a record newer than the one held is learnt and spread
/// further; an old one stops here.
struct RecordBroadcasts {
    node: Arc<ClusterNode>,
}

impl BroadcastHandler<SwimId> for RecordBroadcasts {
    type Key = RecordKey;
    type Error = BadRecord;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&SwimId>,
    ) -> Result<Option<RecordKey>, BadRecord> {
        let record: MemberRecord = postcard::from_bytes(data).map_err(BadRecord)?;
        let key = RecordKey {
            addr: record.addr.clone(),
            version: record.version,
            state: record.state,
        };
        // `None`: this node's own change, held already; spread it.
        if sender.is_none() {
            return Ok(Some(key));
        }
        let newer = self
            .node
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&record.addr)
            .is_none_or(|held| record.supersedes(held));
        if !newer {
            return Ok(None);
        }
        let node = self.node.clone();
        tokio::spawn(async move { node.learn_records(vec![record]).await });
        Ok(Some(key))
    }
}

type Swim = Foca<SwimId, foca::PostcardCodec, SmallRng, RecordBroadcasts>;

/// foca's settings for a cluster of `members`: LAN timings (probe every second, 500 ms
/// round trip), scaled with the size (transmissions per update, suspicion time).
fn config_for(members: usize) -> foca::Config {
    let size =
        NonZeroU32::new(u32::try_from(members).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
    foca::Config::new_lan(size)
}

/// Timers foca asked for, delivered in deadline order (then in the order asked).
#[derive(Default)]
struct Timers {
    due: BTreeMap<(Instant, u64), foca::Timer<SwimId>>,
    asked: u64,
}

impl Timers {
    fn add(&mut self, after: Duration, timer: foca::Timer<SwimId>) {
        self.asked += 1;
        self.due.insert((Instant::now() + after, self.asked), timer);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.due.keys().next().map(|(at, _)| *at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<foca::Timer<SwimId>> {
        let first = *self.due.keys().next()?;
        if first.0 > now {
            return None;
        }
        self.due.remove(&first)
    }
}

/// Runs SWIM for this node until `stop`: announces it to `announce_to` (the seeds and
/// the members of its stored records), then handles datagrams, timers and record
/// changes. On stop it tells a few members it is leaving, so they stop routing to it
/// before they would have noticed.
pub(crate) async fn run(
    node: Arc<ClusterNode>,
    mut inbox: mpsc::Receiver<SwimInput>,
    announce_to: Vec<SocketAddr>,
    mut stop: watch::Receiver<bool>,
) {
    let me = node.members.name(node.members.me());
    let Ok(addr) = me.parse::<SocketAddr>() else {
        tracing::error!(addr = %me, "this node's cluster address does not parse: no gossip");
        return;
    };
    let identity = SwimId {
        addr,
        bump: wall_clock_us(),
    };
    let mut members_known = node.members.len().max(1);
    let mut swim: Swim = Foca::with_custom_broadcast(
        identity,
        config_for(members_known),
        SmallRng::seed_from_u64(wall_clock_us() ^ u64::from(addr.port())),
        foca::PostcardCodec,
        RecordBroadcasts { node: node.clone() },
    );
    let mut runtime = AccumulatingRuntime::new();
    let mut timers = Timers::default();
    for to in announce_to.into_iter().filter(|a| *a != addr) {
        let _ = swim.announce(SwimId { addr: to, bump: 0 }, &mut runtime);
    }
    if let Some(own) = node.own_record() {
        spread(&mut swim, &own);
    }
    loop {
        drain(&node, &mut runtime, &mut timers, Leaving::No);
        let members_now = swim.num_members() + 1;
        if members_now != members_known {
            members_known = members_now;
            let _ = swim.set_config(config_for(members_known));
        }
        let deadline = timers.next_deadline();
        tokio::select! {
            input = inbox.recv() => match input {
                Some(SwimInput::Datagram(bytes)) => {
                    if let Err(e) = swim.handle_data(&bytes, &mut runtime) {
                        tracing::debug!(error = %e, "gossip datagram refused");
                    }
                }
                Some(SwimInput::Record(record)) => spread(&mut swim, &record),
                None => return,
            },
            _ = sleep_until(deadline) => {
                let now = Instant::now();
                while let Some(timer) = timers.pop_due(now) {
                    if let Err(e) = swim.handle_timer(timer, &mut runtime) {
                        tracing::debug!(error = %e, "gossip timer failed");
                    }
                }
            }
            _ = stop.wait_for(|s| *s) => {
                let _ = swim.leave_cluster(&mut runtime);
                drain(&node, &mut runtime, &mut timers, Leaving::Yes);
                return;
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Adds `record` to what every message carries.
fn spread(swim: &mut Swim, record: &MemberRecord) {
    match postcard::to_stdvec(record) {
        Ok(bytes) => {
            if let Err(e) = swim.add_broadcast(&bytes) {
                tracing::warn!(error = %e, node = %record.addr, "a member record could not be gossiped");
            }
        }
        Err(e) => tracing::warn!(error = %e, "encoding a member record failed"),
    }
}

/// Whether this node is leaving (stopping): its own departure is then expected.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaving {
    Yes,
    No,
}

/// Acts on what foca asked for: sends its datagrams (each on its own task: a slow peer
/// delays nobody), keeps its timers, and tells the member table what it found.
fn drain(
    node: &Arc<ClusterNode>,
    runtime: &mut AccumulatingRuntime<SwimId>,
    timers: &mut Timers,
    leaving: Leaving,
) {
    while let Some((to, bytes)) = runtime.to_send() {
        let Some(member) = node.members.add(&to.addr.to_string()) else {
            continue;
        };
        let Some(peer) = node.members.peer(member) else {
            continue;
        };
        let request = Request::Gossip(bytes.to_vec());
        tokio::spawn(async move {
            if let Err(e) = peer.call(&request, PING_TIMEOUT).await {
                tracing::trace!(peer = %peer.name(), error = %e, "gossip datagram not delivered");
            }
        });
    }
    while let Some((after, timer)) = runtime.to_schedule() {
        timers.add(after, timer);
    }
    while let Some(notification) = runtime.to_notify() {
        match notification {
            OwnedNotification::MemberUp(id) => {
                let Some(member) = node.members.add(&id.addr.to_string()) else {
                    continue;
                };
                node.members.mark_up(member);
                let name = id.addr.to_string();
                let unknown = !node
                    .records
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains_key(&name);
                if unknown {
                    let node = node.clone();
                    tokio::spawn(async move { node.exchange_records(member).await });
                }
            }
            OwnedNotification::MemberDown(id) => {
                if let Some(member) = node.members.member_named(&id.addr.to_string()) {
                    node.members.mark_down(member, "declared down by gossip");
                }
            }
            OwnedNotification::Defunct if leaving == Leaving::Yes => {
                tracing::debug!("left the gossip cluster");
            }
            OwnedNotification::Defunct => {
                tracing::warn!("gossip declared this node down; it rejoins under a new identity");
            }
            OwnedNotification::Idle => tracing::debug!("gossip knows no other member"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn a_later_incarnation_of_an_address_wins() {
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let old = SwimId { addr, bump: 5 };
        let renewed = old.renew().unwrap();
        assert!(renewed.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&renewed));
        assert_eq!(renewed.addr(), old.addr());
    }

    #[test]
    fn a_newer_record_key_replaces_an_older_one_of_the_same_member_only() {
        let key = |addr: &str, version, state| RecordKey {
            addr: addr.into(),
            version,
            state,
        };
        assert!(key("a", 2, MemberState::Up).invalidates(&key("a", 1, MemberState::Leaving)));
        assert!(key("a", 1, MemberState::Leaving).invalidates(&key("a", 1, MemberState::Up)));
        assert!(!key("a", 1, MemberState::Up).invalidates(&key("a", 1, MemberState::Up)));
        assert!(!key("b", 9, MemberState::Up).invalidates(&key("a", 1, MemberState::Up)));
    }

    #[test]
    fn timers_come_back_in_deadline_order_then_in_the_order_asked() {
        let mut timers = Timers::default();
        let token = |n| foca::Timer::<SwimId>::ProbeRandomMember(n);
        timers.add(Duration::from_millis(20), token(1));
        timers.add(Duration::ZERO, token(2));
        timers.add(Duration::ZERO, token(3));
        let later = Instant::now() + Duration::from_millis(30);
        let order: Vec<_> = std::iter::from_fn(|| timers.pop_due(later)).collect();
        assert_eq!(order, vec![token(2), token(3), token(1)]);
        assert!(timers.next_deadline().is_none());
    }
}
