//! `MULTI` / `EXEC` / `DISCARD`: a connection's commands queued, then run together.
//!
//! Between `MULTI` and `EXEC` commands are answered `+QUEUED` and kept; `EXEC` runs them
//! in order as one pipeline (runs of writes become one storage call per view) and
//! answers the array of their replies; `DISCARD` drops them. An unknown command while
//! queueing makes `EXEC` answer `EXECABORT` and run nothing, as in Redis.
//!
//! What differs from Redis, by design: the commands are not isolated from other clients
//! (a leaderless store has no lock to hold across keys and owners), and there is no
//! rollback (each write is durable and replicated on its own, and one that fails leaves
//! the others applied). `WATCH`, whose optimistic check needs that isolation, is refused;
//! `UNWATCH` answers `+OK` (nothing is ever watched). Clients that send transactional
//! pipelines for batching (redis-py's default `pipeline()`) get the batching.

use speedlayer_resp::{Reply, Request};

use super::admin;
use super::session::{Session, Transaction};
use super::step::Step;

/// What a command does to the connection's transaction: a step (answered or run now),
/// or `None` when it is not a transaction command and none is open (plan it as usual).
pub fn plan(session: &mut Session, name: &str, request: &Request) -> Option<Step> {
    let reply = |r: Reply| Some(Step::Reply(r));
    match (name, session.multi.is_some()) {
        ("MULTI", false) => {
            session.multi = Some(Transaction::default());
            reply(Reply::ok())
        }
        ("MULTI", true) => reply(Reply::error("ERR MULTI calls can not be nested")),
        ("EXEC", false) => reply(Reply::error("ERR EXEC without MULTI")),
        ("DISCARD", false) => reply(Reply::error("ERR DISCARD without MULTI")),
        ("EXEC", true) => {
            let transaction = session.multi.take().unwrap_or_default();
            if transaction.failed {
                reply(Reply::error(
                    "EXECABORT Transaction discarded because of previous errors.",
                ))
            } else {
                Some(Step::Exec(transaction.queued))
            }
        }
        ("DISCARD", true) => {
            session.multi = None;
            reply(Reply::ok())
        }
        ("WATCH", true) => reply(Reply::error("ERR WATCH inside MULTI is not allowed")),
        ("WATCH", false) => reply(Reply::error(
            "ERR WATCH is not supported: speedlayer's MULTI/EXEC batches commands but does not isolate them from other clients",
        )),
        ("UNWATCH", _) => reply(Reply::ok()),
        (_, true) => {
            if admin::is_known(name) {
                if let Some(transaction) = session.multi.as_mut() {
                    transaction.queued.push(request.clone());
                }
                reply(Reply::Simple("QUEUED".into()))
            } else {
                if let Some(transaction) = session.multi.as_mut() {
                    transaction.failed = true;
                }
                reply(admin::execute(session, name, request))
            }
        }
        (_, false) => None,
    }
}
