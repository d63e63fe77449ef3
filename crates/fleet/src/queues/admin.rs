//! The `$sys.queues` calls on fleet queues — list, `declare --fleet`,
//! peek, purge, delete — answered from JetStream, and the lookout that
//! finds the fleet queues other hosts declared (every [`DISCOVERY`]).
//!
//! A question to JetStream here never waits longer than [`ASK_LIMIT`]: a
//! list still answers, with the queues JetStream did not describe marked
//! unavailable, and the other calls fail with `storage_failed` naming why.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use bytes::Bytes;
use futures_util::StreamExt;
use switchboard_daemon::host::RemoteAdmin;
use switchboard_proto::sys::{self, FleetQueueInfo, PeekedMessage, QueueInfo, QueueOptions};
use switchboard_proto::ErrorCode;

use super::{stream_of, FleetQueues};
use crate::bridge::lock;
use crate::queue_plan::{options_of, Plan, CONSUMER};
use crate::wire;

/// How long one admin call may wait for JetStream.
const ASK_LIMIT: Duration = Duration::from_secs(3);
/// How often this host looks for fleet queues declared elsewhere.
pub const DISCOVERY: Duration = Duration::from_secs(2);
/// Sequences a peek may look at beyond the messages it asked for (those
/// acked or purged in between leave gaps).
const PEEK_GAPS: u64 = 1_000;

type Answer<T> = Result<T, (ErrorCode, String)>;

fn failed(what: &str, err: &dyn std::fmt::Display) -> (ErrorCode, String) {
    (ErrorCode::StorageFailed, format!("JetStream did not {what}: {err}"))
}

/// Runs `work` within [`ASK_LIMIT`].
async fn ask<T, E: std::fmt::Display>(
    what: &str,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Answer<T> {
    match tokio::time::timeout(ASK_LIMIT, work).await {
        Ok(done) => done.map_err(|err| failed(what, &err)),
        Err(_) => Err(failed(what, &format!("no answer within {ASK_LIMIT:?}"))),
    }
}

impl FleetQueues {
    pub(super) async fn admin(self: &Arc<Self>, admin: RemoteAdmin) -> Answer<Bytes> {
        let encoded = |value: Vec<u8>| Bytes::from(value);
        match admin {
            RemoteAdmin::List { local } => Ok(encoded(sys::encode(&self.list(local).await))),
            RemoteAdmin::Declare { queue, options } => {
                self.declare(queue, &options).await.map(|()| Bytes::new())
            }
            RemoteAdmin::Peek { queue, count } => {
                self.peek(&queue, count).await.map(|found| encoded(sys::encode(&found)))
            }
            RemoteAdmin::Purge { queue } => {
                self.purge(&queue).await.map(|removed| encoded(sys::encode(&removed)))
            }
            RemoteAdmin::Delete { queue } => self.delete(&queue).await.map(|()| Bytes::new()),
        }
    }

    /// This host's queues and the fleet's, sorted by name.
    async fn list(&self, mut queues: Vec<QueueInfo>) -> Vec<QueueInfo> {
        let kept: Vec<String> = lock(&self.kept).iter().cloned().collect();
        let described = futures_util::future::join_all(kept.iter().map(|name| self.describe(name)));
        queues.extend(described.await);
        queues.sort_by(|a, b| a.queue.cmp(&b.queue));
        queues
    }

    /// A fleet queue as `queue ls` shows it: its stream's and consumer's
    /// state, and this host's consumers of it.
    async fn describe(&self, name: &str) -> QueueInfo {
        let (stream_name, _) = stream_of(name);
        let consumers = lock(&self.consumers).values().filter(|c| c.queue == name).count();
        let mut info = QueueInfo {
            queue: name.to_owned(),
            options: QueueOptions::default(),
            depth: 0,
            in_flight: 0,
            bytes: 0,
            consumers: u32::try_from(consumers).unwrap_or(u32::MAX),
            put_total: 0,
            acked_total: 0,
            dead_lettered_total: 0,
            dropped_total: 0,
            put_rate: 0.0,
            ack_rate: 0.0,
            fleet: None,
        };
        let mut fleet =
            FleetQueueInfo { stream: stream_name.clone(), replicas: 0, unavailable: String::new() };
        let asked = ask("describe the queue", async {
            let stream = self.js.get_stream(&stream_name).await.map_err(|e| e.to_string())?;
            let consumer = stream.consumer_info(CONSUMER).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((stream.cached_info().clone(), consumer))
        });
        match asked.await {
            Ok((stream, consumer)) => {
                let in_flight = u64::try_from(consumer.num_ack_pending).unwrap_or(u64::MAX);
                info.in_flight = in_flight;
                info.depth = stream.state.messages.saturating_sub(in_flight);
                info.bytes = stream.state.bytes;
                info.put_total = stream.state.last_sequence;
                info.options =
                    options_of(&stream.config, consumer.config.ack_wait, consumer.config.max_deliver);
                fleet.replicas = u32::try_from(stream.config.num_replicas).unwrap_or(u32::MAX);
            }
            Err((_, why)) => fleet.unavailable = why,
        }
        info.fleet = Some(fleet);
        info
    }

    /// `queue declare --fleet`: creates the queue's stream (or changes its
    /// settings) and keeps it from now on; with `max_attempts`, its
    /// `.dlq` too.
    async fn declare(self: &Arc<Self>, name: String, options: &QueueOptions) -> Answer<()> {
        if self.configured.contains(&name) {
            let why =
                format!("{name} is a fleet queue of the config ([fleet] queues): its settings are set there");
            return Err((ErrorCode::BadRequest, why));
        }
        let plan = Plan::of_options(options, self.config_plan.replicas)
            .map_err(|why| (ErrorCode::BadRequest, format!("{name}: {why}")))?;
        if plan.max_attempts > 0 {
            let dead = format!("{name}.dlq");
            self.set_up(&dead, &plan.for_dead_letters()).await?;
        }
        self.set_up(&name, &plan).await?;
        if plan.max_attempts > 0 {
            self.watch_dead_letters(&name);
        }
        tracing::info!(queue = name, replicas = plan.replicas, "fleet: queue declared on JetStream");
        Ok(())
    }

    /// Creates or updates `name`'s stream and consumer, and keeps it.
    async fn set_up(&self, name: &str, plan: &Plan) -> Answer<()> {
        let (stream_name, subject) = stream_of(name);
        let consumer = ask("create the queue", async {
            self.js
                .create_or_update_stream(plan.stream(&stream_name, &subject))
                .await
                .map_err(|e| e.to_string())?;
            let stream = self.js.get_stream(&stream_name).await.map_err(|e| e.to_string())?;
            stream.create_consumer(plan.consumer()).await.map_err(|e| e.to_string())
        })
        .await?;
        self.keep(name, consumer);
        Ok(())
    }

    fn keep(&self, name: &str, consumer: async_nats::jetstream::consumer::Consumer<pull::Config>) {
        lock(&self.pulls).insert(name.to_owned(), consumer);
        lock(&self.kept).insert(name.to_owned());
        self.router.keep_remote_queue(name, true);
    }

    /// Up to `count` messages not yet acked (in flight ones too), oldest
    /// first, without taking them; all within [`ASK_LIMIT`].
    async fn peek(&self, name: &str, count: u32) -> Answer<Vec<PeekedMessage>> {
        let (stream_name, _) = stream_of(name);
        let stream = ask("find the queue", self.js.get_stream(&stream_name)).await?;
        let state = &stream.cached_info().state;
        let (first, last) = (state.first_sequence, state.last_sequence);
        let read = async {
            let mut found = Vec::new();
            let end = last.min(first + u64::from(count) + PEEK_GAPS);
            for sequence in first..=end {
                if found.len() == count as usize {
                    break;
                }
                // A sequence acked meanwhile is gone: skipped.
                let Ok(message) = stream.get_raw_message(sequence).await else { continue };
                found.push(PeekedMessage {
                    id: message.sequence,
                    priority: 0,
                    attempts: 0,
                    put_at_ms: u64::try_from(message.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
                    expires_at_ms: 0,
                    headers: wire::user_headers(Some(&message.headers)),
                    payload: message.payload.to_vec(),
                });
            }
            Ok::<_, String>(found)
        };
        ask("read the queue's messages", read).await
    }

    /// Removes every message not yet acked; how many.
    async fn purge(&self, name: &str) -> Answer<u64> {
        let (stream_name, _) = stream_of(name);
        let stream = ask("find the queue", self.js.get_stream(&stream_name)).await?;
        let purged = ask("purge the queue", async { stream.purge().await }).await?;
        tracing::info!(queue = name, removed = purged.purged, "fleet: queue purged");
        Ok(purged.purged)
    }

    /// Deletes an empty fleet queue nobody here consumes from; other hosts
    /// forget it when they next look.
    async fn delete(&self, name: &str) -> Answer<()> {
        if self.configured.contains(name) {
            let why = format!("{name} is a fleet queue of the config ([fleet] queues): remove it there");
            return Err((ErrorCode::BadRequest, why));
        }
        let (stream_name, _) = stream_of(name);
        let stream = ask("find the queue", self.js.get_stream(&stream_name)).await?;
        let held = stream.cached_info().state.messages;
        if held > 0 {
            return Err((
                ErrorCode::BadRequest,
                format!("queue {name} holds {held} messages; purge it before deleting it"),
            ));
        }
        let consumers = lock(&self.consumers).values().filter(|c| c.queue == name).count();
        if consumers > 0 {
            return Err((ErrorCode::BadRequest, format!("queue {name} has {consumers} consumers")));
        }
        ask("delete the queue", self.js.delete_stream(&stream_name)).await?;
        self.forget(name);
        Ok(())
    }

    fn forget(&self, name: &str) {
        lock(&self.pulls).remove(name);
        lock(&self.kept).remove(name);
        self.router.keep_remote_queue(name, false);
    }

    /// Keeps the fleet queues found on JetStream (declared on other hosts)
    /// and forgets those deleted there, every [`DISCOVERY`].
    pub(super) async fn discover(self: Arc<Self>) {
        let mut tick = tokio::time::interval(DISCOVERY);
        loop {
            tick.tick().await;
            let Ok(found) = ask("list the streams", self.fleet_streams()).await else { continue };
            let kept: Vec<String> = lock(&self.kept).iter().cloned().collect();
            for name in kept.iter().filter(|name| !self.configured.contains(*name) && !found.contains(*name))
            {
                tracing::info!(queue = name, "fleet: queue deleted on the fleet");
                self.forget(name);
            }
            for name in found.iter().filter(|name| !kept.contains(name)) {
                let Ok(stream) = ask("find the queue", self.js.get_stream(stream_of(name).0)).await else {
                    continue;
                };
                let Ok(consumer) =
                    ask("find its consumer", stream.get_consumer::<pull::Config>(CONSUMER)).await
                else {
                    continue;
                };
                let dead_letters = consumer.cached_info().config.max_deliver > 0;
                self.keep(name, consumer);
                tracing::info!(queue = name, "fleet: queue found on JetStream");
                if dead_letters {
                    self.watch_dead_letters(name);
                }
            }
        }
    }

    /// The queues the fleet keeps on JetStream: every stream named as
    /// [`stream_of`] names the queue its subject carries.
    async fn fleet_streams(&self) -> Result<Vec<String>, String> {
        let mut streams = self.js.streams();
        let mut names = Vec::new();
        while let Some(info) = streams.next().await {
            let info = info.map_err(|e| e.to_string())?;
            let queue = info.config.subjects.first().and_then(|subject| subject.strip_prefix("sbq."));
            if let Some(queue) = queue.filter(|queue| stream_of(queue).0 == info.config.name) {
                names.push(queue.to_owned());
            }
        }
        Ok(names)
    }
}
