//! Named shared regions on the client side: opening one through the daemon
//! (which hands out its descriptor under the policy), writing under its
//! lock and announcing the change, reading consistent copies, and waiting
//! for the next change on the region's event topic instead of polling.
//!
//! The mapping, the lock and the sequence are the transport's
//! ([`switchboard_transport::Region`]); this module owns how they meet the
//! bus. It never holds the lock across an `.await`.

use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::regions::{self, RegionChanged, RegionInfo, RegionOpen, RegionRef};
use switchboard_proto::sys;
use switchboard_transport::region::{Region as Mapped, RegionGrant};
pub use switchboard_transport::RegionGuard;

use crate::topics::{Item, SubscribeError, Subscription};
use crate::{Bus, CallError};

/// Why a region could not be opened, locked, read or watched.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("watching the region: {0}")]
    Subscribe(#[from] SubscribeError),
    #[error(transparent)]
    Shared(#[from] switchboard_transport::RegionError),
    #[error("the daemon's reply carried no region descriptor (is this connection on the Unix socket?)")]
    NoDescriptor,
    #[error("the bus closed while waiting for a change")]
    Closed,
}

/// A named shared region, mapped: writable with its lock if opened with
/// [`Bus::region`], read-only if with [`Bus::region_reader`].
pub struct Region {
    name: String,
    mapped: Mapped,
    bus: Bus,
    /// The event topic's subscription, made on the first wait.
    events: tokio::sync::Mutex<Option<Subscription>>,
}

impl Bus {
    /// Opens region `name` writable, creating it with `size` data bytes
    /// (zero-filled) if it does not exist yet (`region.write NAME`). `size`
    /// 0 opens an existing one at its size. The region outlives this
    /// process: it lives as long as the daemon.
    pub async fn region(&self, name: &str, size: usize) -> Result<Region, RegionError> {
        self.open_region(name, size, true).await
    }

    /// Opens region `name` read-only (`region.read NAME`): the mapping
    /// cannot be written, and the lock cannot be taken.
    pub async fn region_reader(&self, name: &str) -> Result<Region, RegionError> {
        self.open_region(name, 0, false).await
    }

    /// Every region, with its sequence and who holds it mapped.
    pub async fn regions(&self) -> Result<Vec<RegionInfo>, CallError> {
        self.sys_call(regions::REGIONS_SERVICE, regions::REGIONS_LIST).await
    }

    async fn open_region(&self, name: &str, size: usize, write: bool) -> Result<Region, RegionError> {
        let open = RegionOpen { name: name.to_owned(), size: size as u64, write };
        let target = format!("{}.{}", regions::REGIONS_SERVICE, regions::REGIONS_OPEN);
        let reply = self.call(&target, Bytes::from(sys::encode(&open))).await?;
        let grant = RegionGrant::of(&reply).ok_or(RegionError::NoDescriptor)?;
        let fd = grant.fd().try_clone_to_owned().map_err(switchboard_transport::RegionError::Map)?;
        let mapped = Mapped::open(fd, grant.file_len())?;
        Ok(Region { name: name.to_owned(), mapped, bus: self.clone(), events: tokio::sync::Mutex::new(None) })
    }
}

impl Region {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its data bytes.
    pub fn len(&self) -> usize {
        self.mapped.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mapped.is_empty()
    }

    /// Whether it was opened writable.
    pub fn is_writable(&self) -> bool {
        self.mapped.is_writable()
    }

    /// The current sequence: even while nobody holds the lock, odd while a
    /// writer does; each write moves it on by two.
    pub fn sequence(&self) -> u64 {
        self.mapped.sequence()
    }

    /// Takes the lock, blocking this thread while another process holds it.
    /// [`RegionGuard::previous_owner_died`] tells whether the last holder
    /// died holding it (its write may be half done). Drop the guard, then
    /// [`Region::announce`], so readers waiting in [`Region::changed`] wake.
    pub fn lock(&self) -> Result<RegionGuard<'_>, RegionError> {
        Ok(self.mapped.lock()?)
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> Result<Option<RegionGuard<'_>>, RegionError> {
        Ok(self.mapped.try_lock()?)
    }

    /// Takes the lock, waiting at most `timeout`.
    pub fn lock_for(&self, timeout: Duration) -> Result<Option<RegionGuard<'_>>, RegionError> {
        Ok(self.mapped.lock_for(timeout)?)
    }

    /// Tells the region's readers it changed: the daemon publishes the
    /// current sequence on `$sys.regions.NAME`. Returns that sequence.
    pub async fn announce(&self) -> Result<u64, RegionError> {
        let target = format!("{}.{}", regions::REGIONS_SERVICE, regions::REGIONS_CHANGED);
        let args = RegionRef { name: self.name.clone() };
        let reply = self.bus.call(&target, Bytes::from(sys::encode(&args))).await?;
        sys::decode(&reply).map_err(|err| RegionError::Call(CallError::Decode(err.to_string())))
    }

    /// Writes with `write` under the lock, lets go, and announces the
    /// change; returns what `write` returned. Taking the lock blocks this
    /// thread while another writer holds it.
    pub async fn write<R>(&self, write: impl FnOnce(&mut [u8]) -> R) -> Result<R, RegionError> {
        let result = {
            let mut guard = self.lock()?;
            write(&mut guard)
        };
        self.announce().await?;
        Ok(result)
    }

    /// A consistent copy of its data (no writer was midway through it), with
    /// the sequence it is from.
    pub fn read(&self) -> Result<(u64, Vec<u8>), RegionError> {
        let mut bytes = vec![0; self.len()];
        let sequence = self.read_into(&mut bytes)?;
        Ok((sequence, bytes))
    }

    /// Copies the first `buf.len()` data bytes, consistently; returns the
    /// sequence they are from.
    pub fn read_into(&self, buf: &mut [u8]) -> Result<u64, RegionError> {
        Ok(self.mapped.read_into(buf)?)
    }

    /// Waits until a change past sequence `seen` was announced, and returns
    /// the sequence now (at once if it already moved past `seen`).
    pub async fn changed(&self, seen: u64) -> Result<u64, RegionError> {
        let mut events = self.events.lock().await;
        if events.is_none() {
            *events = Some(self.bus.subscribe(&regions::event_topic(&self.name)).await?);
        }
        loop {
            let now = self.sequence();
            if now > seen && now.is_multiple_of(2) {
                return Ok(now);
            }
            let subscription = events.as_mut().ok_or(RegionError::Closed)?;
            match subscription.next().await {
                Some(Item::Message(message)) => {
                    if let Ok(event) = sys::decode::<RegionChanged>(&message.payload) {
                        if event.sequence > seen {
                            return Ok(event.sequence.max(self.sequence() & !1));
                        }
                    }
                }
                Some(Item::Lagged(_)) => {}
                None => return Err(RegionError::Closed),
            }
        }
    }
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region").field("name", &self.name).field("len", &self.len()).finish()
    }
}
