//! The pipeline executor: runs a connection's requests in order, grouping runs of
//! writes and of single-key reads into one coordinator call per view.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use speedlayer_api::{validate, ApplyKind, View};
use speedlayer_core::{Applied, OpError};
use speedlayer_resp::{Reply, Request};

use super::args::{command_name, request_error, wrongtype};
use super::keys::Target;
use super::session::Session;
use super::step::{PendingWrite, Render, Step};
use super::{admin, reads, stream, transaction, write_options, writes};
use crate::metrics::CommandLabels;

/// Pipeline entries (slot, item) that one storage call on `view` serves.
type ViewGroup<T> = (Arc<View>, Vec<(usize, T)>);

/// Takes from `pending` the entries of the first entry's view, in order: one storage call
/// serves them all.
fn take_view_group<T>(
    pending: &mut Vec<(usize, T)>,
    view_of: impl Fn(&T) -> &Arc<View>,
) -> Option<ViewGroup<T>> {
    let view = view_of(&pending.first()?.1).clone();
    let (group, rest) = std::mem::take(pending)
        .into_iter()
        .partition(|(_, item)| Arc::ptr_eq(view_of(item), &view));
    *pending = rest;
    Some((view, group))
}

impl Session {
    /// Runs `requests` in order and appends their replies to `out`, in order.
    pub async fn run_pipeline(&mut self, requests: Vec<Request>, out: &mut BytesMut) {
        if let Some(last) = requests.last() {
            self.last_command = last.args[0].clone();
        }
        for reply in self.execute(requests).await {
            reply.encode(self.protocol, out);
        }
        // CLIENT LIST's idle and cmd are whole seconds: a card a second old is current
        // enough, and busy clients do not contend on the registry for it. Commands that
        // change a card's other fields publish it themselves.
        if self.published.elapsed() >= std::time::Duration::from_secs(1) {
            self.publish();
        }
    }

    /// Runs `requests` in order; their replies, in order (none for those after a QUIT).
    async fn execute(&mut self, requests: Vec<Request>) -> Vec<Reply> {
        let count = requests.len();
        let mut replies: Vec<Option<Reply>> = (0..count).map(|_| None).collect();
        // Runs of writes, and runs of single-key reads, each become one storage call per
        // view. A run ends where the other kind starts, so every read sees exactly the
        // writes sent before it in the pipeline.
        let mut pending: Vec<(usize, PendingWrite)> = Vec::new();
        let mut gets: Vec<(usize, Target)> = Vec::new();
        let mut events: Vec<(usize, stream::PendingEvent)> = Vec::new();
        for (slot, request) in requests.into_iter().enumerate() {
            if self.quit {
                break;
            }
            let name = command_name(&request.args[0]);
            // A command queued by MULTI is counted when EXEC runs it.
            if self.multi.is_none() || matches!(name.as_str(), "EXEC" | "DISCARD" | "MULTI") {
                self.count_command(&name);
            }
            let step = self.plan(&name, request);
            if !matches!(step, Step::Event(_) | Step::Reply(_)) {
                stream::flush(self, &mut events, &mut replies).await;
            }
            match step {
                Step::Reply(reply) => replies[slot] = Some(reply),
                Step::Write(write) => {
                    self.flush_gets(&mut gets, &mut replies).await;
                    pending.push((slot, write));
                }
                Step::Get(target) => {
                    self.flush(&mut pending, &mut replies).await;
                    gets.push((slot, target));
                }
                Step::Data(request) => {
                    self.flush(&mut pending, &mut replies).await;
                    self.flush_gets(&mut gets, &mut replies).await;
                    replies[slot] = Some(reads::execute(self, &name, request).await);
                }
                Step::Event(event) => {
                    self.flush(&mut pending, &mut replies).await;
                    self.flush_gets(&mut gets, &mut replies).await;
                    events.push((slot, event));
                }
                Step::Exec(queued) => {
                    self.flush(&mut pending, &mut replies).await;
                    self.flush_gets(&mut gets, &mut replies).await;
                    // Queued requests hold no EXEC: this recursion is one level deep.
                    let answers = Box::pin(self.execute(queued)).await;
                    replies[slot] = Some(Reply::Array(answers));
                }
            }
        }
        self.flush(&mut pending, &mut replies).await;
        self.flush_gets(&mut gets, &mut replies).await;
        stream::flush(self, &mut events, &mut replies).await;
        replies.into_iter().flatten().collect()
    }

    fn count_command(&self, name: &str) {
        self.shared
            .stats
            .total_commands
            .fetch_add(1, Ordering::Relaxed);
        match self.shared.command_counters.get(name) {
            Some(counter) => {
                counter.inc();
            }
            None => {
                self.shared
                    .metrics
                    .resp_commands
                    .get_or_create(&CommandLabels {
                        command: "unknown".to_string(),
                    })
                    .inc();
            }
        };
    }

    /// Decides what a command needs; answers at once what needs no data.
    fn plan(&mut self, name: &str, request: Request) -> Step {
        if !self.authenticated && !matches!(name, "AUTH" | "HELLO" | "PING" | "QUIT") {
            return Step::Reply(Reply::error("NOAUTH Authentication required."));
        }
        if let Some(next) = self.next_id.take() {
            return match writes::plan(self, name, &request) {
                Some(Step::Write(mut write)) => {
                    write.update.id = Some(next.id);
                    write.update.ts_us = next.ts_us;
                    match validate(&write.target.view, &write.update) {
                        Ok(()) => Step::Write(write),
                        Err(e) => Step::Reply(request_error(&e)),
                    }
                }
                // Refused before anything was applied: the id goes with it.
                Some(refusal @ Step::Reply(_)) => refusal,
                _ => Step::Reply(write_options::not_an_id_taker(name)),
            };
        }
        if let Some(step) = transaction::plan(self, name, &request) {
            return step;
        }
        if name == "XADD" {
            return Step::Event(match stream::parse(&request.args) {
                Ok(event) => event,
                Err(reply) => return Step::Reply(reply),
            });
        }
        if let Some(step) = writes::plan(self, name, &request) {
            return step;
        }
        if let Some(step) = reads::plan(self, name, &request) {
            return step;
        }
        if reads::handles(name) {
            return Step::Data(request);
        }
        Step::Reply(admin::execute(self, name, &request))
    }

    /// Reads the pending GETs (one storage call per view) and fills their replies.
    async fn flush_gets(&self, gets: &mut Vec<(usize, Target)>, replies: &mut [Option<Reply>]) {
        while let Some((view, group)) = take_view_group(gets, |t| &t.view) {
            let (slots, keys): (Vec<usize>, Vec<_>) =
                group.into_iter().map(|(slot, t)| (slot, t.key)).unzip();
            let coordinator = &self.shared.coordinator;
            let consistency = self.options().consistency;
            match coordinator.get_many(&view.name, keys, consistency).await {
                Ok(readings) => {
                    for (slot, reading) in slots.into_iter().zip(readings) {
                        replies[slot] = Some(reads::string_reply(reading));
                    }
                }
                Err(e) => {
                    for slot in slots {
                        replies[slot] = Some(request_error(&e));
                    }
                }
            }
        }
    }

    /// Applies the pending writes (one storage call per view) and fills their replies.
    async fn flush(&self, pending: &mut Vec<(usize, PendingWrite)>, replies: &mut [Option<Reply>]) {
        while let Some((view, group)) = take_view_group(pending, |w| &w.target.view) {
            let mut answers = Vec::with_capacity(group.len());
            let mut updates = Vec::with_capacity(group.len());
            for (slot, write) in group {
                updates.push(write.update);
                answers.push((slot, write.render));
            }
            let coordinator = &self.shared.coordinator;
            match coordinator
                .apply(&view.name, updates, self.options(), ApplyKind::Report)
                .await
            {
                Ok(results) => {
                    for ((slot, render), result) in answers.into_iter().zip(results) {
                        replies[slot] = Some(Self::render(render, result));
                    }
                }
                Err(e) => {
                    for (slot, ..) in answers {
                        replies[slot] = Some(request_error(&e));
                    }
                }
            }
        }
    }

    fn render(render: Render, result: Result<Applied, OpError>) -> Reply {
        match result {
            Ok(applied) => match render {
                Render::Ok => Reply::ok(),
                Render::Integer => Reply::Integer(applied.effect),
            },
            Err(OpError::WrongOp { .. }) => wrongtype(),
            Err(e) => Reply::error(format!("ERR {e}")),
        }
    }
}
