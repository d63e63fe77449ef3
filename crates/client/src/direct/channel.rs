//! The caller's end of a direct channel: connecting to the instance the
//! daemon named, checking it is that instance, and calls on it.
//!
//! Calls and the channel's closing are ordered under one lock: a call is
//! either on the wire before our `Goodbye` (and the instance answers it) or
//! not sent at all (and goes through the daemon instead). None is lost in
//! between.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto::direct::{DirectGrant, TICKET_PREFIX};
use switchboard_proto::{ErrorCode, Frame, Hello, InstanceId, DEFAULT_MAX_FRAME, PROTOCOL_VERSION};
use switchboard_transport::{run_writer, FrameReader, Outbox, Stream};
use tokio::sync::{oneshot, Semaphore};

use crate::connection::{lock, WireError};
use crate::CallError;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes queued on a channel before writers are told it is congested.
const CONGESTED_AT: usize = 4 * 1024 * 1024;

/// What became of a call offered to a channel.
pub(crate) enum Sent {
    Answered(Result<Bytes, CallError>),
    /// The channel is closing: nothing went out, route the call instead.
    NotSent,
}

/// Calls waiting for answers, and whether new ones may still be sent.
struct Calls {
    waiting: HashMap<u32, oneshot::Sender<Result<Bytes, WireError>>>,
    closing: bool,
}

/// A live direct channel to one instance.
pub(crate) struct Channel {
    pub grant: u64,
    pub instance: InstanceId,
    outbox: Arc<Outbox>,
    calls: Mutex<Calls>,
    inflight: Arc<Semaphore>,
    max_frame: u32,
    /// Set once no new call may be sent (closing or closed); read without
    /// the lock on every call, written under it.
    unusable: AtomicBool,
}

/// Why a channel could not be opened (the caller routes instead).
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: std::io::Error },
    #[error("the socket's peer is pid {found:?} uid {uid:?}, not instance pid {pid} uid {expected_uid}")]
    Impostor { found: Option<u32>, uid: Option<u32>, pid: u32, expected_uid: u32 },
    #[error("the instance refused the channel: {0}")]
    Refused(String),
}

impl Channel {
    /// Connects to the granted instance, checks its peer credentials and
    /// presents the ticket.
    pub async fn open(grant: &DirectGrant) -> Result<Arc<Self>, OpenError> {
        let address = grant.address.clone();
        let stream = Stream::connect_abstract(&address)
            .await
            .map_err(|source| OpenError::Connect { address: address.clone(), source })?;
        let cred = stream.peer_cred();
        if cred.and_then(|c| c.pid) != Some(grant.pid) || cred.map(|c| c.uid) != Some(grant.uid) {
            return Err(OpenError::Impostor {
                found: cred.and_then(|c| c.pid),
                uid: cred.map(|c| c.uid),
                pid: grant.pid,
                expected_uid: grant.uid,
            });
        }
        let (read, write) = stream.into_split().map_err(|source| OpenError::Connect { address, source })?;
        let mut reader = FrameReader::new(read, DEFAULT_MAX_FRAME);
        let outbox = Arc::new(Outbox::new(CONGESTED_AT));
        {
            let outbox = outbox.clone();
            tokio::spawn(async move { run_writer(&outbox, write).await });
        }
        let hello = Hello {
            version: PROTOCOL_VERSION,
            features: 0,
            client_name: String::new(),
            credential: format!("{TICKET_PREFIX}{}", grant.ticket),
        };
        let _ = outbox.push(&Frame::Hello(hello));
        let refused = |why: String| {
            outbox.close();
            OpenError::Refused(why)
        };
        let welcome = match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next()).await {
            Ok(Ok(Some(Frame::Welcome(welcome)))) => welcome,
            Ok(Ok(Some(Frame::Goodbye { code, message }))) => {
                return Err(refused(format!("{}: {message}", code.name())))
            }
            Ok(Ok(other)) => return Err(refused(format!("unexpected answer {other:?}"))),
            Ok(Err(err)) => return Err(refused(err.to_string())),
            Err(_) => return Err(refused(format!("no answer within {HANDSHAKE_TIMEOUT:?}"))),
        };
        reader.set_max_frame(welcome.max_frame);
        let channel = Arc::new(Self {
            grant: grant.grant,
            instance: grant.instance,
            outbox,
            calls: Mutex::new(Calls { waiting: HashMap::new(), closing: false }),
            inflight: Arc::new(Semaphore::new(welcome.max_inflight.max(1) as usize)),
            max_frame: welcome.max_frame,
            unusable: AtomicBool::new(false),
        });
        tokio::spawn(channel.clone().read(reader));
        Ok(channel)
    }

    /// Whether new calls may still use this channel.
    pub fn usable(&self) -> bool {
        !self.unusable.load(Ordering::Acquire)
    }

    /// Sends no more calls: tells the instance so (it answers what it got,
    /// then closes).
    pub fn close(&self, why: &str) {
        let mut calls = lock(&self.calls);
        if !calls.closing {
            calls.closing = true;
            let _ =
                self.outbox.push(&Frame::Goodbye { code: ErrorCode::ShuttingDown, message: why.to_owned() });
        }
    }

    /// Sends the call `frame(id)` builds and waits for its answer until `deadline`.
    pub async fn call(
        &self,
        id: u32,
        size: usize,
        deadline: Instant,
        timeout: Duration,
        frame: Frame,
    ) -> Sent {
        if size > self.max_frame as usize {
            return Sent::NotSent; // the daemon's path says why, with its own limit
        }
        let permit = match self.inflight.try_acquire() {
            Ok(permit) => permit,
            Err(_) => match tokio::time::timeout_at(deadline.into(), self.inflight.acquire()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Sent::NotSent,
                Err(_) => return Sent::Answered(Err(CallError::Timeout(timeout))),
            },
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut calls = lock(&self.calls);
            if calls.closing || self.outbox.push(&frame).is_err() {
                return Sent::NotSent;
            }
            calls.waiting.insert(id, tx);
        }
        let answer = tokio::time::timeout_at(deadline.into(), rx).await;
        drop(permit);
        Sent::Answered(match answer {
            Ok(Ok(Ok(payload))) => Ok(payload),
            Ok(Ok(Err((code, message)))) => Err(CallError::from_wire(code, message, timeout)),
            Ok(Err(_)) => Err(CallError::InstanceGone(format!(
                "the direct channel to instance {} closed before the reply",
                self.instance
            ))),
            Err(_) => {
                lock(&self.calls).waiting.remove(&id);
                Err(CallError::Timeout(timeout))
            }
        })
    }

    /// Reads answers until the instance closes the channel; then fails
    /// whatever is still waiting (their senders drop: `InstanceGone`).
    async fn read(self: Arc<Self>, mut reader: FrameReader) {
        loop {
            let answer = match reader.next().await {
                Ok(Some(Frame::Reply { id, payload })) => (id, Ok(payload)),
                Ok(Some(Frame::Error { id, code, message })) => (id, Err((code, message))),
                Ok(Some(Frame::Goodbye { message, .. })) => {
                    self.close(&format!("the instance is closing the channel: {message}"));
                    continue;
                }
                Ok(Some(other)) => {
                    tracing::warn!(
                        grant = self.grant,
                        "unexpected {} on a direct channel",
                        other.kind_name()
                    );
                    break;
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(grant = self.grant, "direct channel read failed: {err}");
                    break;
                }
            };
            let (id, result) = answer;
            if let Some(waiter) = lock(&self.calls).waiting.remove(&id) {
                let _ = waiter.send(result);
            }
        }
        let mut calls = lock(&self.calls);
        calls.closing = true;
        self.unusable.store(true, Ordering::Release);
        calls.waiting.clear();
        self.outbox.close();
    }
}
