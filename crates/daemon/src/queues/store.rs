//! The durable log behind every queue: segment files of [`Record`]s.
//!
//! A batch of records is appended with one `write` and one `fdatasync`
//! (group commit): nothing is confirmed before it is on disk. The store
//! knows which segment holds each live message, so it can reclaim space:
//! a segment whose messages are all gone is deleted, and a sparse one is
//! compacted by copying its live messages forward. Declarations are written
//! again at the head of each new segment, so any old segment can go.
//!
//! Recovery replays the segments in order. A crash can tear only the tail
//! of the last segment (earlier ones were synced before the next was
//! started), so a bad record there is cut off; anywhere else it is damage
//! and the store refuses to open, naming the file and offset.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use super::record::{Record, StoredMessage};

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("queue store {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("queue store {} is damaged at byte {offset}: {why}; refusing to start", path.display())]
    Damaged { path: PathBuf, offset: u64, why: String },
}

/// Where a live message's `Put` record is.
#[derive(Debug, Clone, Copy)]
struct Location {
    segment: u64,
    offset: u64,
    len: u32,
}

#[derive(Debug, Default)]
struct Segment {
    len: u64,
    live: u32,
    live_bytes: u64,
}

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Latest options of every declared queue.
    pub declares: Vec<(String, Bytes)>,
    /// Every message not yet gone, in id order, with its attempts.
    pub messages: Vec<StoredMessage>,
    /// The first id never used.
    pub next_id: u64,
    /// Producer ids of messages that are gone but still within their
    /// duplicate window: (queue, producer id, message id, until ms).
    pub seen: Vec<(String, String, u64, u64)>,
    /// Bytes cut off a torn tail, if any.
    pub truncated: u64,
}

/// What the store knows about its segments and their live messages.
#[derive(Default)]
struct Index {
    segments: BTreeMap<u64, Segment>,
    live: HashMap<u64, (String, Location)>,
    attempts: HashMap<u64, u32>,
    declares: BTreeMap<String, Bytes>,
    /// Producer ids to keep refusing as duplicates: (queue, id) → (message, until).
    seen: HashMap<(String, String), (u64, u64)>,
}

/// The segment log.
pub struct Store {
    dir: PathBuf,
    active: File,
    active_id: u64,
    index: Index,
    roll_at: u64,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("segment-{id:016}.log"))
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Store {
    /// Opens (or creates) the store in `dir`, replaying what is there.
    /// Segments roll over at `roll_at` bytes.
    pub fn open(dir: &Path, roll_at: u64) -> Result<(Self, Recovered), StoreError> {
        // Queue data is nobody else's business: owner-only, like the socket.
        DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err(dir))?;
        let mut ids: Vec<u64> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("segment-")?.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        let mut index = Index::default();
        let mut messages: BTreeMap<u64, StoredMessage> = BTreeMap::new();
        let mut next_id = 1;
        let mut truncated = 0;
        for (position, id) in ids.iter().enumerate() {
            let last = position + 1 == ids.len();
            truncated += index.replay_segment(dir, *id, last, &mut messages, &mut next_id)?;
        }
        let active_id = ids.last().map_or(1, |id| *id);
        let path = segment_path(dir, active_id);
        let active =
            OpenOptions::new().create(true).append(true).mode(0o600).open(&path).map_err(io_err(&path))?;
        if ids.is_empty() {
            sync_dir(dir).map_err(io_err(dir))?;
            index.segments.insert(active_id, Segment::default());
        }
        for message in messages.values_mut() {
            if let Some(attempts) = index.attempts.get(&message.id) {
                message.attempts = message.attempts.max(*attempts);
            }
        }
        let recovered = Recovered {
            declares: index.declares.iter().map(|(q, o)| (q.clone(), o.clone())).collect(),
            messages: messages.into_values().collect(),
            next_id,
            seen: index
                .seen
                .iter()
                .map(|((q, d), (id, until))| (q.clone(), d.clone(), *id, *until))
                .collect(),
            truncated,
        };
        Ok((Self { dir: dir.to_owned(), active, active_id, index, roll_at }, recovered))
    }
}

impl Index {
    fn replay_segment(
        &mut self,
        dir: &Path,
        id: u64,
        last: bool,
        messages: &mut BTreeMap<u64, StoredMessage>,
        next_id: &mut u64,
    ) -> Result<u64, StoreError> {
        let path = segment_path(dir, id);
        let mut data = Vec::new();
        File::open(&path).and_then(|mut f| f.read_to_end(&mut data)).map_err(io_err(&path))?;
        let data = Bytes::from(data);
        let mut offset = 0usize;
        self.segments.insert(id, Segment::default());
        while offset < data.len() {
            match Record::decode(&data.slice(offset..)) {
                Ok((record, used)) => {
                    if let Record::Put(m) = &record {
                        *next_id = (*next_id).max(m.id + 1);
                        messages.insert(m.id, m.clone());
                    }
                    self.apply(&record, id, offset as u64, used as u32);
                    if let Record::Ack { id, .. } = &record {
                        messages.remove(id);
                    }
                    if let Record::Purge { queue } = &record {
                        messages.retain(|_, m| &m.queue != queue);
                    }
                    offset += used;
                }
                Err(err) if last => {
                    let cut = (data.len() - offset) as u64;
                    tracing::warn!(file = %path.display(), offset, cut, "cutting a torn tail off the queue log ({err})");
                    let file = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
                    file.set_len(offset as u64).map_err(io_err(&path))?;
                    file.sync_all().map_err(io_err(&path))?;
                    self.segment(id).len = offset as u64;
                    return Ok(cut);
                }
                Err(err) => {
                    return Err(StoreError::Damaged { path, offset: offset as u64, why: err.to_string() });
                }
            }
        }
        Ok(0)
    }

    fn segment(&mut self, id: u64) -> &mut Segment {
        self.segments.entry(id).or_default()
    }

    /// Updates the bookkeeping for a record written at `segment`/`offset`.
    fn apply(&mut self, record: &Record, segment: u64, offset: u64, len: u32) {
        self.segment(segment).len = offset + u64::from(len);
        match record {
            Record::Declare { queue, options } => {
                self.declares.insert(queue.clone(), options.clone());
            }
            Record::Put(m) => {
                if let Some((_, old)) =
                    self.live.insert(m.id, (m.queue.clone(), Location { segment, offset, len }))
                {
                    // Copied forward by compaction: the old copy no longer counts.
                    self.forget(old);
                }
                let seg = self.segment(segment);
                seg.live += 1;
                seg.live_bytes += u64::from(len);
                if m.attempts > 0 {
                    self.attempts.insert(m.id, m.attempts);
                }
            }
            Record::Ack { id, .. } => self.remove(*id),
            Record::Attempt { id, attempts, .. } => {
                if self.live.contains_key(id) {
                    self.attempts.insert(*id, *attempts);
                }
            }
            Record::Purge { queue } => {
                let ids: Vec<u64> =
                    self.live.iter().filter(|(_, (q, _))| q == queue).map(|(id, _)| *id).collect();
                for id in ids {
                    self.remove(id);
                }
            }
            Record::Seen { queue, dedup_id, id, until_ms } => {
                self.seen.insert((queue.clone(), dedup_id.clone()), (*id, *until_ms));
            }
        }
    }

    fn remove(&mut self, id: u64) {
        self.attempts.remove(&id);
        if let Some((_, location)) = self.live.remove(&id) {
            self.forget(location);
        }
    }

    fn forget(&mut self, location: Location) {
        let seg = self.segment(location.segment);
        seg.live = seg.live.saturating_sub(1);
        seg.live_bytes = seg.live_bytes.saturating_sub(u64::from(location.len));
    }
}

impl Store {
    /// Appends `records` and makes them durable (one write, one fdatasync).
    pub fn append(&mut self, records: &[Record]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = BytesMut::new();
        let mut placed = Vec::with_capacity(records.len());
        let base = self.index.segments.get(&self.active_id).map_or(0, |s| s.len);
        for record in records {
            let offset = base + buf.len() as u64;
            let len = record.encode(&mut buf) as u32;
            placed.push((offset, len));
        }
        self.active.write_all(&buf)?;
        self.active.sync_data()?;
        let active = self.active_id;
        for (record, (offset, len)) in records.iter().zip(placed) {
            self.index.apply(record, active, offset, len);
        }
        if self.index.segments.get(&active).is_some_and(|s| s.len >= self.roll_at) {
            self.roll()?;
        }
        Ok(())
    }

    /// Starts a new segment (headed by every declaration and every producer
    /// id still in its duplicate window), then deletes
    /// emptied segments and compacts sparse ones.
    fn roll(&mut self) -> io::Result<()> {
        let id = self.active_id + 1;
        let path = segment_path(&self.dir, id);
        self.active = OpenOptions::new().create(true).append(true).mode(0o600).open(&path)?;
        self.active_id = id;
        self.index.segments.insert(id, Segment::default());
        sync_dir(&self.dir)?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.index.seen.retain(|_, (_, until)| *until > now_ms);
        let mut head: Vec<Record> = self
            .index
            .declares
            .iter()
            .map(|(queue, options)| Record::Declare { queue: queue.clone(), options: options.clone() })
            .collect();
        head.extend(self.index.seen.iter().map(|((queue, dedup_id), (id, until_ms))| Record::Seen {
            queue: queue.clone(),
            dedup_id: dedup_id.clone(),
            id: *id,
            until_ms: *until_ms,
        }));
        self.append(&head)?;
        self.reclaim()
    }

    /// Deletes segments with nothing live; copies the live messages of
    /// sparse ones (under a quarter live) forward, then deletes them.
    fn reclaim(&mut self) -> io::Result<()> {
        let old: Vec<u64> = self.index.segments.keys().copied().filter(|id| *id != self.active_id).collect();
        for id in old {
            let Some(seg) = self.index.segments.get(&id) else { continue };
            if seg.live > 0 && seg.live_bytes * 4 >= seg.len {
                continue;
            }
            if seg.live > 0 {
                self.copy_forward(id)?;
            }
            fs::remove_file(segment_path(&self.dir, id))?;
            self.index.segments.remove(&id);
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn copy_forward(&mut self, segment: u64) -> io::Result<()> {
        let mut file = File::open(segment_path(&self.dir, segment))?;
        let mut moved = Vec::new();
        let mut entries: Vec<(u64, Location)> = self
            .index
            .live
            .iter()
            .filter(|(_, (_, l))| l.segment == segment)
            .map(|(id, (_, l))| (*id, *l))
            .collect();
        entries.sort_by_key(|(_, l)| l.offset);
        for (id, location) in entries {
            let mut raw = vec![0u8; location.len as usize];
            file.seek(SeekFrom::Start(location.offset))?;
            file.read_exact(&mut raw)?;
            let (record, _) = Record::decode(&Bytes::from(raw))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let Record::Put(mut message) = record {
                message.attempts = message.attempts.max(self.index.attempts.get(&id).copied().unwrap_or(0));
                moved.push(Record::Put(message));
            }
        }
        self.append(&moved)
    }

    /// Bytes on disk, all segments together.
    pub fn disk_bytes(&self) -> u64 {
        self.index.segments.values().map(|s| s.len).sum()
    }

    /// Messages the store holds.
    pub fn live_count(&self) -> usize {
        self.index.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(id: u64, size: usize) -> Record {
        Record::Put(StoredMessage {
            queue: "jobs".into(),
            id,
            priority: 0,
            expires_at_ms: 0,
            put_at_ms: 0,
            attempts: 0,
            dedup_id: String::new(),
            headers: Bytes::new(),
            payload: Bytes::from(vec![1u8; size]),
        })
    }

    fn ack(id: u64) -> Record {
        Record::Ack { queue: "jobs".into(), id }
    }

    #[test]
    fn what_was_appended_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut store, recovered) = Store::open(dir.path(), 1 << 20).unwrap();
            assert!(recovered.messages.is_empty());
            store.append(&[Record::Declare { queue: "jobs".into(), options: Bytes::new() }]).unwrap();
            store.append(&[put(1, 10), put(2, 10), put(3, 10)]).unwrap();
            store.append(&[ack(2), Record::Attempt { queue: "jobs".into(), id: 3, attempts: 4 }]).unwrap();
        }
        let (_, recovered) = Store::open(dir.path(), 1 << 20).unwrap();
        let ids: Vec<u64> = recovered.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 3]);
        assert_eq!(recovered.messages[1].attempts, 4);
        assert_eq!(recovered.next_id, 4);
        assert_eq!(recovered.declares.len(), 1);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_nothing_before_it_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut store, _) = Store::open(dir.path(), 1 << 20).unwrap();
            store.append(&[put(1, 100), put(2, 100)]).unwrap();
        }
        let path = segment_path(dir.path(), 1);
        let len = fs::metadata(&path).unwrap().len();
        // Half a record of garbage, as a crash mid-write leaves it.
        OpenOptions::new().append(true).open(&path).unwrap().write_all(&[9u8; 37]).unwrap();
        let (mut store, recovered) = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(recovered.messages.len(), 2);
        assert_eq!(recovered.truncated, 37);
        assert_eq!(fs::metadata(&path).unwrap().len(), len);
        store.append(&[put(3, 1)]).unwrap();
        drop(store);
        assert_eq!(Store::open(dir.path(), 1 << 20).unwrap().1.messages.len(), 3);
    }

    #[test]
    fn damage_before_the_tail_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut store, _) = Store::open(dir.path(), 200).unwrap();
            for id in 1..10 {
                store.append(&[put(id, 100)]).unwrap();
            }
        }
        let first = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&first).unwrap();
        bytes[12] ^= 0xff;
        fs::write(&first, bytes).unwrap();
        let err = Store::open(dir.path(), 200).err().expect("must refuse");
        assert!(err.to_string().contains("damaged"), "{err}");
    }

    #[test]
    fn space_is_reclaimed_after_a_large_put_ack_cycle() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path(), 64 * 1024).unwrap();
        store.append(&[Record::Declare { queue: "jobs".into(), options: Bytes::from_static(b"o") }]).unwrap();
        // One message stays unacked for the whole cycle: it must survive compaction.
        store.append(&[put(1, 1000)]).unwrap();
        for id in 2..2000 {
            store.append(&[put(id, 1000)]).unwrap();
            store.append(&[ack(id)]).unwrap();
        }
        assert!(store.disk_bytes() < 200 * 1024, "{} bytes kept for 1 live message", store.disk_bytes());
        drop(store);
        let (_, recovered) = Store::open(dir.path(), 64 * 1024).unwrap();
        assert_eq!(recovered.messages.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(recovered.declares, vec![("jobs".to_owned(), Bytes::from_static(b"o"))]);
        assert_eq!(recovered.next_id, 2000);
    }
}
