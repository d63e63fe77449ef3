//! What a daemon process hands to the process that replaces it
//! (`switchboard reexec`, SIGUSR2): its listening sockets, the topics'
//! retained values and each hosted app's own state.
//!
//! Owns the format and how it crosses `execve`: a sealed memory file, whose
//! descriptor number is in `SWITCHBOARD_HANDOFF`, describes everything; the
//! sockets' descriptors (and any an app names in its state) are left open
//! across the exec. It never executes anything (the CLI does) and never
//! decides when to hand off (the host does).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use bytes::Bytes;
use rustix::io::FdFlags;
use serde::{Deserialize, Serialize};
use switchboard_proto::{Caller, Headers, PrincipalName, Topic};

use crate::listen::Inherited;
use crate::router::topics::Retained;

/// The format this build writes and reads. A successor built with another
/// refuses to start from it, so `switchboard reexec` asks the new binary
/// first (`switchboard reexec --format`).
pub const FORMAT: u32 = 1;

/// The variable naming the hand-off's descriptor in the successor.
pub const ENV: &str = "SWITCHBOARD_HANDOFF";

/// Why a hand-off could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum HandOffError {
    #[error("{ENV}={0:?} is not a descriptor number")]
    BadVariable(String),
    #[error("descriptor {fd} named in the hand-off is not open ({source})")]
    NotOpen { fd: RawFd, source: rustix::io::Errno },
    #[error("descriptor {0} is named twice in the hand-off")]
    Twice(RawFd),
    #[error("cannot read the hand-off: {0}")]
    Read(std::io::Error),
    #[error("cannot encode the hand-off: {0}")]
    Encode(String),
    #[error("the hand-off is not one this build reads: {0}")]
    Decode(String),
    #[error("the hand-off is format {found}; this build reads format {FORMAT}")]
    Format { found: u32 },
    #[error("cannot write the hand-off: {0}")]
    Write(std::io::Error),
}

/// What carries over besides the sockets.
#[derive(Debug, Default)]
pub struct Carried {
    /// How many times the daemon re-executed itself before (0 for the first).
    pub generation: u32,
    pub retained: Vec<(Topic, Retained)>,
    /// Each app's state, by app name ([`crate::host::App::hand_off`]).
    pub apps: BTreeMap<String, Bytes>,
}

/// Everything a successor takes over.
#[derive(Debug, Default)]
pub struct HandOff {
    /// Listening sockets, in the order they were served; the successor
    /// serves these instead of binding.
    pub sockets: Vec<Inherited>,
    pub carried: Carried,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    format: u32,
    generation: u32,
    sockets: Vec<WireSocket>,
    retained: Vec<WireRetained>,
    apps: BTreeMap<String, serde_bytes::ByteBuf>,
}

#[derive(Serialize, Deserialize)]
enum WireSocket {
    /// `lock` when this daemon bound the socket (it owns the files).
    Unix {
        fd: RawFd,
        lock: Option<RawFd>,
    },
    Tcp {
        fd: RawFd,
    },
    Tls {
        fd: RawFd,
    },
}

#[derive(Serialize, Deserialize)]
struct WireRetained {
    topic: String,
    headers: serde_bytes::ByteBuf,
    payload: serde_bytes::ByteBuf,
    principal: String,
    uid: u32,
    pid: u32,
}

/// A hand-off ready for `execve`: every descriptor it names is inheritable
/// until [`Prepared::take_back`].
pub struct Prepared {
    handoff: HandOff,
    memfd: OwnedFd,
}

impl HandOff {
    /// Writes the description into a sealed memory file and makes it and
    /// every socket inheritable. On failure the hand-off comes back as it was.
    pub fn prepare_exec(self) -> Result<Prepared, (HandOffError, HandOff)> {
        let memfd = match self.describe() {
            Ok(memfd) => memfd,
            Err(err) => return Err((err, self)),
        };
        let prepared = Prepared { handoff: self, memfd };
        match prepared.set_inheritable(true) {
            Ok(()) => Ok(prepared),
            Err(err) => Err((HandOffError::Write(err), prepared.take_back())),
        }
    }

    /// The description, in a sealed memory file.
    fn describe(&self) -> Result<OwnedFd, HandOffError> {
        let wire = Wire {
            format: FORMAT,
            generation: self.carried.generation,
            sockets: self.sockets.iter().map(WireSocket::of).collect(),
            retained: self.carried.retained.iter().map(WireRetained::of).collect(),
            apps: self
                .carried
                .apps
                .iter()
                .map(|(name, state)| (name.clone(), serde_bytes::ByteBuf::from(state.to_vec())))
                .collect(),
        };
        let encoded = rmp_serde::to_vec_named(&wire).map_err(|err| HandOffError::Encode(err.to_string()))?;
        write_sealed(&encoded).map_err(HandOffError::Write)
    }

    /// The hand-off a predecessor left in the environment, if any; removes
    /// the variable. Call it while this is the only thread (it edits the
    /// environment), before anything else opens descriptors.
    pub fn from_env() -> Result<Option<HandOff>, HandOffError> {
        let Some(value) = std::env::var_os(ENV) else { return Ok(None) };
        // Edition 2021: not yet `unsafe`; sound while no other thread runs.
        std::env::remove_var(ENV);
        let text = value.to_string_lossy().into_owned();
        let fd: RawFd = text.trim().parse().map_err(|_| HandOffError::BadVariable(text.clone()))?;
        Self::read(fd).map(Some)
    }

    /// Reads the hand-off described by the memory file `fd` and takes
    /// ownership of it and of every descriptor it names.
    fn read(fd: RawFd) -> Result<HandOff, HandOffError> {
        let mut taken = BTreeSet::new();
        let mut file = File::from(adopt_once(fd, &mut taken)?);
        let mut encoded = Vec::new();
        file.rewind().and_then(|()| file.read_to_end(&mut encoded)).map_err(HandOffError::Read)?;
        let wire: Wire =
            rmp_serde::from_slice(&encoded).map_err(|err| HandOffError::Decode(err.to_string()))?;
        if wire.format != FORMAT {
            return Err(HandOffError::Format { found: wire.format });
        }
        let mut sockets = Vec::with_capacity(wire.sockets.len());
        for socket in wire.sockets {
            sockets.push(match socket {
                WireSocket::Unix { fd, lock } => Inherited::Unix {
                    listener: Arc::new(adopt_once(fd, &mut taken)?.into()),
                    lock: match lock {
                        Some(lock) => Some(Arc::new(File::from(adopt_once(lock, &mut taken)?))),
                        None => None,
                    },
                },
                WireSocket::Tcp { fd } => Inherited::Tcp(Arc::new(adopt_once(fd, &mut taken)?.into())),
                WireSocket::Tls { fd } => Inherited::Tls(Arc::new(adopt_once(fd, &mut taken)?.into())),
            });
        }
        let retained = wire.retained.into_iter().filter_map(WireRetained::into_retained).collect();
        let apps = wire.apps.into_iter().map(|(name, state)| (name, Bytes::from(state.into_vec()))).collect();
        Ok(HandOff { sockets, carried: Carried { generation: wire.generation, retained, apps } })
    }
}

impl Prepared {
    /// The variable to put in the successor's environment.
    pub fn env(&self) -> (&'static str, String) {
        (ENV, self.memfd.as_raw_fd().to_string())
    }

    /// The exec did not happen: the descriptors are close-on-exec again and
    /// the hand-off can be taken over by this same process.
    pub fn take_back(self) -> HandOff {
        if let Err(err) = self.set_inheritable(false) {
            tracing::warn!("cannot make the hand-off's descriptors close-on-exec again: {err}");
        }
        self.handoff
    }

    fn set_inheritable(&self, inheritable: bool) -> std::io::Result<()> {
        set_inheritable(self.memfd.as_fd(), inheritable)?;
        for socket in &self.handoff.sockets {
            match socket {
                Inherited::Unix { listener, lock } => {
                    set_inheritable(listener.as_fd(), inheritable)?;
                    if let Some(lock) = lock {
                        set_inheritable(lock.as_fd(), inheritable)?;
                    }
                }
                Inherited::Tcp(tcp) | Inherited::Tls(tcp) => set_inheritable(tcp.as_fd(), inheritable)?,
            }
        }
        Ok(())
    }
}

impl WireSocket {
    fn of(socket: &Inherited) -> Self {
        match socket {
            Inherited::Unix { listener, lock } => {
                WireSocket::Unix { fd: listener.as_raw_fd(), lock: lock.as_ref().map(|l| l.as_raw_fd()) }
            }
            Inherited::Tcp(tcp) => WireSocket::Tcp { fd: tcp.as_raw_fd() },
            Inherited::Tls(tcp) => WireSocket::Tls { fd: tcp.as_raw_fd() },
        }
    }
}

impl WireRetained {
    fn of((topic, value): &(Topic, Retained)) -> Self {
        WireRetained {
            topic: topic.as_str().to_owned(),
            headers: serde_bytes::ByteBuf::from(value.headers.to_wire().to_vec()),
            payload: serde_bytes::ByteBuf::from(value.payload.to_vec()),
            principal: value.publisher.principal.as_str().to_owned(),
            uid: value.publisher.uid,
            pid: value.publisher.pid,
        }
    }

    /// A value whose topic or headers no longer parse is dropped (with a
    /// warning) rather than stop the successor.
    fn into_retained(self) -> Option<(Topic, Retained)> {
        let parsed = Topic::parse(&self.topic).map_err(|err| err.to_string()).and_then(|topic| {
            let headers =
                Headers::from_wire(Bytes::from(self.headers.into_vec())).map_err(|e| e.to_string())?;
            Ok((topic, headers))
        });
        match parsed {
            Ok((topic, headers)) => {
                let publisher = Caller {
                    session: 0,
                    uid: self.uid,
                    pid: self.pid,
                    principal: PrincipalName::new(&self.principal),
                };
                Some((topic, Retained { publisher, headers, payload: Bytes::from(self.payload.into_vec()) }))
            }
            Err(why) => {
                tracing::warn!(topic = %self.topic, "retained value not carried over: {why}");
                None
            }
        }
    }
}

/// Leaves `fd` open across the coming `execve` and gives up owning it: the
/// number goes into an app's hand-off state, and the successor (or this
/// process, if the exec fails) takes it back with [`adopt_fd`].
pub fn leave_open(fd: OwnedFd) -> std::io::Result<RawFd> {
    set_inheritable(fd.as_fd(), true)?;
    Ok(std::os::fd::IntoRawFd::into_raw_fd(fd))
}

/// Takes ownership of a descriptor a predecessor left open ([`leave_open`]),
/// making it close-on-exec again. Each number must be adopted once.
pub fn adopt_fd(fd: RawFd) -> Result<OwnedFd, HandOffError> {
    adopt_once(fd, &mut BTreeSet::new())
}

/// [`adopt_fd`], refusing a number already in `taken`.
#[allow(unsafe_code)]
fn adopt_once(fd: RawFd, taken: &mut BTreeSet<RawFd>) -> Result<OwnedFd, HandOffError> {
    if fd < 0 || !taken.insert(fd) {
        return Err(HandOffError::Twice(fd));
    }
    // SAFETY: fcntl(F_GETFD) on any integer is safe; it only reads flags.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(borrowed).map_err(|source| HandOffError::NotOpen { fd, source })?;
    // SAFETY: the predecessor left `fd` open for this process and nothing
    // here owns it yet: it was just checked to be open, and `taken` makes
    // sure it is wrapped once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_inheritable(owned.as_fd(), false).map_err(HandOffError::Read)?;
    Ok(owned)
}

fn set_inheritable(fd: std::os::fd::BorrowedFd<'_>, inheritable: bool) -> std::io::Result<()> {
    let flags = rustix::io::fcntl_getfd(fd)?;
    let flags = if inheritable { flags - FdFlags::CLOEXEC } else { flags | FdFlags::CLOEXEC };
    rustix::io::fcntl_setfd(fd, flags)?;
    Ok(())
}

/// A sealed memory file holding `bytes`, close-on-exec until prepared.
fn write_sealed(bytes: &[u8]) -> std::io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd =
        rustix::fs::memfd_create("switchboard-handoff", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    let mut file = File::from(fd);
    file.write_all(bytes)?;
    rustix::fs::fcntl_add_seals(
        &file,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )?;
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::fd::IntoRawFd;

    use super::*;

    fn retained(payload: &'static [u8]) -> Retained {
        let publisher =
            Caller { session: 3, uid: 1000, pid: 42, principal: PrincipalName::new("user:alice") };
        let headers = Headers::from_pairs([("trace", "abc")]).unwrap();
        Retained { publisher, headers, payload: Bytes::from_static(payload) }
    }

    #[test]
    fn what_is_described_is_read_back_and_the_descriptor_is_close_on_exec_again() {
        let carried = Carried {
            generation: 4,
            retained: vec![(Topic::parse("db.primary").unwrap(), retained(b"host-a"))],
            apps: BTreeMap::from([("supervisor".to_owned(), Bytes::from_static(b"\x00state"))]),
        };
        let prepared =
            HandOff { sockets: Vec::new(), carried }.prepare_exec().map_err(|(err, _)| err).unwrap();
        let (name, value) = prepared.env();
        assert_eq!(name, ENV);
        let fd: RawFd = value.parse().unwrap();
        let flags = rustix::io::fcntl_getfd(prepared.memfd.as_fd()).unwrap();
        assert!(!flags.contains(FdFlags::CLOEXEC), "the successor must inherit it");
        // What the successor sees: its own descriptor for the same file.
        let copy = prepared.memfd.try_clone().unwrap().into_raw_fd();
        assert_ne!(copy, fd);
        let read = HandOff::read(copy).unwrap();
        assert_eq!(read.carried.generation, 4);
        assert_eq!(&read.carried.apps["supervisor"][..], b"\x00state");
        let [(topic, value)] = &read.carried.retained[..] else { panic!("{:?}", read.carried.retained) };
        assert_eq!((topic.as_str(), &value.payload[..]), ("db.primary", &b"host-a"[..]));
        assert_eq!((value.publisher.principal.as_str(), value.publisher.uid), ("user:alice", 1000));
        assert_eq!(value.headers, retained(b"").headers);
        let handoff = prepared.take_back();
        assert_eq!(handoff.carried.generation, 4);
    }

    fn described(format: u32, sockets: Vec<WireSocket>) -> RawFd {
        let wire = Wire { format, generation: 0, sockets, retained: vec![], apps: BTreeMap::new() };
        write_sealed(&rmp_serde::to_vec_named(&wire).unwrap()).unwrap().into_raw_fd()
    }

    #[test]
    fn another_format_a_closed_descriptor_or_one_named_twice_is_refused() {
        let err = HandOff::read(described(FORMAT + 1, vec![])).unwrap_err();
        assert!(matches!(err, HandOffError::Format { found } if found == FORMAT + 1), "{err}");
        // A number nothing is open at (far above anything a test opens).
        assert!(matches!(adopt_fd(999_999), Err(HandOffError::NotOpen { fd: 999_999, .. })));
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap().into_raw_fd();
        let err = HandOff::read(described(
            FORMAT,
            vec![WireSocket::Tcp { fd: socket }, WireSocket::Tcp { fd: socket }],
        ))
        .unwrap_err();
        assert!(matches!(err, HandOffError::Twice(fd) if fd == socket), "{err}");
    }
}
