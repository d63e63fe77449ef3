//! An in-process byte pipe pair: what a [`crate::Stream::memory_pair`]
//! carries, for sessions the daemon opens for the apps it hosts (gateway,
//! fleet, supervisor, metrics) and for tests.
//!
//! It behaves like a connected Unix stream socket — bounded buffers
//! ([`CAPACITY`] per direction), a write that finds no room waits, end of
//! stream once the other end is gone, `BrokenPipe` writing to an end that is
//! gone — without a system call or a trip through the reactor: a write wakes
//! the reading task directly. It passes no descriptors.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Bytes one direction holds before a writer waits (a socket's default).
pub const CAPACITY: usize = 256 * 1024;

/// One direction.
#[derive(Default)]
struct Pipe {
    state: Mutex<PipeState>,
}

#[derive(Default)]
struct PipeState {
    bytes: VecDeque<u8>,
    /// The writing end is gone or shut down: the reader sees end of stream
    /// once the bytes are read.
    writer_closed: bool,
    /// The reading end is gone: writes fail.
    reader_closed: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Pipe {
    fn lock(&self) -> MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One end: the direction it reads and the one it writes. Both halves of an
/// end share it; when the last goes, the peer reads end of stream and its
/// writes fail, as when a socket is closed.
pub(crate) struct End {
    incoming: Arc<Pipe>,
    outgoing: Arc<Pipe>,
}

impl Drop for End {
    fn drop(&mut self) {
        let wake = |waker: Option<Waker>| waker.map(Waker::wake);
        let mut out = self.outgoing.lock();
        out.writer_closed = true;
        let reader = out.reader.take();
        drop(out);
        wake(reader);
        let mut incoming = self.incoming.lock();
        incoming.reader_closed = true;
        incoming.bytes.clear();
        let writer = incoming.writer.take();
        drop(incoming);
        wake(writer);
    }
}

/// Two connected ends.
pub(crate) fn pair() -> (Arc<End>, Arc<End>) {
    let (a_to_b, b_to_a) = (Arc::new(Pipe::default()), Arc::new(Pipe::default()));
    let a = End { incoming: b_to_a.clone(), outgoing: a_to_b.clone() };
    let b = End { incoming: a_to_b, outgoing: b_to_a };
    (Arc::new(a), Arc::new(b))
}

impl End {
    /// Reads what is there into `buf`, waiting for at least one byte; 0 at
    /// end of stream.
    pub(crate) fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut pipe = self.incoming.lock();
        if pipe.bytes.is_empty() {
            if pipe.writer_closed || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            pipe.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let (front, back) = pipe.bytes.as_slices();
        let mut read = 0;
        for part in [front, back] {
            let n = part.len().min(buf.len() - read);
            buf[read..read + n].copy_from_slice(&part[..n]);
            read += n;
        }
        pipe.bytes.drain(..read);
        let writer = pipe.writer.take();
        drop(pipe);
        if let Some(writer) = writer {
            writer.wake();
        }
        Poll::Ready(Ok(read))
    }

    /// Writes as much of `bufs` as there is room for, waiting only if
    /// there is none.
    pub(crate) fn poll_write(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let mut pipe = self.outgoing.lock();
        if pipe.reader_closed || pipe.writer_closed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the other end is gone")));
        }
        let room = CAPACITY.saturating_sub(pipe.bytes.len());
        let wanted: usize = bufs.iter().map(|b| b.len()).sum();
        if room == 0 && wanted > 0 {
            pipe.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut written = 0;
        for buf in bufs {
            let n = buf.len().min(room - written);
            pipe.bytes.extend(&buf[..n]);
            written += n;
            if written == room {
                break;
            }
        }
        let reader = pipe.reader.take();
        drop(pipe);
        if let Some(reader) = reader {
            reader.wake();
        }
        Poll::Ready(Ok(written))
    }

    /// Ends this direction: the peer reads end of stream after the bytes.
    pub(crate) fn shutdown(&self) {
        let mut pipe = self.outgoing.lock();
        pipe.writer_closed = true;
        let reader = pipe.reader.take();
        drop(pipe);
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    async fn read(end: &End, buf: &mut [u8]) -> usize {
        poll_fn(|cx| end.poll_read(cx, buf)).await.unwrap()
    }

    async fn write(end: &End, bytes: &[u8]) -> io::Result<usize> {
        poll_fn(|cx| end.poll_write(cx, &[IoSlice::new(bytes)])).await
    }

    #[tokio::test]
    async fn bytes_cross_in_order_and_a_full_pipe_makes_the_writer_wait() {
        let (a, b) = pair();
        assert_eq!(write(&a, b"hello ").await.unwrap(), 6);
        assert_eq!(write(&a, b"world").await.unwrap(), 5);
        let mut buf = [0u8; 64];
        let n = read(&b, &mut buf).await;
        assert_eq!(&buf[..n], b"hello world");

        let big = vec![7u8; CAPACITY + 10];
        assert_eq!(write(&a, &big).await.unwrap(), CAPACITY, "only what fits");
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { write(&a, b"more").await.unwrap() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a full pipe holds the writer");
        let mut drained = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while drained < CAPACITY + 4 {
            drained += read(&b, &mut buf).await;
        }
        assert_eq!(waiting.await.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_gone_end_is_end_of_stream_for_its_peer_and_a_broken_pipe_to_write_to() {
        let (a, b) = pair();
        write(&a, b"last").await.unwrap();
        let reading = tokio::spawn({
            let b = b.clone();
            async move {
                let mut buf = [0u8; 16];
                let first = read(&b, &mut buf).await;
                (first, read(&b, &mut buf).await)
            }
        });
        drop(a);
        assert_eq!(reading.await.unwrap(), (4, 0), "the bytes, then end of stream");
        let err = write(&b, b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);

        let (c, d) = pair();
        c.shutdown();
        let mut buf = [0u8; 4];
        assert_eq!(read(&d, &mut buf).await, 0, "shut down: end of stream");
        assert_eq!(write(&d, b"still").await.unwrap(), 5, "the other direction still works");
    }
}
