//! Frames → socket: a bounded queue that many producers fill and one writer
//! task drains, writing everything waiting in one vectored write.
//!
//! Small frames are copied into one contiguous buffer (cheaper than an
//! `iovec` each); large payloads are queued as their own `Bytes` and never
//! copied. The queue is bounded in bytes twice: past the congestion mark
//! producers see [`Outbox::is_congested`] and may wait in
//! [`Outbox::wait_uncongested`]; at the hard limit ([`Outbox::bounded`]) the
//! outbox refuses every further frame and closes, whatever the frame kind,
//! and [`Outbox::take_overflow`] tells the owner once. What to do then
//! belongs to the owner (the daemon disconnects the connection).
//!
//! Once [`Outbox::accept_blobs`] is called (the peer takes descriptors), a
//! frame whose payload is a whole [`Blob`] goes out as a small head with the
//! blob's descriptor instead of its bytes, and counts [`BLOB_CHARGE`] toward
//! the bounds whatever its size: the byte bounds also bound how many
//! descriptors wait for one peer. To a peer that does not take them a blob's
//! bytes are written like any payload's (from the mapping, not copied).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use switchboard_proto::Frame;
use tokio::sync::Notify;

use crate::blob::Blob;
use crate::region::RegionGrant;
use crate::WriteHalf;

/// What one blob waiting to be passed counts toward an outbox's bounds.
pub const BLOB_CHARGE: usize = 256 * 1024;

/// Most buffers handed to one `writev`.
const MAX_IOVECS: usize = 64;

/// The outbox was closed; the connection is going away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection closed")]
pub struct OutboxClosed;

/// A buffer to send; one that starts a blob frame carries the blob (or
/// region grant), whose descriptor goes with its first byte.
struct Segment {
    bytes: Bytes,
    blob: Option<Passed>,
}

/// What a frame passes by descriptor.
enum Passed {
    Blob(Blob),
    Region(RegionGrant),
}

impl Passed {
    /// What `payload` passes, if it is a whole blob or a region grant.
    fn of(payload: &Bytes) -> Option<Self> {
        Blob::of(payload).map(Self::Blob).or_else(|| RegionGrant::of(payload).map(Self::Region))
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Self::Blob(blob) => blob.fd(),
            Self::Region(grant) => grant.fd(),
        }
    }

    fn encode_head(&self, frame: &Frame, head: &mut BytesMut) {
        match self {
            Self::Blob(blob) => frame.encode_blob_head(head, blob.len() as u64),
            Self::Region(grant) => frame.encode_region_head(head, grant.file_len()),
        }
    }
}

impl Segment {
    fn plain(bytes: Bytes) -> Self {
        Self { bytes, blob: None }
    }

    /// What it counts toward the bounds.
    fn charge(&self) -> usize {
        self.bytes.len() + if self.blob.is_some() { BLOB_CHARGE } else { 0 }
    }
}

#[derive(Default)]
struct Queue {
    /// Small frames, contiguous, not yet moved to `segments`.
    tail: BytesMut,
    /// Buffers in send order.
    segments: VecDeque<Segment>,
    /// Bytes queued in total (tail + segments).
    queued: usize,
    closed: bool,
    /// Closed because the hard limit was reached; not yet reported.
    overflowed: bool,
}

impl Queue {
    /// Ends the run of small frames: what follows is queued after it.
    fn flush_tail(&mut self) {
        if !self.tail.is_empty() {
            let tail = self.tail.split().freeze();
            self.segments.push_back(Segment::plain(tail));
        }
    }
}

/// A connection's bounded send queue.
pub struct Outbox {
    queue: Mutex<Queue>,
    /// Wakes the writer.
    ready: Notify,
    /// Wakes producers waiting for space.
    drained: Notify,
    congested_at: usize,
    congested: AtomicBool,
    /// Bytes queued past which no frame is accepted.
    limit: usize,
    /// Whether the peer takes blobs as descriptors.
    blobs: AtomicBool,
}

impl Outbox {
    /// An outbox considered congested once `congested_at` bytes are queued,
    /// with no hard limit (the producers bound it themselves).
    pub fn new(congested_at: usize) -> Self {
        Self::bounded(congested_at, usize::MAX)
    }

    /// An outbox that also closes itself, refusing every further frame, once
    /// `limit` bytes are queued (it may exceed the limit by the one frame
    /// that crossed it).
    pub fn bounded(congested_at: usize, limit: usize) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            drained: Notify::new(),
            congested_at,
            congested: AtomicBool::new(false),
            limit,
            blobs: AtomicBool::new(false),
        }
    }

    /// Passes blobs by descriptor from now on (the peer said it takes them).
    pub fn accept_blobs(&self) {
        self.blobs.store(true, Ordering::Relaxed);
    }

    /// Whether a blob payload reaches this peer as a descriptor (else as
    /// bytes, which must then fit its frame size).
    pub fn takes_blobs(&self) -> bool {
        self.blobs.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue invalid
        // (every update is a single push or swap), so poisoning is ignored.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame. Never blocks; fails only when the outbox is closed.
    pub fn push(&self, frame: &Frame) -> Result<(), OutboxClosed> {
        let mut q = self.admit()?;
        let passed = if self.takes_blobs() { frame.payload().and_then(Passed::of) } else { None };
        let added = match passed {
            Some(blob) => {
                // Its own segment: the descriptor goes with its first byte.
                let mut head = BytesMut::new();
                blob.encode_head(frame, &mut head);
                q.flush_tail();
                let segment = Segment { bytes: head.freeze(), blob: Some(blob) };
                let charge = segment.charge();
                q.segments.push_back(segment);
                charge
            }
            None => {
                let before = q.tail.len();
                let detached = frame.encode_head(&mut q.tail);
                let mut added = q.tail.len() - before;
                if let Some(payload) = detached {
                    added += payload.len();
                    q.flush_tail();
                    q.segments.push_back(Segment::plain(payload));
                }
                added
            }
        };
        self.queued(q, added);
        Ok(())
    }

    /// Queues a frame already encoded whole (length prefix, kind, fields,
    /// inline payload) by the caller: how the router sends one publication
    /// to many subscribers, encoding it once.
    pub fn push_encoded(&self, frame: &[u8]) -> Result<(), OutboxClosed> {
        let mut q = self.admit()?;
        q.tail.extend_from_slice(frame);
        self.queued(q, frame.len());
        Ok(())
    }

    /// The queue, locked, if it takes more: not once closed, and closing it
    /// at the hard limit (the peer stopped reading).
    fn admit(&self) -> Result<std::sync::MutexGuard<'_, Queue>, OutboxClosed> {
        let mut q = self.lock();
        if q.closed {
            return Err(OutboxClosed);
        }
        if q.queued >= self.limit {
            q.closed = true;
            q.overflowed = true;
            drop(q);
            self.ready.notify_one();
            self.drained.notify_waiters();
            return Err(OutboxClosed);
        }
        Ok(q)
    }

    /// Counts `added` bytes just queued, and wakes the writer.
    fn queued(&self, mut q: std::sync::MutexGuard<'_, Queue>, added: usize) {
        q.queued += added;
        if q.queued >= self.congested_at {
            self.congested.store(true, Ordering::Relaxed);
        }
        drop(q);
        self.ready.notify_one();
    }

    /// Whether more than the congestion threshold is waiting to be written.
    pub fn is_congested(&self) -> bool {
        self.congested.load(Ordering::Relaxed)
    }

    /// Waits until the queue drops below the threshold; `false` if it did
    /// not within `limit` (or the outbox closed).
    pub async fn wait_uncongested(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let drained = self.drained.notified();
                if !self.is_congested() {
                    return true;
                }
                if self.lock().closed {
                    return false;
                }
                drained.await;
            }
        };
        tokio::time::timeout(limit, wait).await.unwrap_or(false)
    }

    /// Whether the outbox closed at its hard limit; true once, for the
    /// first caller to ask after it happened.
    pub fn take_overflow(&self) -> bool {
        std::mem::take(&mut self.lock().overflowed)
    }

    /// Whether it was closed: the connection is going away (or its socket
    /// failed).
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.lock().queued
    }

    /// Stops accepting frames; the writer sends what is queued, then ends.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.drained.notify_waiters();
    }

    /// Takes everything queued, as the writer would, for a reader in this
    /// process instead of a socket (the router's unit tests read what it
    /// sent this way).
    pub fn drain(&self) -> BytesMut {
        let mut batch = Vec::new();
        self.take(&mut batch);
        let mut out = BytesMut::with_capacity(batch.iter().map(|s| s.bytes.len()).sum());
        for segment in &batch {
            out.extend_from_slice(&segment.bytes);
        }
        self.written(batch.iter().map(Segment::charge).sum());
        out
    }

    /// Moves everything queued into `batch`; returns false once closed and empty.
    fn take(&self, batch: &mut Vec<Segment>) -> bool {
        let mut q = self.lock();
        q.flush_tail();
        batch.extend(q.segments.drain(..));
        !(batch.is_empty() && q.closed)
    }

    fn written(&self, bytes: usize) {
        let mut q = self.lock();
        q.queued = q.queued.saturating_sub(bytes);
        if q.queued < self.congested_at && self.congested.swap(false, Ordering::Relaxed) {
            drop(q);
            self.drained.notify_waiters();
        }
    }
}

/// Drains `outbox` into `writer` until the outbox is closed and empty or the
/// socket fails. Everything waiting goes out in as few `writev`s as possible.
pub async fn run_writer(outbox: &Outbox, writer: WriteHalf) -> io::Result<()> {
    let mut batch: Vec<Segment> = Vec::new();
    loop {
        if !outbox.take(&mut batch) {
            writer.shutdown();
            return Ok(());
        }
        if batch.is_empty() {
            outbox.ready.notified().await;
            continue;
        }
        let total: usize = batch.iter().map(Segment::charge).sum();
        if let Err(err) = write_all_vectored(&writer, &mut batch).await {
            // The peer is gone: whoever waits for this outbox to drain
            // (its own session, a held publisher) learns at once.
            outbox.close();
            return Err(err);
        }
        outbox.written(total);
    }
}

/// Writes `batch` in order. A segment carrying a blob starts its own write,
/// which passes the descriptor; each write ends before the next such one.
async fn write_all_vectored(writer: &WriteHalf, batch: &mut Vec<Segment>) -> io::Result<()> {
    let mut first = 0;
    while first < batch.len() {
        let limit = (first + MAX_IOVECS).min(batch.len());
        let end = (first + 1..limit).find(|&i| batch[i].blob.is_some()).unwrap_or(limit);
        let slices: Vec<IoSlice<'_>> = batch[first..end].iter().map(|s| IoSlice::new(&s.bytes)).collect();
        let mut written = match &batch[first].blob {
            Some(blob) => writer.send_with_fd(&slices, blob.fd()).await?,
            None => writer.write_vectored(&slices).await?,
        };
        if written == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "socket accepted no bytes"));
        }
        // The descriptor went with the first byte; this process's reference
        // to the blob is no longer needed to send the rest.
        batch[first].blob = None;
        while written > 0 {
            let len = batch[first].bytes.len();
            if written >= len {
                written -= len;
                first += 1;
            } else {
                let rest = batch[first].bytes.slice(written..);
                batch[first].bytes = rest;
                written = 0;
            }
        }
    }
    batch.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::DEFAULT_MAX_FRAME;

    #[tokio::test]
    async fn frames_arrive_in_order_small_and_large_mixed() {
        let outbox = std::sync::Arc::new(Outbox::new(1 << 20));
        let (client, server) = crate::Stream::pair().unwrap();
        let (_, client) = client.into_split().unwrap();
        let (server, _server_write) = server.into_split().unwrap();
        let frames: Vec<Frame> = (0..200u32)
            .map(|id| Frame::Reply { id, payload: Bytes::from(vec![id as u8; (id as usize % 7) * 300]) })
            .collect();
        for frame in &frames {
            outbox.push(frame).unwrap();
        }
        outbox.close();
        assert_eq!(outbox.push(&frames[0]), Err(OutboxClosed));
        let writer = {
            let outbox = outbox.clone();
            tokio::spawn(async move { run_writer(&outbox, client).await })
        };
        let mut reader = crate::FrameReader::new(server, DEFAULT_MAX_FRAME);
        for expected in &frames {
            assert_eq!(reader.next().await.unwrap().as_ref(), Some(expected));
        }
        assert!(reader.next().await.unwrap().is_none());
        writer.await.unwrap().unwrap();
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn at_its_hard_limit_the_outbox_closes_and_says_so_once() {
        let outbox = Outbox::bounded(1000, 3000);
        let frame = Frame::Reply { id: 1, payload: Bytes::from(vec![0u8; 1000]) };
        for _ in 0..3 {
            outbox.push(&frame).unwrap();
        }
        assert!(!outbox.take_overflow());
        assert_eq!(outbox.push(&frame), Err(OutboxClosed));
        let queued = outbox.queued_bytes();
        assert!(queued < 3100, "{queued} bytes kept past the limit");
        assert!(outbox.take_overflow());
        assert!(!outbox.take_overflow(), "reported once");
        assert_eq!(outbox.push(&Frame::Reply { id: 2, payload: Bytes::new() }), Err(OutboxClosed));
    }

    #[tokio::test]
    async fn congestion_is_reported_and_cleared() {
        let outbox = std::sync::Arc::new(Outbox::new(1000));
        let big = Frame::Reply { id: 1, payload: Bytes::from(vec![0u8; 2000]) };
        outbox.push(&big).unwrap();
        assert!(outbox.is_congested());
        assert!(!outbox.wait_uncongested(Duration::from_millis(20)).await);
        let (client, server) = crate::Stream::pair().unwrap();
        let (_, client) = client.into_split().unwrap();
        let (server, _server_write) = server.into_split().unwrap();
        let o = outbox.clone();
        tokio::spawn(async move { run_writer(&o, client).await });
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 4096];
            while server.read(&mut sink).await.unwrap_or(0) > 0 {}
        });
        assert!(outbox.wait_uncongested(Duration::from_secs(5)).await);
        outbox.close();
        drain.await.unwrap();
    }
}
