//! Socket → frames.
//!
//! The buffer keeps a zero-initialised tail that reads land in and that is
//! reused as frames are taken off the front, so reading needs neither
//! `unsafe` nor a memset per read. Frames split off the front share the
//! buffer's memory: payloads are not copied.

use std::io;

use bytes::BytesMut;
use switchboard_proto::{decode, frame_len, DecodeError, Frame, LEN_PREFIX};

use crate::ReadHalf;

/// The least room kept for the next read; one read usually brings many
/// small frames.
const READ_CHUNK: usize = 64 * 1024;

/// Why reading the next frame failed. Either ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("socket read failed: {0}")]
    Io(#[from] io::Error),
    #[error("invalid frame: {0}")]
    Decode(#[from] DecodeError),
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
}

/// Reads frames from one half of a socket.
pub struct FrameReader {
    half: ReadHalf,
    /// `buf[..filled]` is received data; `buf[filled..]` is initialised
    /// room for the next read.
    buf: BytesMut,
    filled: usize,
    max_frame: u32,
}

impl FrameReader {
    pub fn new(half: ReadHalf, max_frame: u32) -> Self {
        Self { half, buf: BytesMut::new(), filled: 0, max_frame }
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
        // A whole frame is at the front: decode it in place (no split of
        // the buffer around it, which cost two atomic operations a frame).
        let frame = decode(&mut self.buf, self.max_frame)?;
        self.filled -= total;
        Ok(frame)
    }

    /// The next frame; `Ok(None)` on a clean end of stream between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = self.try_next()? {
                return Ok(Some(frame));
            }
            // `try_next` has refused any length over the maximum, so the
            // room reserved for a frame is bounded by it.
            let pending = frame_len(&self.buf[..self.filled]).unwrap_or(0);
            let want = pending.max(self.filled + READ_CHUNK / 16);
            if self.buf.len() < want {
                self.buf.resize(want.max(self.filled + READ_CHUNK), 0);
            }
            let read = self.half.read(&mut self.buf[self.filled..]).await?;
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
