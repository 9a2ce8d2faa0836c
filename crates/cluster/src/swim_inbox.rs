//! The way into the SWIM task ([`crate::swim`]): what the listener hands it (datagrams
//! from peers) and what a state change hands it (this node's record). Apart from the
//! task so the node can hold its end without knowing the task.

use tokio::sync::mpsc;

use crate::member_record::MemberRecord;

/// Datagrams and record broadcasts waiting for the SWIM task; more are dropped, as a
/// network drops datagrams (SWIM and the ping digests tolerate loss).
const INBOX: usize = 4096;

/// What the SWIM task is given.
pub(crate) enum SwimInput {
    /// A datagram from a peer ([`crate::wire::Request::Gossip`]).
    Datagram(Vec<u8>),
    /// A record this node changed: spread it.
    Record(MemberRecord),
}

/// The way into the SWIM task: the listener hands it datagrams, a state change its
/// record. Cheap to clone; sends never wait.
#[derive(Clone)]
pub(crate) struct SwimInbox(mpsc::Sender<SwimInput>);

impl SwimInbox {
    /// An inbox and the receiver [`crate::swim::run`] takes.
    pub fn new() -> (SwimInbox, mpsc::Receiver<SwimInput>) {
        let (tx, rx) = mpsc::channel(INBOX);
        (SwimInbox(tx), rx)
    }

    /// Hands `input` over, or drops it when the task is behind or not running (a node
    /// alone runs none).
    pub fn give(&self, input: SwimInput) {
        if self.0.try_send(input).is_err() {
            tracing::debug!("gossip inbox full or closed: input dropped");
        }
    }
}
