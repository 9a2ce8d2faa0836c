//! Every open RESP connection as `CLIENT LIST` and `CLIENT INFO` describe it.
//!
//! Each session publishes its card after every pipeline (name, library, protocol, last
//! command, time of activity) and removes it when the connection ends, so a listing costs
//! one lock and is never older than the clients' last round trip. Fields Redis reports
//! about its own buffers and memory are 0 here: speedlayer does not track them per client.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

/// What `CLIENT LIST` says of one connection.
#[derive(Clone, Debug)]
pub struct ClientCard {
    /// The client's address.
    pub addr: Option<SocketAddr>,
    /// The node's address the client reached.
    pub laddr: Option<SocketAddr>,
    /// `CLIENT SETNAME` / `HELLO … SETNAME`.
    pub name: String,
    /// `CLIENT SETINFO LIB-NAME`.
    pub lib_name: String,
    /// `CLIENT SETINFO LIB-VER`.
    pub lib_ver: String,
    /// When the connection was accepted.
    pub connected: Instant,
    /// When it last sent commands.
    pub active: Instant,
    /// The last command it ran (lower case).
    pub last_command: String,
    /// 2 or 3.
    pub resp: u8,
    /// Commands queued in an open `MULTI`, or -1 outside one.
    pub multi: i64,
}

/// The open connections, by client id.
#[derive(Default)]
pub struct ClientRegistry {
    clients: Mutex<BTreeMap<u64, ClientCard>>,
}

impl ClientRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ClientCard>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records (or replaces) client `id`'s card.
    pub fn publish(&self, id: u64, card: ClientCard) {
        self.lock().insert(id, card);
    }

    /// Forgets client `id` (its connection ended).
    pub fn close(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// `CLIENT INFO`'s line for client `id` (empty when unknown).
    pub fn line(&self, id: u64) -> String {
        self.lock()
            .get(&id)
            .map(|card| describe(id, card))
            .unwrap_or_default()
    }

    /// `CLIENT LIST`'s lines for the clients `ids` names (every client when `None`).
    pub fn lines(&self, ids: Option<&[u64]>) -> String {
        let clients = self.lock();
        let mut out = String::new();
        for (id, card) in clients.iter() {
            if ids.is_none_or(|wanted| wanted.contains(id)) {
                out.push_str(&describe(*id, card));
            }
        }
        out
    }
}

/// Redis's line for a client: `key=value` pairs, space-separated, then a newline.
fn describe(id: u64, card: &ClientCard) -> String {
    let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    let mut line = String::new();
    let _ = writeln!(
        line,
        "id={id} addr={} laddr={} fd=0 name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}",
        addr(card.addr),
        addr(card.laddr),
        card.name,
        card.connected.elapsed().as_secs(),
        card.active.elapsed().as_secs(),
        card.multi,
        card.last_command,
        card.resp,
        card.lib_name,
        card.lib_ver,
    );
    line
}
