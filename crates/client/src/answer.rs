//! How a request's answer leaves: to the connection it came in on (the
//! daemon's link or a direct channel), after its hop record when the caller
//! asked for one, counted when it came over a direct channel (the daemon
//! never sees those; `report` tells it). A request whose handler panics or
//! is dropped is still answered.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto::stats::{MethodCounts, DAEMON_REPORT_CALLS, DIRECT_REPORT_INTERVAL_MS};
use switchboard_proto::{sys, ErrorCode, Frame};
use switchboard_transport::Outbox;

use crate::calls::CallOptions;
use crate::connection::{lock, Shared};
use crate::service::{HandlerResult, ServiceState};
use crate::Bus;

/// Where the answers to one connection's requests go: the daemon's link,
/// or a direct channel, which is closed once its last answer is queued.
pub(crate) struct Replies {
    pub outbox: Arc<Outbox>,
    pub max_frame: u32,
    /// A direct channel: closed once its last answer is queued, and its
    /// calls counted here for the daemon.
    pub direct: bool,
}

impl Replies {
    pub fn new(outbox: Arc<Outbox>, max_frame: u32) -> Self {
        Self { outbox, max_frame, direct: false }
    }

    /// A direct channel's: closes `outbox` when the last holder (a pending
    /// answer) drops it.
    pub fn direct(outbox: Arc<Outbox>, max_frame: u32) -> Self {
        Self { outbox, max_frame, direct: true }
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        if self.direct {
            self.outbox.close();
        }
    }
}

/// Every [`DIRECT_REPORT_INTERVAL_MS`], tells the daemon what this bus's
/// services served over direct channels since the last report; ends with
/// the bus.
pub(crate) async fn report_served(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(DIRECT_REPORT_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        if shared.closed.is_cancelled() {
            return;
        }
        let services = lock(&shared.services).clone();
        let bus = Bus::from_shared(shared);
        let target = format!("{}.{DAEMON_REPORT_CALLS}", sys::DAEMON_SERVICE);
        for service in services {
            let report = service.take_served();
            if report.methods.is_empty() {
                continue;
            }
            let payload = Bytes::from(sys::encode(&report));
            if let Err(err) = bus.call_with(target.as_str(), payload, CallOptions::default()).await {
                tracing::debug!("could not report direct calls to the daemon: {err}");
            }
        }
    }
}

/// Where a request's answer goes: the connection it came in on; with the
/// hop to report first, when the caller asked for it.
pub(crate) struct Answer {
    pub replies: Arc<Replies>,
    pub id: u32,
    pub hops: Option<Box<crate::hops::Reporting>>,
    /// Over a direct channel: where the call is counted, and since when.
    pub served: Option<(Arc<Mutex<MethodCounts>>, Instant)>,
}

impl Answer {
    pub fn error(&mut self, code: ErrorCode, message: String) {
        if self.id != 0 {
            self.count(Some(code));
            self.report_hops(code.name());
            let _ = self.replies.outbox.push(&Frame::Error { id: self.id, code, message });
        }
    }

    #[inline]
    fn count(&mut self, error: Option<ErrorCode>) {
        if let Some((counts, since)) = self.served.take() {
            let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
            lock(&counts).record(error.map(ErrorCode::name), us);
        }
    }

    #[inline]
    fn report_hops(&mut self, outcome: &str) {
        if self.hops.is_some() {
            self.send_hops(outcome);
        }
    }

    #[cold]
    fn send_hops(&mut self, outcome: &str) {
        if let Some(reporting) = self.hops.take() {
            let _ = self.replies.outbox.push(&reporting.frame(self.id, outcome));
        }
    }

    pub fn result(&mut self, result: HandlerResult) {
        if self.id == 0 {
            return;
        }
        let outbox = &self.replies.outbox;
        let result = result.map(|payload| crate::blobs::outgoing(outbox.takes_blobs(), payload));
        match result {
            Ok(payload)
                if payload.len() + 5 > self.replies.max_frame as usize
                    && !crate::blobs::passes_as_blob(outbox, &payload) =>
            {
                let message = format!(
                    "reply of {} bytes does not fit the maximum frame of {} bytes",
                    payload.len(),
                    self.replies.max_frame
                );
                self.error(ErrorCode::PayloadTooLarge, message);
            }
            Ok(payload) => {
                self.count(None);
                self.report_hops("ok");
                let _ = self.replies.outbox.push(&Frame::Reply { id: self.id, payload });
            }
            Err(reject) => self.error(reject.code, reject.message),
        }
    }
}

/// Holds a request's admission; if the handler panics or is cancelled
/// before answering, the caller still gets an answer.
pub(crate) struct Admitted {
    pub state: Arc<ServiceState>,
    pub answer: Option<Answer>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.state.release_admission();
        if let Some(mut answer) = self.answer.take() {
            answer.error(ErrorCode::Rejected, "the handler panicked or was cancelled".into());
        }
    }
}
