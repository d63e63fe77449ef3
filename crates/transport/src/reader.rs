//! Socket → frames.

use std::io;

use bytes::BytesMut;
use switchboard_proto::{decode, frame_len, DecodeError, Frame};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How much the reader asks the kernel for at a time when no frame length
/// is known yet; one read usually brings many small frames.
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
pub struct FrameReader<R> {
    reader: R,
    buf: BytesMut,
    max_frame: u32,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R, max_frame: u32) -> Self {
        Self { reader, buf: BytesMut::with_capacity(READ_CHUNK), max_frame }
    }

    /// Changes the maximum (after the handshake negotiated one).
    pub fn set_max_frame(&mut self, max_frame: u32) {
        self.max_frame = max_frame;
    }

    /// A frame already buffered, without touching the socket.
    pub fn try_next(&mut self) -> Result<Option<Frame>, ReadError> {
        Ok(decode(&mut self.buf, self.max_frame)?)
    }

    /// The next frame; `Ok(None)` on a clean end of stream between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = decode(&mut self.buf, self.max_frame)? {
                return Ok(Some(frame));
            }
            // `decode` has refused any length over the maximum, so reserving
            // for the announced frame is bounded by it.
            let want = frame_len(&self.buf).unwrap_or(0).max(READ_CHUNK);
            self.buf.reserve(want.saturating_sub(self.buf.len()));
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(ReadError::Truncated { buffered: self.buf.len() });
            }
        }
    }
}
