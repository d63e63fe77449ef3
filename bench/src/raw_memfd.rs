//! The limit a blob is measured against: a memory file made, filled, passed
//! and mapped with bare system calls, nothing of Switchboard's. The one
//! module of the bench with `unsafe` (mapping memory).
#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::fs::MemfdFlags;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};

/// A memory file of `len` bytes, every one `mark` (written once, through a
/// mapping that is gone when this returns; its pages populated in one call,
/// as a blob's are).
pub fn filled(len: usize, mark: u8) -> anyhow::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create("bench-limit", MemfdFlags::CLOEXEC)?;
    rustix::fs::ftruncate(&fd, len as u64)?;
    // SAFETY: a fresh shared mapping of a file of exactly `len` bytes that
    // only this process holds; written through the slice below and unmapped
    // before the descriptor leaves.
    unsafe {
        let ptr = rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED | MapFlags::POPULATE,
            &fd,
            0,
        )?;
        std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len).fill(mark);
        rustix::mm::munmap(ptr, len)?;
    }
    Ok(fd)
}

/// The first and last of `len` bytes of a memory file, read through a
/// read-only mapping.
pub fn first_and_last(fd: &OwnedFd, len: usize) -> anyhow::Result<(u8, u8)> {
    // SAFETY: a fresh read-only mapping of `len` bytes of a file at least
    // that long (the bench made it so, and nobody shrinks it); read twice
    // and unmapped.
    unsafe {
        let ptr = rustix::mm::mmap(std::ptr::null_mut(), len, ProtFlags::READ, MapFlags::SHARED, fd, 0)?;
        let bytes = std::slice::from_raw_parts(ptr.cast::<u8>(), len);
        let ends = (bytes[0], bytes[len - 1]);
        rustix::mm::munmap(ptr, len)?;
        Ok(ends)
    }
}

/// Sends `fd` with one byte over `stream`.
pub fn send_fd(stream: &UnixStream, fd: BorrowedFd<'_>) -> anyhow::Result<()> {
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(stream.as_fd(), &[std::io::IoSlice::new(&[1])], &mut control, SendFlags::NOSIGNAL)?;
    Ok(())
}

/// Receives one descriptor (with its byte) from `stream`.
pub fn recv_fd(stream: &UnixStream) -> anyhow::Result<OwnedFd> {
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let received = rustix::net::recvmsg(
        stream.as_fd(),
        &mut [std::io::IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    anyhow::ensure!(received.bytes == 1, "the peer closed the socket");
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    anyhow::bail!("a byte came without a descriptor")
}
