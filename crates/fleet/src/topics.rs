//! Topics across the fleet. An exported pattern: every publication here
//! that matches it (retained values included, so the others learn them) is
//! published to NATS as `sb.pub.HOST.TOPIC`, unless it came from the fleet
//! itself — so nothing is echoed back. An imported pattern: every other
//! host's publication that matches it is published here, as the principal
//! its host vouched for (this host's policy decides whether it may), with
//! an `sb-origin` header naming that host, and retained here when it was
//! retained there — so a late subscriber here gets the last value.

use std::sync::Arc;

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
        if let Err(err) = bridge.nats.publish_with_headers(subject, headers, message.payload).await {
            tracing::warn!(%pattern, "fleet: cannot export a publication: {err}");
        }
    }
}

/// Publishes here what other hosts publish on `pattern`, until aborted.
pub async fn import(bridge: Arc<Bridge>, pattern: TopicPattern) {
    let mut publications = match bridge.nats.subscribe(subjects::publications(pattern.as_str())).await {
        Ok(publications) => publications,
        Err(err) => return tracing::error!(%pattern, "fleet: cannot import topics: {err}"),
    };
    while let Some(message) = publications.next().await {
        let Some(from) = subjects::sender(&message.subject) else { continue };
        if from == bridge.joining.host {
            continue;
        }
        let Some(topic) = subjects::published_topic(&message.subject).and_then(|t| Topic::parse(t).ok())
        else {
            continue;
        };
        let Ok(arrived) = wire::arrived_publication(message.headers.as_ref()) else { continue };
        let headers = arrived.headers.into_iter().chain([(ORIGIN.to_owned(), from.to_owned())]);
        let Ok(headers) = switchboard::Headers::from_pairs(headers) else { continue };
        let principal = switchboard_daemon::host::Principal::remote(&arrived.principal, from);
        let bus = match bridge.caller(principal).await {
            Ok(bus) => bus,
            Err((_, why)) => {
                tracing::warn!(%pattern, "fleet: cannot publish an imported message: {why}");
                continue;
            }
        };
        let options = PublishOptions { retain: arrived.retain, headers };
        if let Err(err) = bus.publish_with(topic, message.payload, options).await {
            tracing::warn!(%pattern, from, "fleet: an imported publication was refused: {err}");
        }
    }
}
