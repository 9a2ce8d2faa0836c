//! Single-key write commands, turned into storage updates grouped per pipeline.

use bytes::Bytes;
use speedlayer_api::{validate, Error, Update};
use speedlayer_core::Op;
use speedlayer_resp::{Reply, Request};

use super::args::{arity, integer, wrongtype};
use super::keys::resolve;
use super::session::Session;
use super::step::{PendingWrite, Render, Step};

/// The plan of a write command, or `None` when `name` is not one of them.
pub fn plan(session: &Session, name: &str, request: &Request) -> Option<Step> {
    let args = &request.args;
    let step = match name {
        "INCR" | "DECR" => {
            if args.len() != 2 {
                return Some(Step::Reply(arity(name)));
            }
            let by = if name == "INCR" { 1 } else { -1 };
            write(session, &args[1], None, Op::Incr(by), Render::Integer)
        }
        "INCRBY" | "DECRBY" => {
            if args.len() != 3 {
                return Some(Step::Reply(arity(name)));
            }
            let by = match integer(&args[2]) {
                Ok(by) => by,
                Err(reply) => return Some(Step::Reply(reply)),
            };
            let by = if name == "INCRBY" {
                Some(by)
            } else {
                by.checked_neg()
            };
            match by {
                Some(by) => write(session, &args[1], None, Op::Incr(by), Render::Integer),
                None => Step::Reply(Reply::error("ERR decrement would overflow")),
            }
        }
        "HINCRBY" => {
            if args.len() != 4 {
                return Some(Step::Reply(arity(name)));
            }
            match integer(&args[3]) {
                Ok(by) => write(
                    session,
                    &args[1],
                    Some(&args[2]),
                    Op::Incr(by),
                    Render::Integer,
                ),
                Err(reply) => Step::Reply(reply),
            }
        }
        "SET" => {
            if args.len() < 3 {
                return Some(Step::Reply(arity(name)));
            }
            if args.len() > 3 {
                return Some(Step::Reply(Reply::error(
                    "ERR SET options (EX, PX, NX, XX, GET, KEEPTTL) are not supported: keys expire by epoch",
                )));
            }
            write(
                session,
                &args[1],
                None,
                Op::Set(args[2].to_vec()),
                Render::Ok,
            )
        }
        "SADD" | "SREM" | "PFADD" => {
            if args.len() < 3 {
                // PFADD with no elements creates an empty sketch: a read first.
                return if name == "PFADD" && args.len() == 2 {
                    None
                } else {
                    Some(Step::Reply(arity(name)))
                };
            }
            let members: Vec<Vec<u8>> = args[2..].iter().map(|m| m.to_vec()).collect();
            let op = match name {
                "SADD" => Op::Add(members),
                "SREM" => Op::Remove(members),
                _ => Op::PfAdd(members),
            };
            write(session, &args[1], None, op, Render::Integer)
        }
        _ => return None,
    };
    Some(step)
}

fn write(session: &Session, key: &Bytes, field: Option<&Bytes>, op: Op, render: Render) -> Step {
    let target = match resolve(&*session.shared.coordinator, key, field.map(|f| &f[..])) {
        Ok(target) => target,
        Err(reply) => return Step::Reply(reply),
    };
    let update = Update {
        key: target.key.clone(),
        op,
        ts_us: None,
        id: None,
    };
    if let Err(e) = validate(&target.view, &update) {
        return Step::Reply(match e {
            Error::WrongOp { op: "decr", .. } => {
                Reply::error("ERR a gcounter only grows: negative increments are refused")
            }
            Error::WrongOp { .. } => wrongtype(),
            e => Reply::error(format!("ERR {e}")),
        });
    }
    Step::Write(PendingWrite {
        target,
        update,
        render,
    })
}
