//! Socket → frames.
//!
//! The buffer keeps a zero-initialised tail that reads land in and that is
//! reused as frames are taken off the front, so reading needs neither
//! `unsafe` nor a memset per read. Frames split off the front share the
//! buffer's memory: payloads are not copied.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;

use bytes::{Bytes, BytesMut};
use switchboard_proto::{decode, frame_len, DecodeError, Frame, BLOB_FLAG, LEN_PREFIX, REGION_FLAG};

use crate::blob::{Blob, BlobError};
use crate::region::RegionGrant;
use crate::ReadHalf;

/// Most descriptors received and not yet claimed by their frames; a peer
/// that sends descriptors without blob frames is cut off here.
const MAX_PENDING_FDS: usize = 64;

/// Room for the next read, at first; one read usually brings many small
/// frames.
const READ_CHUNK: usize = 64 * 1024;
/// The most room a busy connection's reads grow to. Each read that fills
/// all its room doubles it: a stream of small messages is then taken in
/// fewer, larger reads (pub/sub 1 → 1, 16 B: 1.8 → 2.3 M msgs/s received
/// with 256 KiB), while a quiet connection keeps 64 KiB.
const MAX_READ_CHUNK: usize = 256 * 1024;

/// Why reading the next frame failed. Either ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("socket read failed: {0}")]
    Io(#[from] io::Error),
    #[error("invalid frame: {0}")]
    Decode(#[from] DecodeError),
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
    #[error("{kind} frame's blob refused: {source}")]
    Blob { kind: &'static str, source: BlobError },
    #[error("{kind} frame announces a blob but {why}")]
    BadBlob { kind: &'static str, why: String },
}

/// Reads frames from one half of a socket.
pub struct FrameReader {
    half: ReadHalf,
    /// `buf[..filled]` is received data; `buf[filled..]` is initialised
    /// room for the next read.
    buf: BytesMut,
    filled: usize,
    max_frame: u32,
    /// Room to offer the next read (grows while reads fill it).
    chunk: usize,
    /// Descriptors received, waiting for their blob frames; `None` until
    /// the handshake agreed on blobs (until then descriptors are dropped
    /// by the kernel and a blob frame is an unknown kind).
    fds: Option<VecDeque<OwnedFd>>,
    /// Whether a blob frame may carry a region grant (a client's reader;
    /// the daemon's never takes one, so a client cannot send it one).
    regions: bool,
}

impl FrameReader {
    pub fn new(half: ReadHalf, max_frame: u32) -> Self {
        Self {
            half,
            buf: BytesMut::new(),
            filled: 0,
            max_frame,
            chunk: READ_CHUNK,
            fds: None,
            regions: false,
        }
    }

    /// Takes blobs from now on (both ends said so in the handshake).
    pub fn accept_blobs(&mut self) {
        self.fds.get_or_insert_with(VecDeque::new);
    }

    /// Takes region grants from now on: blob frames that also carry
    /// [`REGION_FLAG`] become [`RegionGrant`] payloads (checked when mapped).
    pub fn accept_regions(&mut self) {
        self.accept_blobs();
        self.regions = true;
    }

    /// Changes the maximum (after the handshake negotiated one).
    pub fn set_max_frame(&mut self, max_frame: u32) {
        self.max_frame = max_frame;
    }

    /// A frame already buffered, without touching the socket.
    pub fn try_next(&mut self) -> Result<Option<Frame>, ReadError> {
        let Some(total) = frame_len(&self.buf[..self.filled]) else {
            return Ok(None);
        };
        if total > self.filled {
            // Incomplete: only its length prefix is judged now (too large,
            // empty), from a copy, so the room after it never reaches decode.
            let mut prefix = BytesMut::from(&self.buf[..LEN_PREFIX]);
            decode(&mut prefix, self.max_frame)?;
            return Ok(None);
        }
        let blob = self.fds.is_some() && self.buf[LEN_PREFIX] & BLOB_FLAG != 0;
        let region = blob && self.regions && self.buf[LEN_PREFIX] & REGION_FLAG != 0;
        if blob {
            // A region flag left in place makes an unknown kind: refused.
            self.buf[LEN_PREFIX] &= if region { !(BLOB_FLAG | REGION_FLAG) } else { !BLOB_FLAG };
        }
        // A whole frame is at the front: decode it in place (no split of
        // the buffer around it, which cost two atomic operations a frame).
        let frame = decode(&mut self.buf, self.max_frame)?;
        self.filled -= total;
        match frame {
            Some(mut frame) if blob => {
                self.attach_blob(&mut frame, region)?;
                Ok(Some(frame))
            }
            other => Ok(other),
        }
    }

    /// Puts the blob (or region grant) that came with `frame` in place of
    /// its payload, which on the wire is the blob's (file's) length.
    fn attach_blob(&mut self, frame: &mut Frame, region: bool) -> Result<(), ReadError> {
        let kind = frame.kind_name();
        let bad = |why: &str| ReadError::BadBlob { kind, why: why.to_owned() };
        let fd = self.fds.as_mut().and_then(VecDeque::pop_front);
        let payload = frame.payload_mut().ok_or_else(|| bad("its kind carries no payload"))?;
        let len: [u8; 8] = payload[..].try_into().map_err(|_| bad("its length is not 8 bytes"))?;
        let fd = fd.ok_or_else(|| bad("no descriptor came with it"))?;
        if region {
            *payload = Bytes::from(RegionGrant::new(fd, u64::from_le_bytes(len)));
            return Ok(());
        }
        let blob =
            Blob::receive(fd, u64::from_le_bytes(len)).map_err(|source| ReadError::Blob { kind, source })?;
        *payload = Bytes::from(blob);
        Ok(())
    }

    /// The next frame; `Ok(None)` on a clean end of stream between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = self.try_next()? {
                return Ok(Some(frame));
            }
            // Room for the rest of a large frame grows with what actually
            // arrives (at most doubling what is buffered), never to the
            // announced length at once: a peer that announces 8 MiB and
            // sends 4 bytes costs a chunk, not 8 MiB.
            let pending = frame_len(&self.buf[..self.filled]).unwrap_or(0);
            let step = (self.filled + self.chunk).max(2 * self.filled);
            let want = pending.min(step).max(self.filled + self.chunk / 16);
            if self.buf.len() < want {
                self.buf.resize(want.max((self.filled + self.chunk).min(step)), 0);
            }
            let room = self.buf.len() - self.filled;
            let read = match &mut self.fds {
                None => self.half.read(&mut self.buf[self.filled..]).await?,
                Some(fds) => {
                    let read = self.half.read_with_fds(&mut self.buf[self.filled..], fds).await?;
                    if fds.len() > MAX_PENDING_FDS {
                        let why = format!("{} descriptors arrived that no blob frame claimed", fds.len());
                        return Err(ReadError::Io(io::Error::new(io::ErrorKind::InvalidData, why)));
                    }
                    read
                }
            };
            if read == room && self.chunk < MAX_READ_CHUNK {
                self.chunk *= 2;
            }
            if read == 0 {
                if self.filled == 0 {
                    return Ok(None);
                }
                return Err(ReadError::Truncated { buffered: self.filled });
            }
            self.filled += read;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Stream;
    use bytes::Bytes;

    /// A reader fed `bytes` by hand through a socket pair.
    fn fed(bytes: &[u8]) -> (FrameReader, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        let (read, _write) = Stream::from_std_unix(ours).expect("stream").into_split().expect("split");
        std::io::Write::write_all(&mut &theirs, bytes).expect("write");
        (FrameReader::new(read, 1024), theirs)
    }

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        buf.to_vec()
    }

    #[tokio::test]
    async fn frames_split_anywhere_come_out_whole_and_in_order() {
        let one = Frame::Reply { id: 1, payload: Bytes::from_static(b"first") };
        let two = Frame::Reply { id: 2, payload: Bytes::from(vec![9u8; 700]) };
        let bytes = [encoded(&one), encoded(&two)].concat();
        let (mut reader, theirs) = fed(&bytes[..7]);
        let rest = bytes[7..].to_vec();
        let writer = std::thread::spawn(move || {
            for chunk in rest.chunks(100) {
                std::thread::sleep(std::time::Duration::from_millis(2));
                std::io::Write::write_all(&mut &theirs, chunk).expect("write");
            }
            theirs
        });
        assert_eq!(reader.next().await.expect("read"), Some(one));
        assert_eq!(reader.next().await.expect("read"), Some(two));
        assert!(reader.try_next().expect("nothing buffered").is_none());
        drop(writer.join());
        assert!(reader.next().await.expect("clean end").is_none());
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_its_body_arrives() {
        let (mut reader, _theirs) = fed(&2048u32.to_le_bytes());
        let err = reader.next().await.expect_err("too large");
        assert!(matches!(err, ReadError::Decode(DecodeError::TooLarge { len: 2048, max: 1024 })), "{err}");
        let (mut reader, _theirs) = fed(&0u32.to_le_bytes());
        assert!(matches!(reader.next().await, Err(ReadError::Decode(DecodeError::Empty))));
    }

    /// Issue 12, defect 7: four length bytes announcing a large frame
    /// made the reader allocate and zero-fill all of it at once.
    #[tokio::test]
    async fn room_for_a_large_frame_grows_only_as_its_bytes_arrive() {
        let mut bytes = (8u32 << 20).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 100]);
        let (mut reader, _peer) = fed(&bytes);
        reader.set_max_frame(16 << 20);
        let read = tokio::time::timeout(std::time::Duration::from_millis(100), reader.next()).await;
        assert!(read.is_err(), "no whole frame yet");
        assert!(
            reader.buf.len() <= 2 * MAX_READ_CHUNK,
            "{} bytes reserved for 104 received",
            reader.buf.len()
        );
        // And a large frame sent in pieces still arrives whole.
        let big = Frame::Reply { id: 3, payload: Bytes::from(vec![7u8; 3 << 20]) };
        let bytes = encoded(&big);
        let (mut reader, theirs) = fed(&bytes[..10]);
        reader.set_max_frame(16 << 20);
        let rest = bytes[10..].to_vec();
        let writer =
            std::thread::spawn(move || std::io::Write::write_all(&mut &theirs, &rest).map(|()| theirs));
        assert_eq!(reader.next().await.expect("read"), Some(big));
        drop(writer.join());
    }

    #[tokio::test]
    async fn a_stream_ending_inside_a_frame_is_truncated() {
        let frame = encoded(&Frame::Reply { id: 1, payload: Bytes::from_static(b"cut short") });
        let (mut reader, theirs) = fed(&frame[..frame.len() - 3]);
        drop(theirs);
        assert!(matches!(reader.next().await, Err(ReadError::Truncated { .. })));
    }
}
