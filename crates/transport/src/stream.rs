//! A connected socket of either kind — or one end of an in-process pipe
//! pair (`memory.rs`) — split into independently owned halves.
//!
//! Why not tokio's `UnixStream`: it registers every socket for read *and*
//! write readiness, so each time the peer drains our bytes the process is
//! woken with a bare `EPOLLOUT` it has no use for. On a small machine that
//! wake-up costs about as much as the message itself. Here a socket is
//! registered for readability only; writes go straight to `writev` on the
//! non-blocking descriptor, and only a write that would block registers (a
//! duplicate of) the descriptor for writability, until it can proceed.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::io::Errno;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

use crate::memory;
use crate::Endpoint;

/// Who is on the other end of a Unix socket, as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<u32>,
}

/// A connected, non-blocking socket, or one end of an in-process pipe
/// pair ([`Stream::memory_pair`]).
pub struct Stream {
    kind: Kind,
}

enum Kind {
    Socket { fd: OwnedFd, unix: bool },
    Memory(Arc<memory::End>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Socket { fd, unix } => {
                f.debug_struct("Stream").field("fd", fd).field("unix", unix).finish()
            }
            Kind::Memory(_) => f.write_str("Stream(memory)"),
        }
    }
}

impl Stream {
    /// Connects to `endpoint`.
    pub async fn connect(endpoint: &Endpoint) -> io::Result<Self> {
        match endpoint {
            Endpoint::Unix(path) => Self::from_unix(UnixStream::connect(path).await?),
            Endpoint::Tcp(addr) => Self::from_tcp(TcpStream::connect(addr.as_str()).await?),
            Endpoint::Tls(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a tls:// endpoint needs certificates: connect with a TLS client configuration",
            )),
        }
    }

    /// Takes over a tokio Unix stream (e.g. from `accept`).
    pub fn from_unix(stream: UnixStream) -> io::Result<Self> {
        Self::from_std_unix(stream.into_std()?)
    }

    /// Takes over a connected std Unix stream.
    pub fn from_std_unix(std: std::os::unix::net::UnixStream) -> io::Result<Self> {
        std.set_nonblocking(true)?;
        Ok(Self { kind: Kind::Socket { fd: std.into(), unix: true } })
    }

    /// Takes over a tokio TCP stream, with Nagle off: frames are small and
    /// latency-bound, and batching is done above.
    pub fn from_tcp(stream: TcpStream) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        let std = stream.into_std()?;
        std.set_nonblocking(true)?;
        Ok(Self { kind: Kind::Socket { fd: std.into(), unix: false } })
    }

    /// A connected pair of Unix sockets (for tests and in-process links).
    pub fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        a.set_nonblocking(true)?;
        b.set_nonblocking(true)?;
        Ok((Self::from_std_unix(a)?, Self::from_std_unix(b)?))
    }

    /// A connected pair within this process, without a socket: bytes move
    /// between tasks with no system call (the daemon's sessions for the
    /// apps it hosts). Passes no descriptors and has no peer credentials.
    pub fn memory_pair() -> (Self, Self) {
        let (a, b) = memory::pair();
        (Self { kind: Kind::Memory(a) }, Self { kind: Kind::Memory(b) })
    }

    /// The peer's OS credentials, for Unix sockets.
    pub fn peer_cred(&self) -> Option<PeerCred> {
        let Kind::Socket { fd, unix: true } = &self.kind else { return None };
        let cred = rustix::net::sockopt::socket_peercred(fd).ok()?;
        Some(PeerCred {
            uid: cred.uid.as_raw(),
            gid: cred.gid.as_raw(),
            pid: u32::try_from(cred.pid.as_raw_nonzero().get()).ok(),
        })
    }

    /// Splits into halves that separate tasks can own. Must be called
    /// within a tokio runtime (the read half registers with its reactor).
    pub fn into_split(self) -> io::Result<(ReadHalf, WriteHalf)> {
        match self.kind {
            Kind::Socket { fd, .. } => {
                let fd = Arc::new(fd);
                let read = register(fd.clone(), Interest::READABLE)?;
                Ok((ReadHalf { io: Io::Socket(read) }, WriteHalf { io: Io::Socket(fd) }))
            }
            Kind::Memory(end) => {
                Ok((ReadHalf { io: Io::Memory(end.clone()) }, WriteHalf { io: Io::Memory(end) }))
            }
        }
    }
}

/// What a half works on: a socket (registered with the reactor for the
/// read half) or an in-process pipe end.
enum Io<S> {
    Socket(S),
    Memory(Arc<memory::End>),
}

/// The reading side of a [`Stream`].
pub struct ReadHalf {
    io: Io<AsyncFd<Arc<OwnedFd>>>,
}

impl ReadHalf {
    /// Reads what is available into `buf`; 0 means end of stream.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let io = match &self.io {
            Io::Socket(io) => io,
            Io::Memory(end) => {
                // As a socket's readiness does: a reader that always finds
                // bytes still lets the runtime's other tasks run.
                tokio::task::consume_budget().await;
                return poll_fn(|cx| end.poll_read(cx, buf)).await;
            }
        };
        loop {
            let mut ready = io.readable().await?;
            let wanted = buf.len();
            match ready.try_io(|fd| retry_eintr(|| rustix::io::read(fd.get_ref(), &mut *buf))) {
                Ok(Ok(read)) => {
                    // A short read drained the socket: forget the readiness
                    // now instead of learning it from an EAGAIN read. Safe
                    // against a racing arrival: the reactor only clears the
                    // readiness it reported, not a newer event.
                    if read > 0 && read < wanted {
                        ready.clear_ready();
                    }
                    return Ok(read);
                }
                Ok(Err(err)) => return Err(err),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Most descriptors one read takes; a peer that sends more with one write
/// is cut off (the kernel closes the excess and says so).
const MAX_FDS_PER_READ: usize = 16;

impl ReadHalf {
    /// Like [`ReadHalf::read`], also taking the descriptors that came with
    /// the bytes (close-on-exec) into `fds`, in the order they were sent.
    pub async fn read_with_fds(
        &self,
        buf: &mut [u8],
        fds: &mut std::collections::VecDeque<OwnedFd>,
    ) -> io::Result<usize> {
        use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
        let io = match &self.io {
            Io::Socket(io) => io,
            Io::Memory(_) => return self.read(buf).await,
        };
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_READ))];
        loop {
            let mut ready = io.readable().await?;
            let wanted = buf.len();
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let received = ready.try_io(|fd| loop {
                let mut iov = [io::IoSliceMut::new(&mut *buf)];
                match rustix::net::recvmsg(fd.get_ref(), &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
                    Err(Errno::INTR) => continue,
                    other => return other.map_err(io::Error::from),
                }
            });
            let msg = match received {
                Ok(Ok(msg)) => msg,
                Ok(Err(err)) => return Err(err),
                Err(_would_block) => continue,
            };
            let before = fds.len();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = message {
                    fds.extend(received);
                }
            }
            if msg.flags.contains(ReturnFlags::CTRUNC) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("more than {MAX_FDS_PER_READ} descriptors sent at once"),
                ));
            }
            // A short read drained the socket (as in `read`) unless it
            // brought descriptors: the kernel ends a read just after the
            // bytes that carried some, with more waiting. Clearing the
            // readiness then lost the wake-up for those bytes (found by
            // `blobs.rs::no_descriptor_leaks_after_many_blob_messages`).
            if msg.bytes > 0 && msg.bytes < wanted && fds.len() == before {
                ready.clear_ready();
            }
            return Ok(msg.bytes);
        }
    }
}

/// The writing side of a [`Stream`].
pub struct WriteHalf {
    io: Io<Arc<OwnedFd>>,
}

impl WriteHalf {
    /// Writes as much of `bufs` as the socket takes, waiting only if it
    /// takes nothing.
    pub async fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let fd = match &self.io {
            Io::Socket(fd) => fd,
            Io::Memory(end) => {
                tokio::task::consume_budget().await;
                return poll_fn(|cx| end.poll_write(cx, bufs)).await;
            }
        };
        loop {
            match rustix::io::writev(&**fd, bufs) {
                Ok(written) => return Ok(written),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => wait_writable(fd).await?,
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Like [`WriteHalf::write_vectored`], passing `fd` with the first byte
    /// written (`SCM_RIGHTS`). Once any byte is written the descriptor has
    /// gone; a write that would block sends neither.
    pub async fn send_with_fd(&self, bufs: &[IoSlice<'_>], fd: BorrowedFd<'_>) -> io::Result<usize> {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let Io::Socket(socket) = &self.io else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "an in-process pipe passes no descriptors",
            ));
        };
        let fds = [fd];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        loop {
            let mut control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds));
            match rustix::net::sendmsg(&**socket, bufs, &mut control, SendFlags::NOSIGNAL) {
                Ok(written) => return Ok(written),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => wait_writable(socket).await?,
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Ends the sending direction; the peer reads end of stream.
    pub fn shutdown(&self) {
        match &self.io {
            Io::Socket(fd) => {
                let _ = rustix::net::shutdown(&**fd, rustix::net::Shutdown::Write);
            }
            Io::Memory(end) => end.shutdown(),
        }
    }
}

/// Registers a duplicate of the descriptor for writability just for this
/// wait; registration reports a socket that is already writable, so no
/// wake-up is lost between the failed write and the wait. The duplicate is
/// close-on-exec like every descriptor we open: a process spawned meanwhile
/// must not inherit a live connection.
async fn wait_writable(fd: &OwnedFd) -> io::Result<()> {
    let dup = Arc::new(rustix::io::fcntl_dupfd_cloexec(fd, 0)?);
    let writable = register(dup, Interest::WRITABLE)?;
    let _ready = writable.writable().await?;
    Ok(())
}

/// Registers a descriptor with the runtime's reactor for `interest` only.
#[allow(unsafe_code)]
fn register(fd: Arc<OwnedFd>, interest: Interest) -> io::Result<AsyncFd<Arc<OwnedFd>>> {
    // SAFETY: the AsyncFd owns an `Arc<OwnedFd>`, so the descriptor stays
    // open and names the same socket until the AsyncFd is dropped, and
    // `as_raw_fd` on it always returns that same descriptor.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|err| err.into_parts().1)
}

fn retry_eintr(mut op: impl FnMut() -> Result<usize, Errno>) -> io::Result<usize> {
    loop {
        match op() {
            Err(Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}
