//! Connection and server commands: PING, ECHO, HELLO, AUTH, SELECT, CLIENT, COMMAND,
//! CONFIG, INFO, QUIT, and speedlayer's ID and CONSISTENCY ([`super::write_options`]).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use speedlayer_resp::{Protocol, Reply, Request};

use super::args::{arity, command_name, integer};
use super::command_docs::{CommandDoc, DOCS};
use super::glob;
use super::keys::REDIS_VIEW;
use super::session::Session;
use super::write_options;

/// One COMMAND entry: (name, arity, flags, first key, last key, step); arity is Redis's:
/// positive = exact, negative = at least.
type CommandSpec = (&'static str, i64, &'static [&'static str], i64, i64, i64);

/// Every implemented command, for COMMAND.
const COMMANDS: &[CommandSpec] = &[
    ("ping", -1, &["fast", "stale"], 0, 0, 0),
    ("echo", 2, &["fast"], 0, 0, 0),
    (
        "hello",
        -1,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        0,
        0,
        0,
    ),
    (
        "auth",
        -2,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        0,
        0,
        0,
    ),
    ("select", 2, &["loading", "stale", "fast"], 0, 0, 0),
    ("get", 2, &["readonly", "fast"], 1, 1, 1),
    ("set", -3, &["write", "denyoom"], 1, 1, 1),
    ("del", -2, &["write"], 1, -1, 1),
    ("flushdb", -1, &["write"], 0, 0, 0),
    ("flushall", -1, &["write"], 0, 0, 0),
    ("exists", -2, &["readonly", "fast"], 1, -1, 1),
    ("mget", -2, &["readonly", "fast"], 1, -1, 1),
    ("incr", 2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("incrby", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("decr", 2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("decrby", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("hincrby", 4, &["write", "denyoom", "fast"], 1, 1, 1),
    ("hget", 3, &["readonly", "fast"], 1, 1, 1),
    ("hgetall", 2, &["readonly"], 1, 1, 1),
    ("sadd", -3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("srem", -3, &["write", "fast"], 1, 1, 1),
    ("smembers", 2, &["readonly"], 1, 1, 1),
    ("sismember", 3, &["readonly", "fast"], 1, 1, 1),
    ("scard", 2, &["readonly", "fast"], 1, 1, 1),
    ("pfadd", -2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("pfcount", -2, &["readonly"], 1, -1, 1),
    ("pfmerge", -2, &["write", "denyoom"], 1, -1, 1),
    ("xadd", -5, &["write", "denyoom", "fast"], 1, 1, 1),
    ("command", -1, &["loading", "stale"], 0, 0, 0),
    ("config", -2, &["admin", "loading", "stale"], 0, 0, 0),
    ("info", -1, &["loading", "stale"], 0, 0, 0),
    (
        "client",
        -2,
        &["admin", "noscript", "loading", "stale"],
        0,
        0,
        0,
    ),
    ("quit", -1, &["fast", "no_auth"], 0, 0, 0),
    ("id", -3, &["fast"], 0, 0, 0),
    (
        "multi",
        1,
        &["noscript", "loading", "stale", "fast"],
        0,
        0,
        0,
    ),
    ("exec", 1, &["noscript", "loading", "stale"], 0, 0, 0),
    (
        "discard",
        1,
        &["noscript", "loading", "stale", "fast"],
        0,
        0,
        0,
    ),
    (
        "watch",
        -2,
        &["noscript", "loading", "stale", "fast"],
        1,
        -1,
        1,
    ),
    (
        "unwatch",
        1,
        &["noscript", "loading", "stale", "fast"],
        0,
        0,
        0,
    ),
    ("dbsize", 1, &["readonly", "fast"], 0, 0, 0),
    ("scan", -2, &["readonly"], 0, 0, 0),
    ("keys", 2, &["readonly"], 0, 0, 0),
    ("time", 1, &["loading", "stale", "fast"], 0, 0, 0),
    ("type", 2, &["readonly", "fast"], 1, 1, 1),
    ("unlink", -2, &["write", "fast"], 1, -1, 1),
    ("mset", -3, &["write", "denyoom"], 1, -1, 2),
    ("smismember", -3, &["readonly", "fast"], 1, 1, 1),
    ("sinter", -2, &["readonly"], 1, -1, 1),
    ("sunion", -2, &["readonly"], 1, -1, 1),
    ("sdiff", -2, &["readonly"], 1, -1, 1),
    ("sinterstore", -3, &["write", "denyoom"], 1, -1, 1),
    ("sunionstore", -3, &["write", "denyoom"], 1, -1, 1),
    ("sdiffstore", -3, &["write", "denyoom"], 1, -1, 1),
    ("srandmember", -2, &["readonly"], 1, 1, 1),
    ("hset", -4, &["write", "denyoom", "fast"], 1, 1, 1),
    ("hmset", -4, &["write", "denyoom", "fast"], 1, 1, 1),
    ("hmget", -3, &["readonly", "fast"], 1, 1, 1),
    ("hdel", -3, &["write", "fast"], 1, 1, 1),
    ("hlen", 2, &["readonly", "fast"], 1, 1, 1),
    ("hkeys", 2, &["readonly"], 1, 1, 1),
    ("hvals", 2, &["readonly"], 1, 1, 1),
    ("hexists", 3, &["readonly", "fast"], 1, 1, 1),
    ("consistency", -1, &["fast"], 0, 0, 0),
];

/// Why a Redis command is refused on purpose (docs/redis-compat.md has the same list).
const REFUSED: &[(&str, &str)] = &[
    ("EXPIRE", TTL_REASON),
    ("PEXPIRE", TTL_REASON),
    ("EXPIREAT", TTL_REASON),
    ("PEXPIREAT", TTL_REASON),
    ("EXPIRETIME", TTL_REASON),
    ("PEXPIRETIME", TTL_REASON),
    ("TTL", TTL_REASON),
    ("PTTL", TTL_REASON),
    ("PERSIST", TTL_REASON),
    ("SETEX", TTL_REASON),
    ("PSETEX", TTL_REASON),
    ("GETEX", TTL_REASON),
    ("SETNX", ATOMIC_REASON),
    ("MSETNX", ATOMIC_REASON),
    ("GETSET", ATOMIC_REASON),
    ("GETDEL", ATOMIC_REASON),
    ("INCRBYFLOAT", "counters are 64-bit integers"),
    ("HINCRBYFLOAT", "counters are 64-bit integers"),
    (
        "WAIT",
        "a write is answered once it reached the connection's consistency (see CONSISTENCY): there is nothing left to wait for",
    ),
    (
        "SHUTDOWN",
        "stop a node with SIGTERM (or its service manager): clients cannot stop it",
    ),
];

/// Why keys have no per-key TTL.
const TTL_REASON: &str =
    "keys expire with their epoch (the view's epoch_secs and retention), not a per-key TTL";

/// Why read-then-write and conditional commands are refused.
const ATOMIC_REASON: &str =
    "a conditional or read-then-write step cannot be atomic across leaderless replicas";

/// The reason `name` is refused, when it is.
fn refusal(name: &str) -> Option<&'static str> {
    REFUSED
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, why)| *why)
}

/// True for every command this server implements.
pub fn is_known(name: &str) -> bool {
    COMMANDS.iter().any(|(n, ..)| n.eq_ignore_ascii_case(name))
}

/// The lower-case names of every implemented command (metric labels).
pub fn command_names() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|(name, ..)| *name)
}

/// Executes a connection or server command.
pub fn execute(session: &mut Session, name: &str, request: &Request) -> Reply {
    let args = &request.args;
    match name {
        "PING" => match args.len() {
            1 => Reply::Simple("PONG".into()),
            2 => Reply::Bulk(args[1].clone()),
            _ => arity(name),
        },
        "ECHO" if args.len() == 2 => Reply::Bulk(args[1].clone()),
        "QUIT" => {
            session.quit = true;
            Reply::ok()
        }
        "AUTH" => match args.len() {
            2 => auth(session, None, &args[1]),
            3 => auth(session, Some(&args[1]), &args[2]),
            _ => arity(name),
        },
        "HELLO" => hello(session, args),
        "SELECT" if args.len() == 2 => match integer(&args[1]) {
            Ok(0) => Reply::ok(),
            Ok(_) => Reply::error("ERR DB index is out of range"),
            Err(reply) => reply,
        },
        "CLIENT" if args.len() >= 2 => client(session, args),
        "DBSIZE" if args.len() == 1 => Reply::Integer(redis_keys(session) as i64),
        "TIME" if args.len() == 1 => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Reply::Array(vec![
                Reply::Bulk(Bytes::from(now.as_secs().to_string())),
                Reply::Bulk(Bytes::from(now.subsec_micros().to_string())),
            ])
        }
        "ID" => write_options::id(session, args),
        "CONSISTENCY" => write_options::consistency(session, args),
        "COMMAND" => command(args),
        "CONFIG" if args.len() >= 2 => config(session, args),
        "INFO" => Reply::Verbatim {
            format: *b"txt",
            text: Bytes::from(info(session, &args[1..])),
        },
        _ if is_known(name) => arity(name),
        _ if refusal(name).is_some() => Reply::error(format!(
            "ERR {name} is not supported: {}",
            refusal(name).unwrap_or_default()
        )),
        _ => {
            let mut message = format!(
                "ERR unknown command '{}', with args beginning with:",
                String::from_utf8_lossy(&args[0])
            );
            for arg in args.iter().skip(1).take(8) {
                let _ = write!(message, " '{}'", String::from_utf8_lossy(arg));
            }
            Reply::error(message)
        }
    }
}

fn auth(session: &mut Session, user: Option<&Bytes>, password: &Bytes) -> Reply {
    let Some(expected) = &session.shared.requirepass else {
        return Reply::error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        );
    };
    let wrong = || Reply::error("WRONGPASS invalid username-password pair or user is disabled.");
    if session.auth_failed {
        // One guess per round trip: the rest of this pipeline's attempts are not checked.
        return wrong();
    }
    let user_ok = user.is_none_or(|u| &u[..] == b"default");
    if user_ok && speedlayer_api::secret_matches(password, expected.as_bytes()) {
        session.authenticated = true;
        if let Some(peer) = session.peer {
            session.shared.auth_throttle.succeeded(peer);
        }
        Reply::ok()
    } else {
        session.auth_failed = true;
        session.penalty = session.shared.auth_throttle.failed("resp", session.peer);
        wrong()
    }
}

fn hello(session: &mut Session, args: &[Bytes]) -> Reply {
    let mut protocol = session.protocol;
    let mut i = 1;
    if let Some(version) = args.get(1) {
        protocol = match integer(version) {
            Ok(2) => Protocol::Resp2,
            Ok(3) => Protocol::Resp3,
            Ok(_) => return Reply::error("NOPROTO unsupported protocol version"),
            Err(_) => {
                return Reply::error("ERR Protocol version is not an integer or out of range")
            }
        };
        i = 2;
    }
    while i < args.len() {
        let option = command_name(&args[i]);
        match option.as_str() {
            "AUTH" if i + 2 < args.len() => {
                let reply = auth(session, Some(&args[i + 1]), &args[i + 2]);
                if matches!(reply, Reply::Error(_)) {
                    return reply;
                }
                i += 3;
            }
            "SETNAME" if i + 1 < args.len() => {
                session.name = Some(args[i + 1].clone());
                i += 2;
            }
            _ => return Reply::error(format!("ERR Syntax error in HELLO option '{option}'")),
        }
    }
    if !session.authenticated {
        return Reply::error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    session.protocol = protocol;
    session.publish();
    let proto = match protocol {
        Protocol::Resp2 => 2,
        Protocol::Resp3 => 3,
    };
    let field = |name: &str| Reply::Bulk(Bytes::copy_from_slice(name.as_bytes()));
    Reply::Map(vec![
        (field("server"), field("speedlayer")),
        (field("version"), field(env!("CARGO_PKG_VERSION"))),
        (field("proto"), Reply::Integer(proto)),
        (field("id"), Reply::Integer(session.id as i64)),
        (field("mode"), field("standalone")),
        (field("role"), field("master")),
        (field("modules"), Reply::Array(Vec::new())),
    ])
}

fn client(session: &mut Session, args: &[Bytes]) -> Reply {
    match command_name(&args[1]).as_str() {
        "SETNAME" if args.len() == 3 => {
            if args[2].iter().any(|b| *b == b' ' || *b == b'\n') {
                return Reply::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            session.name = Some(args[2].clone());
            session.publish();
            Reply::ok()
        }
        "GETNAME" if args.len() == 2 => session.name.clone().map_or(Reply::Null, Reply::Bulk),
        "ID" if args.len() == 2 => Reply::Integer(session.id as i64),
        "SETINFO" if args.len() == 4 => {
            if args[3].iter().any(|b| *b == b' ' || *b == b'\n') {
                return Reply::error(
                    "ERR lib-name and lib-ver cannot contain spaces, newlines or special characters.",
                );
            }
            let value = String::from_utf8_lossy(&args[3]).into_owned();
            match command_name(&args[2]).as_str() {
                "LIB-NAME" => session.lib.0 = value,
                "LIB-VER" => session.lib.1 = value,
                other => {
                    return Reply::error(format!(
                        "ERR Unrecognized option '{}'",
                        other.to_ascii_lowercase()
                    ))
                }
            }
            session.publish();
            Reply::ok()
        }
        "INFO" if args.len() == 2 => {
            session.publish();
            Reply::Verbatim {
                format: *b"txt",
                text: Bytes::from(session.shared.clients.line(session.id)),
            }
        }
        "LIST" => client_list(session, &args[2..]),
        other => Reply::error(format!(
            "ERR unknown subcommand or wrong number of arguments for 'CLIENT|{}'",
            other.to_ascii_lowercase()
        )),
    }
}

/// `CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id …]`: every client is a
/// normal one (no replicas, no pub/sub here).
fn client_list(session: &mut Session, args: &[Bytes]) -> Reply {
    let mut ids: Option<Vec<u64>> = None;
    let mut normal = true;
    let mut i = 0;
    while i < args.len() {
        match command_name(&args[i]).as_str() {
            "TYPE" if i + 1 < args.len() => {
                match command_name(&args[i + 1]).as_str() {
                    "NORMAL" => {}
                    "MASTER" | "REPLICA" | "SLAVE" | "PUBSUB" => normal = false,
                    other => {
                        return Reply::error(format!(
                            "ERR Unknown client type '{}'",
                            other.to_ascii_lowercase()
                        ))
                    }
                }
                i += 2;
            }
            "ID" if i + 1 < args.len() => {
                let mut wanted = Vec::new();
                i += 1;
                while i < args.len() {
                    match std::str::from_utf8(&args[i])
                        .ok()
                        .and_then(|s| s.parse().ok())
                    {
                        Some(id) => wanted.push(id),
                        None => return Reply::error("ERR Invalid client ID"),
                    }
                    i += 1;
                }
                ids = Some(wanted);
            }
            _ => return Reply::error("ERR syntax error"),
        }
    }
    session.publish();
    let text = if normal {
        session.shared.clients.lines(ids.as_deref())
    } else {
        String::new()
    };
    Reply::Verbatim {
        format: *b"txt",
        text: Bytes::from(text),
    }
}

fn command_entry(entry: &CommandSpec) -> Reply {
    let (name, arity, flags, first, last, step) = *entry;
    Reply::Array(vec![
        Reply::Bulk(Bytes::from_static(name.as_bytes())),
        Reply::Integer(arity),
        Reply::Set(flags.iter().map(|f| Reply::Simple((*f).into())).collect()),
        Reply::Integer(first),
        Reply::Integer(last),
        Reply::Integer(step),
    ])
}

fn command(args: &[Bytes]) -> Reply {
    match args.get(1).map(command_name).as_deref() {
        None => Reply::Array(COMMANDS.iter().map(command_entry).collect()),
        Some("COUNT") => Reply::Integer(COMMANDS.len() as i64),
        Some("DOCS") => command_docs(&args[2..]),
        Some("INFO") => Reply::Array(
            args[2..]
                .iter()
                .map(|name| {
                    COMMANDS
                        .iter()
                        .find(|(n, ..)| n.as_bytes().eq_ignore_ascii_case(name))
                        .map_or(Reply::NullArray, command_entry)
                })
                .collect(),
        ),
        Some(other) => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            other.to_ascii_lowercase()
        )),
    }
}

/// `COMMAND DOCS [name ...]`: a map of each command (all when none is named; unknown
/// names are left out, as Redis does) to its summary, Redis group and status here.
fn command_docs(names: &[Bytes]) -> Reply {
    let entry = |(name, group, status, summary): &CommandDoc| {
        (
            Reply::Bulk(Bytes::from_static(name.as_bytes())),
            Reply::Map(vec![
                (
                    Reply::Bulk(Bytes::from_static(b"summary")),
                    Reply::Bulk(Bytes::from_static(summary.as_bytes())),
                ),
                (
                    Reply::Bulk(Bytes::from_static(b"group")),
                    Reply::Bulk(Bytes::from_static(group.as_bytes())),
                ),
                (
                    Reply::Bulk(Bytes::from_static(b"speedlayer_status")),
                    Reply::Bulk(Bytes::from_static(status.as_bytes())),
                ),
            ]),
        )
    };
    let wanted = |name: &str| {
        names.is_empty()
            || names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    };
    Reply::Map(
        DOCS.iter()
            .filter(|(name, ..)| wanted(name))
            .map(entry)
            .collect(),
    )
}

/// CONFIG GET answers the few parameters clients probe at start (redis-benchmark asks
/// for `save` and `appendonly`); CONFIG SET is refused: settings come from the CLI.
/// `CONFIG GET pattern…` answers the settings that exist here with their true values
/// (Redis globs, as Redis 7 takes them); `CONFIG SET` is refused.
fn config(session: &Session, args: &[Bytes]) -> Reply {
    match command_name(&args[1]).as_str() {
        "GET" if args.len() >= 3 => {
            let shared = &session.shared;
            let settings: [(&str, String); 7] = [
                ("save", String::new()),
                ("appendonly", "yes".into()),
                ("appendfsync", "always".into()),
                ("databases", "1".into()),
                ("maxclients", shared.max_clients.to_string()),
                ("proto-max-bulk-len", shared.limits.max_bulk_len.to_string()),
                // Idle clients are never closed (a stalled request is, after the request
                // timeout, which Redis has no setting for).
                ("timeout", "0".into()),
            ];
            let mut pairs = Vec::new();
            for (name, value) in &settings {
                if args[2..]
                    .iter()
                    .any(|pattern| glob::matches(&pattern.to_ascii_lowercase(), name.as_bytes()))
                {
                    pairs.push((
                        Reply::Bulk(Bytes::copy_from_slice(name.as_bytes())),
                        Reply::Bulk(Bytes::from(value.clone())),
                    ));
                }
            }
            Reply::Map(pairs)
        }
        "SET" => Reply::error(
            "ERR CONFIG SET is not supported: configure speedlayer with its flags or config file",
        ),
        other => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try CONFIG HELP.",
            other.to_ascii_lowercase()
        )),
    }
}

/// Keys of the implicit `redis` view on this node that exist, exact as of the last checkpoint
/// (DBSIZE, INFO keyspace).
fn redis_keys(session: &Session) -> u64 {
    session
        .shared
        .coordinator
        .epochs(REDIS_VIEW)
        .map(|epochs| epochs.iter().map(|e| e.approx_keys).sum())
        .unwrap_or(0)
}

/// INFO with the sections asked for (all of them when none is).
fn info(session: &Session, sections: &[Bytes]) -> String {
    let shared = &session.shared;
    let wanted: Vec<String> = sections
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    let show = |name: &str| {
        wanted.is_empty()
            || wanted
                .iter()
                .any(|w| w == name || w == "all" || w == "default" || w == "everything")
    };
    let mut out = String::new();
    if show("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:7.2.0\r\nspeedlayer_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:{}\r\nprocess_id:{}\r\nnode_id:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            usize::BITS,
            std::process::id(),
            shared.coordinator.node_id(),
            shared.started.elapsed().as_secs(),
            shared.started.elapsed().as_secs() / 86_400,
        );
    }
    if show("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\n\r\n",
            shared.stats.connected.load(Ordering::Relaxed)
        );
    }
    if show("persistence") {
        // Writes are durable before the reply (journal sync): nothing like RDB or AOF
        // runs in the background, and a node serves once it has recovered.
        out.push_str(
            "# Persistence\r\nloading:0\r\naof_enabled:0\r\nrdb_bgsave_in_progress:0\r\n\r\n",
        );
    }
    if show("stats") {
        let stats = shared.coordinator.storage_stats();
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\njournal_syncs:{}\r\nupdates_applied:{}\r\nupdates_duplicate:{}\r\n\r\n",
            shared.stats.total_connections.load(Ordering::Relaxed),
            shared.stats.total_commands.load(Ordering::Relaxed),
            shared.stats.rejected_connections.load(Ordering::Relaxed),
            stats.journal_syncs,
            stats.updates_applied,
            stats.updates_duplicate,
        );
    }
    if show("replication") {
        // Every node takes writes (leaderless replication): each is a master to clients.
        out.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n");
    }
    if show("cluster") {
        // Not Redis Cluster: clients see one node that routes to the owners itself.
        out.push_str("# Cluster\r\ncluster_enabled:0\r\n\r\n");
    }
    if show("keyspace") {
        let keys = redis_keys(session);
        let _ = write!(out, "# Keyspace\r\ndb0:keys={keys},expires=0,avg_ttl=0\r\n");
    }
    out
}
