//! The open-file budget: every client connection is a file descriptor, and so are the
//! storage engine's journal and table files and the peers' connections. Past the process
//! limit, `accept` fails and, worse, the storage engine cannot open a table file (a write
//! answered `Too many open files` as a storage error). So at start the node raises its
//! soft limit to the hard limit, keeps [`RESERVED_FILES`] for storage and peers, and lets
//! each client port (HTTP, Redis) hold at most half of the rest: a client past that is
//! refused at the door (Redis' `max number of clients reached`, HTTP 503), never by the
//! storage engine.

/// Descriptors kept for the storage engine (journals, table files), the cluster's
/// connections and the process itself.
pub const RESERVED_FILES: u64 = 512;

/// Raises the open-file limit as far as allowed and returns the number of clients each
/// client port may hold: `wanted` (`--max-clients`), or less when the limit cannot hold
/// that many (with a warning saying how to get more).
pub fn client_budget(wanted: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-file limit; keeping --max-clients");
            return wanted;
        }
    };
    let budget = usize::try_from(limit.saturating_sub(RESERVED_FILES) / 2).unwrap_or(usize::MAX);
    if budget >= wanted {
        return wanted;
    }
    let lowered = budget.max(1);
    tracing::warn!(
        open_file_limit = limit,
        max_clients = wanted,
        lowered_to = lowered,
        "the open-file limit cannot hold --max-clients connections on each client port \
         beside the storage engine's files: each port now takes at most {lowered}; raise \
         the limit (ulimit -n, LimitNOFILE=) for more"
    );
    lowered
}
