//! Topics across the fleet. An exported pattern: every publication here
//! that matches it (retained values included, so the others learn them) is
//! published to NATS as `sb.pub.HOST.TOPIC`, unless it came from the fleet
//! itself — so nothing is echoed back. An imported pattern: every other
//! host's publication that matches it is published here, as the principal
//! its host vouched for (this host's policy decides whether it may), with
//! an `sb-origin` header naming that host, and retained here when it was
//! retained there — so a late subscriber here gets the last value.
//!
//! A retained value also goes to `sb.ret.HOST.TOPIC`, which the JetStream
//! stream [`subjects::RETAINED_STREAM`] keeps (the last per subject): an
//! importer that starts later — a host that joined or restarted since —
//! first takes the values kept there, then the live publications.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use switchboard::{Bus, Item, PublishOptions};
use switchboard_proto::{Topic, TopicPattern};

use crate::bridge::Bridge;
use crate::{subjects, wire};

/// The header an imported publication carries: the host it came from.
pub const ORIGIN: &str = "sb-origin";
/// Publications an exporter may fall behind by before it says it lagged.
const CAPACITY: usize = 65_536;

/// Sends this host's publications on `pattern` to the fleet, until aborted.
pub async fn export(bridge: Arc<Bridge>, bus: Bus, pattern: TopicPattern) {
    let mut subscription = match bus.subscribe_with(pattern.clone(), CAPACITY).await {
        Ok(subscription) => subscription,
        Err(err) => return tracing::error!(%pattern, "fleet: cannot export topics: {err}"),
    };
    while let Some(item) = subscription.next().await {
        let message = match item {
            Item::Message(message) => message,
            Item::Lagged(missed) => {
                tracing::warn!(%pattern, missed, "fleet: publications missed on their way to the fleet");
                continue;
            }
        };
        if message.headers.get(ORIGIN).is_some() {
            continue;
        }
        let subject = subjects::publication(&bridge.joining.host, message.topic.as_str());
        let principal = message.publisher.principal.as_str();
        // A live message does not say whether it was retained; the router
        // still holds it as the topic's value if it was.
        let retained = message.retained || bridge.router.retains(&message.topic, &message.payload);
        let headers = wire::publication(principal, retained, &message.headers);
        if retained {
            let kept = subjects::retained(&bridge.joining.host, message.topic.as_str());
            let sent = bridge.nats.publish_with_headers(kept, headers.clone(), message.payload.clone()).await;
            if let Err(err) = sent {
                tracing::warn!(%pattern, "fleet: cannot keep a retained value on JetStream: {err}");
            }
        }
        if let Err(err) = bridge.nats.publish_with_headers(subject, headers, message.payload).await {
            tracing::warn!(%pattern, "fleet: cannot export a publication: {err}");
        }
    }
}

/// Creates (or finds) the stream of retained values, trying again every 2 s
/// while JetStream cannot (starting, not enabled, or this host may not use
/// its API: said once); then keeps there the values this host retained
/// meanwhile.
pub async fn keep_retained_values(bridge: Arc<Bridge>, bus: Bus) {
    let config = jetstream::stream::Config {
        name: subjects::RETAINED_STREAM.to_owned(),
        subjects: vec![subjects::RETAINED_SUBJECTS.to_owned()],
        max_messages_per_subject: 1,
        num_replicas: bridge.joining.queue_replicas,
        ..Default::default()
    };
    let mut js = jetstream::new(bridge.nats.clone());
    js.set_timeout(Duration::from_secs(2));
    for attempt in 0.. {
        match js.get_or_create_stream(config.clone()).await {
            Ok(_) => break,
            Err(err) if attempt == 0 => {
                tracing::warn!("fleet: retained values not kept on JetStream yet (hosts that join later miss them): {err}");
            }
            Err(err) => tracing::debug!("fleet: retained values still not kept on JetStream: {err}"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tracing::info!("fleet: retained values kept on JetStream");
    for pattern in &bridge.joining.export_topics {
        let Ok(mut subscription) = bus.subscribe_with(pattern.clone(), CAPACITY).await else { continue };
        // A new subscription gets the retained values first, at once.
        while let Ok(Some(Item::Message(message))) =
            tokio::time::timeout(Duration::from_millis(200), subscription.next()).await
        {
            if message.retained && message.headers.get(ORIGIN).is_none() {
                let kept = subjects::retained(&bridge.joining.host, message.topic.as_str());
                let headers = wire::publication(message.publisher.principal.as_str(), true, &message.headers);
                let _ = bridge.nats.publish_with_headers(kept, headers, message.payload).await;
            }
        }
    }
}

/// Publishes here what other hosts publish on `pattern`, until aborted:
/// first the retained values JetStream keeps, then the live publications
/// (subscribed before, so none falls in between).
pub async fn import(bridge: Arc<Bridge>, pattern: TopicPattern) {
    let mut publications = match bridge.nats.subscribe(subjects::publications(pattern.as_str())).await {
        Ok(publications) => publications,
        Err(err) => return tracing::error!(%pattern, "fleet: cannot import topics: {err}"),
    };
    catch_up(&bridge, &pattern).await;
    while let Some(message) = publications.next().await {
        publish_here(&bridge, &pattern, &message.subject, message.headers.as_ref(), message.payload).await;
    }
}

/// The retained values on `pattern` that other hosts keep on JetStream.
async fn catch_up(bridge: &Bridge, pattern: &TopicPattern) {
    let Ok(stream) = jetstream::new(bridge.nats.clone()).get_stream(subjects::RETAINED_STREAM).await else {
        return;
    };
    let mut kept = match stream.info_with_subjects(subjects::retained_values(pattern.as_str())).await {
        Ok(kept) => kept,
        Err(err) => return tracing::warn!(%pattern, "fleet: cannot read the retained values: {err}"),
    };
    let mut subjects = Vec::new();
    while let Some(Ok((subject, _))) = kept.next().await {
        subjects.push(subject);
    }
    for subject in subjects {
        if let Ok(value) = stream.get_last_raw_message_by_subject(&subject).await {
            publish_here(bridge, pattern, &subject, Some(&value.headers), value.payload).await;
        }
    }
}

/// Publishes another host's publication (live or kept) here, as the
/// principal that host vouched for.
async fn publish_here(
    bridge: &Bridge,
    pattern: &TopicPattern,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: Bytes,
) {
    let Some(from) = subjects::sender(subject) else { return };
    if from == bridge.joining.host {
        return;
    }
    let Some(topic) = subjects::published_topic(subject).and_then(|t| Topic::parse(t).ok()) else { return };
    let Ok(arrived) = wire::arrived_publication(headers) else { return };
    let headers = arrived.headers.into_iter().chain([(ORIGIN.to_owned(), from.to_owned())]);
    let Ok(headers) = switchboard::Headers::from_pairs(headers) else { return };
    let principal = switchboard_daemon::host::Principal::remote(&arrived.principal, from);
    let bus = match bridge.caller(principal).await {
        Ok(bus) => bus,
        Err((_, why)) => return tracing::warn!(%pattern, "fleet: cannot publish an imported message: {why}"),
    };
    let options = PublishOptions { retain: arrived.retain, headers };
    if let Err(err) = bus.publish_with(topic, payload, options).await {
        tracing::warn!(%pattern, from, "fleet: an imported publication was refused: {err}");
    }
}
