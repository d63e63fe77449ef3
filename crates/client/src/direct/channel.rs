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
use switchboard_proto::{
    Call, ErrorCode, Frame, Hello, InstanceId, DEFAULT_MAX_FRAME, FEATURE_BLOBS, PROTOCOL_VERSION,
};
use switchboard_transport::{run_writer, Blob, FrameReader, Outbox, Stream};
use tokio::sync::{oneshot, Semaphore};

use crate::connection::{lock, WireError};
use crate::hops::HopSinks;
use crate::CallError;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes queued on a channel before writers are told it is congested.
const CONGESTED_AT: usize = 4 * 1024 * 1024;

/// What became of a call offered to a channel.
pub(crate) enum Sent {
    Answered(Result<Bytes, CallError>),
    /// Nothing went out (the channel is closing, or the call is too large
    /// for it): route the call instead.
    NotSent(Call),
}

/// Calls waiting for answers, and whether new ones may still be sent.
struct Calls {
    waiting: HashMap<u32, Waiting>,
    closing: bool,
    /// Whether a sweeper task is answering expired calls.
    sweeping: bool,
}

/// A call sent on the channel, until its answer or its deadline.
struct Waiting {
    deadline: Instant,
    answer: oneshot::Sender<Result<Bytes, WireError>>,
}

/// How often expired calls are answered with `Timeout`. One sweeper per
/// channel, only while calls wait, instead of a timer per call: at a million
/// calls a second, arming and clearing a timer each cost ≈ 10 % of the
/// throughput; a 1 ms sweep cost sequential calls ≈ 0.5 µs of p50. A
/// timeout comes back at most this late, never early.
const SWEEP_EVERY: Duration = Duration::from_millis(10);

/// A live direct channel to one instance.
pub(crate) struct Channel {
    pub grant: u64,
    pub instance: InstanceId,
    outbox: Arc<Outbox>,
    calls: Mutex<Calls>,
    inflight: Arc<Semaphore>,
    max_frame: u32,
    /// The largest blob the instance may reply with (its principal's limit).
    reply_max_blob: u64,
    /// Set once no new call may be sent (closing or closed); read without
    /// the lock on every call, written under it.
    unusable: AtomicBool,
    /// Where the hop records of traced calls on this channel go.
    hop_sinks: Arc<HopSinks>,
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
    /// A reply, or why it is refused: a blob over the instance's limit.
    fn checked_reply(&self, payload: bytes::Bytes) -> Result<bytes::Bytes, WireError> {
        if payload.len() as u64 > self.reply_max_blob && Blob::of(&payload).is_some() {
            let message = format!(
                "the instance replied with a blob of {} bytes, over its blob limit of {} bytes",
                payload.len(),
                self.reply_max_blob
            );
            return Err((ErrorCode::PayloadTooLarge, message));
        }
        Ok(payload)
    }

    /// Connects to the granted instance, checks its peer credentials and
    /// presents the ticket.
    pub async fn open(grant: &DirectGrant, hop_sinks: &Arc<HopSinks>) -> Result<Arc<Self>, OpenError> {
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
            features: if grant.caller_max_blob > 0 { crate::blobs::features() } else { 0 },
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
        if welcome.features & FEATURE_BLOBS != 0 {
            reader.accept_blobs();
            outbox.accept_blobs();
        }
        let channel = Arc::new(Self {
            grant: grant.grant,
            instance: grant.instance,
            outbox,
            calls: Mutex::new(Calls { waiting: HashMap::new(), closing: false, sweeping: false }),
            inflight: Arc::new(Semaphore::new(welcome.max_inflight.max(1) as usize)),
            max_frame: welcome.max_frame,
            reply_max_blob: grant.instance_max_blob,
            unusable: AtomicBool::new(false),
            hop_sinks: hop_sinks.clone(),
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

    /// Sends `call` and waits for its answer until `deadline`; gives it
    /// back unsent if the channel is closing or the call does not fit.
    pub async fn call(
        self: &Arc<Self>,
        call: Call,
        size: usize,
        deadline: Instant,
        timeout: Duration,
    ) -> Sent {
        if size > self.max_frame as usize && !crate::blobs::passes_as_blob(&self.outbox, &call.payload) {
            return Sent::NotSent(call); // the daemon's path says why, with its own limit
        }
        let permit = match self.inflight.try_acquire() {
            Ok(permit) => permit,
            Err(_) => match tokio::time::timeout_at(deadline.into(), self.inflight.acquire()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Sent::NotSent(call),
                Err(_) => return Sent::Answered(Err(CallError::Timeout(timeout))),
            },
        };
        let (tx, rx) = oneshot::channel();
        let id = call.id;
        let frame = Frame::Call(call);
        {
            let mut calls = lock(&self.calls);
            if calls.closing || self.outbox.push(&frame).is_err() {
                drop(calls);
                return match frame {
                    Frame::Call(call) => Sent::NotSent(call),
                    _ => unreachable!("built as a call just above"),
                };
            }
            calls.waiting.insert(id, Waiting { deadline, answer: tx });
            if !calls.sweeping {
                calls.sweeping = true;
                tokio::spawn(self.clone().sweep());
            }
        }
        let answer = rx.await;
        drop(permit);
        Sent::Answered(match answer {
            Ok(Ok(payload)) => Ok(payload),
            Ok(Err((code, message))) => Err(CallError::from_wire(code, message, timeout)),
            Err(_) => Err(CallError::InstanceGone(format!(
                "the direct channel to instance {} closed before the reply",
                self.instance
            ))),
        })
    }

    /// Answers expired calls with `Timeout` while any call waits.
    async fn sweep(self: Arc<Self>) {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let now = Instant::now();
            let mut calls = lock(&self.calls);
            for (_, expired) in calls.waiting.extract_if(|_, w| w.deadline <= now) {
                let _ = expired.answer.send(Err((ErrorCode::Timeout, "no reply before the deadline".into())));
            }
            if calls.waiting.is_empty() {
                calls.sweeping = false;
                return;
            }
        }
    }

    /// Reads answers until the instance closes the channel; then fails
    /// whatever is still waiting (their senders drop: `InstanceGone`).
    async fn read(self: Arc<Self>, mut reader: FrameReader) {
        loop {
            let answer = match reader.next().await {
                Ok(Some(Frame::Reply { id, payload })) => (id, self.checked_reply(payload)),
                Ok(Some(Frame::Error { id, code, message })) => (id, Err((code, message))),
                Ok(Some(Frame::Hops { id, headers })) => {
                    self.hop_sinks.deliver(id, &headers);
                    continue;
                }
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
            if let Some(waiting) = lock(&self.calls).waiting.remove(&id) {
                let _ = waiting.answer.send(result);
            }
        }
        let mut calls = lock(&self.calls);
        calls.closing = true;
        self.unusable.store(true, Ordering::Release);
        calls.waiting.clear();
        self.outbox.close();
    }
}
