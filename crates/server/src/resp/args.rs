//! Argument helpers with Redis's own error texts.

use bytes::Bytes;
use speedlayer_resp::Reply;

/// Redis's reply to a command with the wrong number of arguments.
pub fn arity(name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

/// Redis's reply to a non-integer argument.
pub fn not_integer() -> Reply {
    Reply::error("ERR value is not an integer or out of range")
}

/// Redis's reply to a write on a key of another type.
pub fn wrongtype() -> Reply {
    Reply::error("WRONGTYPE Operation against a key holding the wrong kind of value")
}

/// A coordinator's refusal as a Redis error reply: Redis's own `WRONGTYPE` for an op of
/// another type, `-UNAVAILABLE …` when too few replicas answered (the client may retry;
/// with ids nothing counts twice), `ERR …` otherwise.
pub fn request_error(e: &speedlayer_api::Error) -> Reply {
    use speedlayer_api::Error;
    match e {
        Error::WrongOp { .. } => wrongtype(),
        e @ (Error::Unavailable { .. } | Error::ClockSkew { .. }) => {
            Reply::error(format!("UNAVAILABLE {e}"))
        }
        e if e.is_client_error() => Reply::error(format!("ERR {e}")),
        e => {
            tracing::error!(error = %e, "RESP command failed in the node");
            Reply::error(format!("ERR {e}"))
        }
    }
}

/// Parses a decimal i64 argument.
pub fn integer(arg: &Bytes) -> Result<i64, Reply> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(not_integer)
}

/// The command name, upper-cased (ASCII), for dispatch.
pub fn command_name(arg: &Bytes) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}
