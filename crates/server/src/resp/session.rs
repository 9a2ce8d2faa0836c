//! A connection's session state: protocol version, authentication, name, the producer
//! id of its next write and its consistency.

use std::sync::Arc;

use bytes::Bytes;
use speedlayer_resp::Protocol;

use super::clients::ClientCard;
use super::RespShared;

/// One connection's state.
pub struct Session {
    pub(super) shared: Arc<RespShared>,
    pub(super) id: u64,
    pub(super) protocol: Protocol,
    pub(super) authenticated: bool,
    pub(super) name: Option<Bytes>,
    pub(super) quit: bool,
    /// The client's address (for the failed-`AUTH` throttle).
    pub(super) peer: Option<std::net::IpAddr>,
    /// The client's and the node's ends of the connection (`CLIENT LIST`).
    pub(super) addrs: (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>),
    /// `CLIENT SETINFO LIB-NAME` and `LIB-VER`.
    pub(super) lib: (String, String),
    /// When the connection was accepted.
    pub(super) connected: std::time::Instant,
    /// The last command run (`CLIENT LIST`'s `cmd`).
    pub(super) last_command: Bytes,
    /// When this client's card was last published.
    pub(super) published: std::time::Instant,
    /// An `AUTH` failed in the pipeline being run: later ones in it are refused unchecked
    /// (one guess per round trip, however long the pipeline).
    pub(super) auth_failed: bool,
    /// How long to wait before reading the client's next requests.
    pub(super) penalty: std::time::Duration,
    /// The producer id `ID` set for the next command ([`super::write_options`]).
    pub(super) next_id: Option<NextId>,
    /// The consistency `CONSISTENCY` set; the node's defaults until then.
    pub(super) options: Option<speedlayer_api::WriteOptions>,
    /// The commands queued since `MULTI` ([`super::transaction`]).
    pub(super) multi: Option<Transaction>,
}

impl Session {
    /// A fresh session on the connection from `addr` to `laddr`, listed for `CLIENT
    /// LIST`; authenticated from the start when no password is configured.
    pub fn new(
        shared: Arc<RespShared>,
        id: u64,
        addr: Option<std::net::SocketAddr>,
        laddr: Option<std::net::SocketAddr>,
    ) -> Self {
        let authenticated = shared.requirepass.is_none();
        let mut session = Session {
            addrs: (addr, laddr),
            lib: Default::default(),
            connected: std::time::Instant::now(),
            last_command: Bytes::new(),
            published: std::time::Instant::now(),
            shared,
            id,
            protocol: Protocol::Resp2,
            authenticated,
            name: None,
            quit: false,
            peer: addr.map(|a| a.ip()),
            auth_failed: false,
            penalty: std::time::Duration::ZERO,
            next_id: None,
            options: None,
            multi: None,
        };
        session.publish();
        session
    }

    /// Updates this client's card in the registry `CLIENT LIST` reads.
    pub fn publish(&mut self) {
        self.published = std::time::Instant::now();
        let text = |b: &Option<Bytes>| {
            b.as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned()
        };
        self.shared.clients.publish(
            self.id,
            ClientCard {
                addr: self.addrs.0,
                laddr: self.addrs.1,
                name: text(&self.name),
                lib_name: self.lib.0.clone(),
                lib_ver: self.lib.1.clone(),
                connected: self.connected,
                active: std::time::Instant::now(),
                last_command: String::from_utf8_lossy(&self.last_command).to_ascii_lowercase(),
                resp: if self.protocol == Protocol::Resp3 {
                    3
                } else {
                    2
                },
                multi: self.multi.as_ref().map_or(-1, |t| t.queued.len() as i64),
            },
        );
    }

    /// The wait a failed `AUTH` in the last pipeline earned (zero otherwise); resets it.
    pub fn take_penalty(&mut self) -> std::time::Duration {
        self.auth_failed = false;
        std::mem::take(&mut self.penalty)
    }

    /// The protocol replies are encoded in.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// True once the client sent QUIT.
    pub fn quit(&self) -> bool {
        self.quit
    }
}

/// What `ID` gave the next write.
pub struct NextId {
    /// The producer id.
    pub id: speedlayer_core::UpdateId,
    /// The event time, when given (else the arrival time, as for any write).
    pub ts_us: Option<i64>,
}

/// The commands queued since `MULTI`.
#[derive(Default)]
pub struct Transaction {
    /// The commands, in the order sent.
    pub(super) queued: Vec<speedlayer_resp::Request>,
    /// A command could not be queued: `EXEC` aborts.
    pub(super) failed: bool,
}

impl Session {
    /// How this connection's reads and writes are carried out: as set with
    /// `CONSISTENCY`, else the node's defaults.
    pub fn options(&self) -> speedlayer_api::WriteOptions {
        self.options
            .unwrap_or_else(|| self.shared.coordinator.defaults())
    }
}
