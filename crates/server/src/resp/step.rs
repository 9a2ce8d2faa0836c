//! What a command needs next, decided without touching data: the plan every command
//! module returns and the pipeline executes.

use speedlayer_api::Update;
use speedlayer_resp::{Reply, Request};

use super::keys::Target;
use super::stream::PendingEvent;

/// What a command needs next, decided without touching data.
pub enum Step {
    /// The reply is known already (errors, PING, session commands).
    Reply(Reply),
    /// A single-key update: grouped with its neighbours into one storage call.
    Write(PendingWrite),
    /// A single-key read (GET, HGET): grouped with its neighbours into one storage call.
    Get(Target),
    /// Needs data (a read, or a write that reads first): runs after the writes before it.
    Data(Request),
    /// An event (XADD): submitted with its neighbours through the views' mappings.
    Event(PendingEvent),
    /// `EXEC`: the queued commands, run after everything before them; answered with the
    /// array of their replies.
    Exec(Vec<Request>),
}

/// A validated update waiting for its pipeline's storage call.
pub struct PendingWrite {
    /// Where it goes.
    pub target: Target,
    /// What it does.
    pub update: Update,
    /// How its result becomes a reply.
    pub render: Render,
}

/// How an applied update is answered.
#[derive(Clone, Copy, Debug)]
pub enum Render {
    /// `+OK`.
    Ok,
    /// The update's effect as an integer: members added or removed (SADD, SREM), 1 if an
    /// HLL changed (PFADD), the counter's total over its live epochs (INCR family).
    Integer,
}
