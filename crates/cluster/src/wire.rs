//! The internode protocol: what nodes say to each other, and its byte form.
//!
//! Transport framing: each frame is a 4-byte big-endian length and a postcard payload
//! (at most [`MAX_FRAME`] bytes). A connection starts with [`Hello`] from the dialling
//! node and [`HelloReply`] from the listener; after that the dialler sends
//! [`Envelope`]`<`[`Request`]`>` frames and the listener answers with
//! [`Envelope`]`<`[`Response`]`>` frames carrying the same id, in any order (requests are
//! served concurrently). CRDT states, keys and ops travel in speedlayer-core's canonical
//! byte forms, decoded (and so validated) by the receiver.

use serde::{Deserialize, Serialize};
use speedlayer_core::codec::Reader;
use speedlayer_core::{
    Applied, BatchValue, DecodeError, Epoch, Key, Op, OpError, Outcome, RowParts, UpdateId, Value,
};
use speedlayer_store::Update;

/// Largest frame accepted (a batch of states or a range answer).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Bumped on incompatible changes; a peer speaking another version is refused.
pub const PROTOCOL_VERSION: u32 = 7;

/// First frame of a connection: who dials, and the proof it belongs to the cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the dialler.
    pub version: u32,
    /// The cluster secret (empty when none is configured).
    pub secret: String,
    /// The dialler's node id.
    pub node_id: String,
    /// The dialler's cluster address (its name in the ring).
    pub addr: String,
    /// Ring shape: both sides must agree or keys would be placed differently.
    pub partitions: u32,
    /// Replication factor, for the same reason.
    pub replicas: u32,
}

/// The listener's answer to [`Hello`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum HelloReply {
    /// Accepted; the listener's node id.
    Welcome {
        /// Listener's node id.
        node_id: String,
    },
    /// Refused; the connection closes.
    Refused {
        /// Why.
        reason: String,
    },
}

/// A request or response with the id that pairs them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Chosen by the dialler, echoed by the listener.
    pub id: u64,
    /// The message.
    pub body: T,
}

/// One update as a coordinator hands it to the replica that applies it first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireUpdate {
    /// [`Key::encode`] form.
    pub key: Vec<u8>,
    /// [`Op::encode_into`] form.
    pub op: Vec<u8>,
    /// Event time, µs.
    pub ts_us: Option<i64>,
    /// Producer id `(writer, seq)`.
    pub id: Option<(String, u64)>,
}

/// A key's state in one epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireState {
    /// Epoch index.
    pub epoch: u64,
    /// [`Key::encode`] form.
    pub key: Vec<u8>,
    /// [`Value::encode`] form.
    pub state: Vec<u8>,
}

/// Per-epoch states of one key (or row), in [`Value::encode`] form.
pub type WireParts = Vec<(u64, Vec<u8>)>;

/// One key's (or row's) parts: its batch row ([`BatchValue::encode`] form) and its
/// per-epoch states.
pub type WireRow = (Option<Vec<u8>>, WireParts);

/// What a node asks a peer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// Failure detection and catalog gossip: the sender's catalog digest.
    Ping {
        /// [`crate::catalog_sync::digest`] of the sender's catalog.
        catalog: u64,
        /// [`crate::member_record::digest`] of the sender's member records.
        members: u64,
    },
    /// The sender's member records; answered with the receiver's ([`crate::gossip`]).
    Members(Vec<crate::member_record::MemberRecord>),
    /// A SWIM datagram ([`crate::swim`]): handed to the receiver's gossip, answered at
    /// once (SWIM's own messages say what it learnt).
    Gossip(Vec<u8>),
    /// Apply updates as the coordinating replica and return their deltas.
    Apply {
        /// View name.
        view: String,
        /// The updates.
        updates: Vec<WireUpdate>,
        /// Plain, reporting (Redis replies) or pre-aggregated.
        kind: speedlayer_store::ApplyKind,
    },
    /// Merge states (replication, hinted handoff, read repair). With `hint_for`, the
    /// receiver is a fallback standing in for that owner and keeps hints for it.
    Merge {
        /// View name.
        view: String,
        /// The states.
        states: Vec<WireState>,
        /// Owner (cluster address) the receiver holds these for.
        hint_for: Option<String>,
    },
    /// Parts of keys at a batch boundary.
    States {
        /// View name.
        view: String,
        /// Keys, [`Key::encode`] form.
        keys: Vec<Vec<u8>>,
        /// The batch boundary (Unix seconds) the coordinator reads at.
        at: u64,
    },
    /// Per-epoch states of a range of rows of one partition.
    Range {
        /// View name.
        view: String,
        /// Partition key.
        partition: Vec<u8>,
        /// First clustering key.
        from: Option<Vec<u8>>,
        /// Last clustering key.
        to: Option<Vec<u8>>,
        /// Most rows.
        limit: u64,
        /// The batch boundary (Unix seconds) the coordinator reads at.
        at: u64,
    },
    /// The receiver's catalog.
    Catalog,
    /// Declare a view (its spec as JSON, the catalog's own form).
    Declare {
        /// View name.
        name: String,
        /// Spec, JSON.
        spec: String,
    },
    /// A step of a batch import on the receiver's store.
    Import {
        /// View name.
        view: String,
        /// The boundary the import covers until (Unix seconds).
        boundary: u64,
        /// The import's id.
        import: u64,
        /// Which step.
        step: ImportStep,
    },
    /// The receiver's published batch boundaries.
    Boundaries,
    /// Drop epochs of a view for good (a cluster-wide drop, or gossip about one).
    DropEpochs {
        /// View name.
        view: String,
        /// Epoch indexes.
        epochs: Vec<u64>,
    },
    /// The receiver's dropped epochs, per view.
    DroppedEpochs,
    /// A page of a batch table, for a node catching up on an import it missed.
    BatchPage {
        /// View name.
        view: String,
        /// The table's boundary (Unix seconds).
        boundary: u64,
        /// Rows after this key ([`Key::encode`] form); from the first when `None`.
        after: Option<Vec<u8>>,
        /// Most rows.
        limit: u32,
    },
    /// A step of anti-entropy ([`crate::anti_entropy`]).
    AntiEntropy(AntiEntropyRequest),
    /// A page of the existing keys with a placement hash in `from..=to` ([`crate::scan`]).
    ScanKeys {
        /// View name.
        view: String,
        /// First placement hash.
        from: u64,
        /// Last placement hash.
        to: u64,
        /// Most placement hashes in the page.
        limit: u32,
    },
    /// `States` with set states restricted to `members` (a membership test): answered
    /// with `States`, each set part holding only those members' dots and tombstones.
    /// Appended last: older nodes cannot decode it and fail the call, which the
    /// coordinator counts as that owner not answering.
    MemberStates {
        /// View name.
        view: String,
        /// Keys, [`Key::encode`] form.
        keys: Vec<Vec<u8>>,
        /// The batch boundary (Unix seconds) the coordinator reads at.
        at: u64,
        /// The members asked about.
        members: Vec<Vec<u8>>,
    },
    /// Each key's set summaries at a batch boundary (a cardinality read): answered with
    /// `Summaries`. Appended last, as `MemberStates`; a coordinator whose owners cannot
    /// answer it reads the members instead.
    SetSummaries {
        /// View name.
        view: String,
        /// Keys, [`Key::encode`] form.
        keys: Vec<Vec<u8>>,
        /// The batch boundary (Unix seconds) the coordinator reads at.
        at: u64,
    },
}

/// What one replica of a partition asks another while comparing them. Ranges are
/// placement hashes, first and last included.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AntiEntropyRequest {
    /// The digests of a range in every live (view, epoch).
    Digests {
        /// First placement hash.
        first: u64,
        /// Last placement hash.
        last: u64,
    },
    /// The leaf digests of a range in one (view, epoch).
    Leaves {
        /// View name.
        view: String,
        /// Epoch index.
        epoch: u64,
        /// First placement hash.
        first: u64,
        /// Last placement hash.
        last: u64,
    },
    /// The (key, state hash) entries of a range in one (view, epoch).
    Entries {
        /// View name.
        view: String,
        /// Epoch index.
        epoch: u64,
        /// First placement hash.
        first: u64,
        /// Last placement hash.
        last: u64,
    },
    /// The current states of keys in one (view, epoch).
    States {
        /// View name.
        view: String,
        /// Epoch index.
        epoch: u64,
        /// Keys, [`Key::encode`] form.
        keys: Vec<Vec<u8>>,
    },
    /// States to merge where their epoch is live on the receiver.
    Repair {
        /// View name.
        view: String,
        /// The states.
        states: Vec<WireState>,
    },
}

/// The answers to [`AntiEntropyRequest`]s, in the same order of variants.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AntiEntropyResponse {
    /// Digests: `(view, epoch, keys, root)` of every non-empty live (view, epoch), and
    /// `(view, first live epoch)` of every view the answering node knows.
    Digests {
        /// Non-empty digests.
        epochs: Vec<(String, u64, u64, [u8; 16])>,
        /// First live epoch per view.
        floors: Vec<(String, u64)>,
    },
    /// Leaf digests.
    Leaves(Vec<[u8; 16]>),
    /// `(key, state hash)` entries, key in [`Key::encode`] form.
    Entries(Vec<(Vec<u8>, [u8; 16])>),
    /// States of the keys that have one.
    States(Vec<WireState>),
    /// How many pushed states were merged, and how many left out (epoch not live).
    Repaired {
        /// Merged.
        merged: u64,
        /// Left out.
        skipped: u64,
    },
}

/// One step of a batch import, as the coordinator drives it on every node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ImportStep {
    /// Start staging.
    Begin,
    /// Stage rows: (key in [`Key::encode`] form, value in [`BatchValue::encode`] form).
    Rows(Vec<(Vec<u8>, Vec<u8>)>),
    /// Make the staged rows durable.
    Finish,
    /// Make the import the current boundary.
    Publish,
    /// Abandon it.
    Abort,
}

/// One update's result from the applying replica.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireWritten {
    /// Outcome and effect, or why it was refused.
    pub result: Result<(u8, i64), WireOpError>,
    /// Epoch it landed in.
    pub epoch: u64,
    /// Delta, [`Value::encode`] form.
    pub delta: Option<Vec<u8>>,
}

/// [`OpError`] on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WireOpError {
    /// [`OpError::WrongOp`].
    WrongOp {
        /// Op name.
        op: String,
        /// Value type name.
        value_type: String,
    },
    /// [`OpError::NegativeIncrement`].
    NegativeIncrement,
    /// [`OpError::TooManyWriters`].
    TooManyWriters {
        /// Limit.
        limit: u64,
    },
    /// [`OpError::Overflow`].
    Overflow,
    /// [`OpError::EpochDropped`].
    EpochDropped {
        /// The dropped epoch.
        epoch: u64,
    },
    /// [`OpError::NotDeletable`].
    NotDeletable {
        /// Value type name.
        value_type: String,
    },
}

/// What a peer answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Ping`.
    Pong {
        /// The responder's catalog digest.
        catalog: u64,
        /// The responder's wall clock when it answered (µs since 1970): the pinger
        /// estimates the offset between their clocks from it.
        clock_us: u64,
        /// [`crate::member_record::digest`] of the answering node's member records.
        members: u64,
    },
    /// Answer to `Members`: the receiver's records.
    Members(Vec<crate::member_record::MemberRecord>),
    /// Answer to `Gossip`: handed over.
    GossipReceived,
    /// Answer to `Apply`, per update in order.
    Applied(Vec<WireWritten>),
    /// Answer to `Merge`: durable on the responder.
    Merged,
    /// Answer to `States`, per key in order.
    States {
        /// Parts per key, in order.
        rows: Vec<WireRow>,
        /// Epochs of the view the responder knows were dropped: a coordinator that has not
        /// heard of a drop yet learns it here and answers nothing of those epochs.
        dropped: Vec<u64>,
    },
    /// Answer to `Range`: rows with their parts.
    Range {
        /// (clustering key, parts), in clustering order.
        rows: Vec<(Vec<u8>, WireRow)>,
        /// More rows matched than the limit.
        truncated: bool,
        /// As in `States`.
        dropped: Vec<u64>,
    },
    /// Answer to `States` or `Range` at a boundary the responder cannot read at.
    BoundaryUnavailable {
        /// The responder's current boundary.
        current: u64,
    },
    /// Answer to `Import`: the step is done (rows: durable in the journal; finish and
    /// publish: fsynced).
    Imported,
    /// Answer to `Boundaries`: (view, boundary, import) of every published batch view.
    Boundaries(Vec<(String, u64, u64)>),
    /// Answer to `BatchPage`: rows in key order, (key, value) in [`Key::encode`] and
    /// [`BatchValue::encode`] forms; fewer than the limit at the end of the table.
    BatchPage(Vec<(Vec<u8>, Vec<u8>)>),
    /// Answer to `DropEpochs`: whether the responder held any of them.
    Dropped(bool),
    /// Answer to `DroppedEpochs`: (view, epoch indexes) of every view with some.
    DroppedEpochs(Vec<(String, Vec<u64>)>),
    /// Answer to `Catalog`: (name, spec JSON).
    Catalog(Vec<(String, String)>),
    /// Answer to `AntiEntropy`.
    AntiEntropy(AntiEntropyResponse),
    /// Answer to `Declare`.
    Declared,
    /// Answer to `ScanKeys`: keys in [`Key::encode`] form with their value types, and the
    /// last placement hash the page covers completely.
    Keys {
        /// (encoded key, value type), in placement order.
        keys: Vec<(Vec<u8>, speedlayer_core::ValueType)>,
        /// See [`speedlayer_store::KeyPage::reached`].
        reached: u64,
    },
    /// The request failed on the responder.
    Failed(String),
    /// Answer to `SetSummaries`, per key in order.
    Summaries {
        /// See [`speedlayer_core::RowSummary`].
        rows: Vec<speedlayer_core::RowSummary>,
        /// As in `States`.
        dropped: Vec<u64>,
    },
}

/// Why bytes from a peer could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not a postcard message of the expected type.
    #[error("malformed message: {0}")]
    Postcard(#[from] postcard::Error),
    /// A key, op or state inside did not decode.
    #[error("malformed payload: {0}")]
    Payload(#[from] DecodeError),
    /// A key did not decode.
    #[error("malformed key: {0}")]
    Key(String),
}

/// Postcard bytes of `message`.
pub fn to_bytes<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    Ok(postcard::to_stdvec(message)?)
}

/// `T` from postcard bytes.
pub fn from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    Ok(postcard::from_bytes(bytes)?)
}

/// A key from its [`Key::encode`] form.
pub fn key(bytes: &[u8]) -> Result<Key, WireError> {
    Key::decode(bytes).map_err(|e| WireError::Key(e.to_string()))
}

/// Keys from their [`Key::encode`] forms, validating each.
pub fn keys(encoded: &[Vec<u8>]) -> Result<Vec<Key>, WireError> {
    encoded.iter().map(|k| key(k)).collect()
}

impl WireUpdate {
    /// The wire form of `update`.
    pub fn from_update(update: &Update) -> WireUpdate {
        let mut op = Vec::new();
        update.op.encode_into(&mut op);
        WireUpdate {
            key: update.key.encode(),
            op,
            ts_us: update.ts_us,
            id: update.id.as_ref().map(|id| (id.writer.clone(), id.seq)),
        }
    }

    /// Back to an [`Update`], validating the key and op bytes.
    pub fn into_update(self) -> Result<Update, WireError> {
        let mut reader = Reader::new(&self.op);
        let op = Op::decode_from(&mut reader)?;
        Ok(Update {
            key: key(&self.key)?,
            op,
            ts_us: self.ts_us,
            id: self.id.map(|(writer, seq)| UpdateId { writer, seq }),
        })
    }
}

impl WireState {
    /// The wire form of a key's state in an epoch.
    pub fn new(epoch: Epoch, key: &Key, state: &Value) -> WireState {
        WireState {
            epoch: epoch.0,
            key: key.encode(),
            state: state.encode(),
        }
    }

    /// Back to `(epoch, key, state)`, validating the bytes.
    pub fn decode(&self) -> Result<(Epoch, Key, Value), WireError> {
        Ok((
            Epoch(self.epoch),
            key(&self.key)?,
            Value::decode(&self.state)?,
        ))
    }
}

/// Per-epoch states to their wire form.
pub fn encode_parts(parts: &[(Epoch, Value)]) -> WireParts {
    parts.iter().map(|(e, v)| (e.0, v.encode())).collect()
}

/// A row's parts to their wire form.
pub fn encode_row(parts: &RowParts) -> WireRow {
    (
        parts.batch.as_ref().map(BatchValue::encode),
        encode_parts(&parts.epochs),
    )
}

/// A row's parts from their wire form.
pub fn decode_row(row: &WireRow) -> Result<RowParts, WireError> {
    Ok(RowParts {
        batch: row.0.as_deref().map(BatchValue::decode).transpose()?,
        epochs: decode_parts(&row.1)?,
    })
}

/// Per-epoch states from their wire form.
pub fn decode_parts(parts: &WireParts) -> Result<Vec<(Epoch, Value)>, WireError> {
    parts
        .iter()
        .map(|(e, bytes)| Ok((Epoch(*e), Value::decode(bytes)?)))
        .collect()
}

fn outcome_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Applied => 0,
        Outcome::Duplicate => 1,
        Outcome::Stale => 2,
        Outcome::Late => 3,
    }
}

/// The wire form of one update's result.
pub fn encode_result(result: &Result<Applied, OpError>) -> Result<(u8, i64), WireOpError> {
    match result {
        Ok(applied) => Ok((outcome_code(applied.outcome), applied.effect)),
        Err(OpError::WrongOp { op, value_type }) => Err(WireOpError::WrongOp {
            op: (*op).to_owned(),
            value_type: value_type.to_string(),
        }),
        Err(OpError::NegativeIncrement) => Err(WireOpError::NegativeIncrement),
        Err(OpError::TooManyWriters { limit }) => Err(WireOpError::TooManyWriters {
            limit: *limit as u64,
        }),
        Err(OpError::Overflow) => Err(WireOpError::Overflow),
        Err(OpError::EpochDropped { epoch }) => Err(WireOpError::EpochDropped { epoch: *epoch }),
        Err(OpError::NotDeletable { value_type }) => Err(WireOpError::NotDeletable {
            value_type: value_type.to_string(),
        }),
    }
}

/// Op names as `'static` strings ([`OpError::WrongOp`] holds one).
const OP_NAMES: [&str; 9] = [
    "incr", "max", "min", "set", "add", "remove", "pfadd", "merge", "delete",
];

/// One update's result from its wire form.
pub fn decode_result(result: &Result<(u8, i64), WireOpError>) -> Result<Applied, OpError> {
    match result {
        Ok((code, effect)) => Ok(Applied {
            outcome: match code {
                1 => Outcome::Duplicate,
                2 => Outcome::Stale,
                3 => Outcome::Late,
                _ => Outcome::Applied,
            },
            effect: *effect,
        }),
        Err(WireOpError::WrongOp { op, value_type }) => Err(OpError::WrongOp {
            op: OP_NAMES
                .iter()
                .find(|name| **name == op)
                .copied()
                .unwrap_or("op"),
            value_type: value_type
                .parse()
                .unwrap_or(speedlayer_core::ValueType::Counter),
        }),
        Err(WireOpError::NegativeIncrement) => Err(OpError::NegativeIncrement),
        Err(WireOpError::TooManyWriters { limit }) => Err(OpError::TooManyWriters {
            limit: *limit as usize,
        }),
        Err(WireOpError::Overflow) => Err(OpError::Overflow),
        Err(WireOpError::EpochDropped { epoch }) => Err(OpError::EpochDropped { epoch: *epoch }),
        Err(WireOpError::NotDeletable { value_type }) => Err(OpError::NotDeletable {
            value_type: value_type
                .parse()
                .unwrap_or(speedlayer_core::ValueType::Hll),
        }),
    }
}
