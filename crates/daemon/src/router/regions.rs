//! Named shared regions on the router: which exist, who holds each mapped,
//! and the `$sys.regions` calls that open, announce and list them. The
//! memory is the transport's [`RegionFile`]; the router hands out its
//! descriptor under the policy (`region.read`, `region.write`) and
//! publishes each announced change on `$sys.regions.NAME`.
//!
//! It never reads or writes a region's data. A region lives as long as the
//! daemon: holders come and go, the memory stays for the next one.

use std::collections::BTreeMap;

use bytes::Bytes;
use switchboard_proto::regions::{self, RegionChanged, RegionHolder, RegionInfo, RegionOpen};
use switchboard_proto::{sys, Caller, ErrorCode, Headers, PrincipalName, SessionId, Topic};
use switchboard_transport::RegionFile;

use super::Router;
use crate::policy::{Op, Principal};

type Refusal = (ErrorCode, String);

#[derive(Default)]
pub(super) struct Regions {
    by_name: BTreeMap<String, Shared>,
    /// Data bytes of every region.
    bytes: usize,
}

struct Shared {
    file: RegionFile,
    holders: Vec<Holder>,
}

struct Holder {
    session: SessionId,
    write: bool,
}

impl Regions {
    /// Forgets what a closed connection held (the regions stay).
    pub(super) fn session_closed(&mut self, session: SessionId) {
        for shared in self.by_name.values_mut() {
            shared.holders.retain(|holder| holder.session != session);
        }
    }
}

impl Router {
    /// `$sys.regions.open`: the region's descriptor, as a reply payload the
    /// session's outbox sends with it; creates the region for a writer.
    pub(super) fn open_region(&mut self, from: SessionId, open: &RegionOpen) -> Result<Bytes, Refusal> {
        let name = region_name(&open.name)?;
        let session = self.sessions.get(&from).ok_or((ErrorCode::BadRequest, "unknown connection".into()))?;
        if !session.outbox.takes_blobs() {
            let why = "regions are handed out as descriptors, and this connection takes none \
                       (a client on the Unix socket that takes blobs can open one)";
            return Err((ErrorCode::BadRequest, why.into()));
        }
        let max_size = session.rules.max_blob;
        let principal = session.caller.principal.clone();
        let size = usize::try_from(open.size).unwrap_or(usize::MAX);
        if !self.regions.by_name.contains_key(name) {
            if !open.write {
                let why = format!("no region {name} (a writer creates it, with its size)");
                return Err((ErrorCode::NoSuchRegion, why));
            }
            self.create_region(name, size, max_size, &principal)?;
        }
        let regions = &mut self.regions;
        let shared = regions.by_name.get_mut(name).ok_or((ErrorCode::NoSuchRegion, name.to_owned()))?;
        if size != 0 && size != shared.file.len() {
            let why = format!("region {name} has {} bytes, not {size}", shared.file.len());
            return Err((ErrorCode::BadArguments, why));
        }
        let grant = shared.file.grant(open.write).map_err(|err| (ErrorCode::Overloaded, err.to_string()))?;
        match shared.holders.iter_mut().find(|holder| holder.session == from) {
            Some(holder) => holder.write |= open.write,
            None => shared.holders.push(Holder { session: from, write: open.write }),
        }
        Ok(Bytes::from(grant))
    }

    fn create_region(
        &mut self,
        name: &str,
        size: usize,
        max_size: u64,
        principal: &PrincipalName,
    ) -> Result<(), Refusal> {
        if size == 0 {
            return Err((ErrorCode::BadArguments, format!("creating region {name} needs its size")));
        }
        if size as u64 > max_size {
            let why =
                format!("region {name}: {size} bytes is over {principal}'s limit of {max_size} (max_blob)");
            return Err((ErrorCode::PayloadTooLarge, why));
        }
        let regions = &mut self.regions;
        let (count, bytes) = (regions.by_name.len() + 1, regions.bytes.saturating_add(size));
        if count > self.limits.max_regions || bytes > self.limits.max_region_bytes {
            let why = format!(
                "region {name}: the daemon holds its most regions ({} regions, {} bytes)",
                self.limits.max_regions, self.limits.max_region_bytes
            );
            return Err((ErrorCode::Overloaded, why));
        }
        let file = RegionFile::create(size).map_err(|err| (ErrorCode::Overloaded, err.to_string()))?;
        tracing::info!(region = name, size, %principal, "region created");
        regions.bytes = bytes;
        regions.by_name.insert(name.to_owned(), Shared { file, holders: Vec::new() });
        Ok(())
    }

    /// `$sys.regions.changed`: a writer let go of the lock; its readers
    /// hear of the new sequence on the region's event topic.
    pub(super) fn region_changed(&mut self, from: SessionId, name: &str) -> Result<u64, Refusal> {
        let shared = self.regions.by_name.get(name).ok_or_else(|| no_region(name))?;
        if !shared.holders.iter().any(|holder| holder.session == from && holder.write) {
            let why = format!("this connection has not opened region {name} for writing");
            return Err((ErrorCode::PermissionDenied, why));
        }
        let sequence = shared.file.sequence();
        let event = RegionChanged { name: name.to_owned(), sequence };
        let topic = Topic::parse(&regions::event_topic(name))
            .map_err(|err| (ErrorCode::BadArguments, err.to_string()))?;
        let daemon =
            Caller { session: 0, uid: 0, pid: std::process::id(), principal: Principal::daemon().name };
        self.fan_out(0, daemon, topic, Headers::new(), Bytes::from(sys::encode(&event)));
        Ok(sequence)
    }

    /// `$sys.regions.list`: every region with who holds it, by name.
    pub(super) fn region_infos(&self) -> Vec<RegionInfo> {
        let holder = |h: &Holder| {
            let session = self.sessions.get(&h.session);
            RegionHolder {
                principal: session.map(|s| s.caller.principal.to_string()).unwrap_or_default(),
                pid: session.map_or(0, |s| s.caller.pid),
                session: h.session,
                write: h.write,
            }
        };
        let info = |(name, shared): (&String, &Shared)| RegionInfo {
            name: name.clone(),
            size: shared.file.len() as u64,
            sequence: shared.file.sequence(),
            holders: shared.holders.iter().map(holder).collect(),
        };
        self.regions.by_name.iter().map(info).collect()
    }

    /// Whether `from` may subscribe to `pattern` because it is a region's
    /// event topic and `from` may read that region.
    pub(super) fn reads_region_events(&self, from: SessionId, pattern: &str) -> bool {
        let Some(name) = pattern.strip_prefix(regions::REGION_EVENTS) else { return false };
        let Some(session) = self.sessions.get(&from) else { return false };
        Topic::parse(name).is_ok()
            && (session.rules.permits(Op::RegionRead, name) || session.rules.permits(Op::RegionWrite, name))
    }
}

/// `name` if it is a region's name: dotted tokens, as a topic's, and not `$`.
fn region_name(name: &str) -> Result<&str, Refusal> {
    match Topic::parse(name) {
        Ok(_) if !name.starts_with('$') => Ok(name),
        Ok(_) => Err((ErrorCode::BadArguments, format!("region names may not start with $: {name:?}"))),
        Err(err) => Err((ErrorCode::BadArguments, format!("region name: {err}"))),
    }
}

fn no_region(name: &str) -> Refusal {
    (ErrorCode::NoSuchRegion, format!("no region {name}"))
}
