//! The durable log behind every queue: segment files of [`Record`]s.
//!
//! A batch of records is appended with one `write` and one `fdatasync`
//! (group commit): nothing is confirmed before it is on disk. The store
//! knows which segment holds each live message ([`Index`]), so it can
//! reclaim space: a segment whose messages are all gone is deleted, and a
//! sparse one is compacted by copying its live messages forward. Before a
//! segment goes, the removals and attempt counts it holds for puts kept in
//! other segments are written forward too, so nothing acknowledged comes
//! back. Declarations and producer ids still in their duplicate window head
//! each new segment; a head never counts toward rolling over, so heads
//! cannot make the store roll on every append.
//!
//! The store fails closed: when a write or an `fdatasync` fails, the file
//! is cut back to the last record known durable and the batch is reported
//! failed; until the cut succeeds, every append is refused. A failed batch
//! is never half-applied to the index.
//!
//! Recovery replays the segments in order. A crash can tear only the tail
//! of the last segment (earlier ones were synced before the next was
//! started), so a bad record there is cut off; anywhere else it is damage
//! and the store refuses to open, naming the file and offset.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use super::index::{Index, Segment};
use super::record::{Record, StoredMessage};

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("queue store {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("queue store {} is damaged at byte {offset}: {why}; refusing to start", path.display())]
    Damaged { path: PathBuf, offset: u64, why: String },
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

/// The segment log.
pub struct Store {
    dir: PathBuf,
    active: File,
    active_id: u64,
    index: Index,
    roll_at: u64,
    /// A failed write left bytes past the last durable record that could
    /// not be cut off yet: nothing more is written until they are.
    dirty: bool,
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

fn open_segment(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Encodes `records`; returns the bytes and each record's (offset, len)
/// relative to the start of the buffer.
fn encode(records: &[Record]) -> (BytesMut, Vec<(u64, u32)>) {
    let mut buf = BytesMut::new();
    let mut placed = Vec::with_capacity(records.len());
    for record in records {
        let offset = buf.len() as u64;
        let len = record.encode(&mut buf) as u32;
        placed.push((offset, len));
    }
    (buf, placed)
}

fn is_head(record: &Record) -> bool {
    matches!(record, Record::Declare { .. } | Record::Seen { .. })
}

impl Store {
    /// Opens (or creates) the store in `dir`, replaying what is there.
    /// Segments roll over once `roll_at` bytes follow their head.
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
        let mut replay = Replay { index: Index::default(), messages: BTreeMap::new(), next_id: 1 };
        let mut truncated = 0;
        for (position, id) in ids.iter().enumerate() {
            let last = position + 1 == ids.len();
            truncated += replay.segment(dir, *id, last)?;
        }
        let Replay { mut index, mut messages, next_id } = replay;
        let active_id = ids.last().map_or(1, |id| *id);
        let path = segment_path(dir, active_id);
        let active = open_segment(&path).map_err(io_err(&path))?;
        if ids.is_empty() {
            sync_dir(dir).map_err(io_err(dir))?;
            index.segments.insert(active_id, Segment::default());
        }
        for message in messages.values_mut() {
            message.attempts = message.attempts.max(index.attempts_of(message.id));
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
        let store = Self { dir: dir.to_owned(), active, active_id, index, roll_at, dirty: false };
        Ok((store, recovered))
    }
}

/// Recovery's working state.
struct Replay {
    index: Index,
    messages: BTreeMap<u64, StoredMessage>,
    next_id: u64,
}

impl Replay {
    /// Replays one segment; returns the bytes cut off its torn tail.
    fn segment(&mut self, dir: &Path, id: u64, last: bool) -> Result<u64, StoreError> {
        let path = segment_path(dir, id);
        let mut data = Vec::new();
        File::open(&path).and_then(|mut f| f.read_to_end(&mut data)).map_err(io_err(&path))?;
        let data = Bytes::from(data);
        let mut offset = 0usize;
        let mut in_head = true;
        self.index.segments.insert(id, Segment::default());
        while offset < data.len() {
            match Record::decode(&data.slice(offset..)) {
                Ok((record, used)) => {
                    self.record(&record);
                    self.index.apply(&record, id, offset as u64, used as u32);
                    offset += used;
                    in_head &= is_head(&record);
                    if in_head {
                        self.index.segment(id).head_len = offset as u64;
                    }
                }
                Err(err) if last => {
                    let cut = (data.len() - offset) as u64;
                    tracing::warn!(file = %path.display(), offset, cut, "cutting a torn tail off the queue log ({err})");
                    let file = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
                    file.set_len(offset as u64).map_err(io_err(&path))?;
                    file.sync_all().map_err(io_err(&path))?;
                    self.index.segment(id).len = offset as u64;
                    return Ok(cut);
                }
                Err(err) => {
                    return Err(StoreError::Damaged { path, offset: offset as u64, why: err.to_string() });
                }
            }
        }
        Ok(0)
    }

    fn record(&mut self, record: &Record) {
        match record {
            Record::Put(m) => {
                self.next_id = self.next_id.max(m.id.saturating_add(1));
                self.messages.insert(m.id, m.clone());
            }
            Record::Ack { id, .. } => {
                self.messages.remove(id);
            }
            Record::Purge { queue } => self.messages.retain(|_, m| &m.queue != queue),
            Record::Declare { .. } | Record::Attempt { .. } | Record::Seen { .. } | Record::Delete { .. } => {
            }
        }
    }
}

impl Store {
    /// Appends `records` and makes them durable (one write, one fdatasync).
    /// On error nothing of the batch counts as written.
    pub fn append(&mut self, records: &[Record]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.write(records)?;
        if self.index.segments.get(&self.active_id).is_some_and(|s| s.body_len() >= self.roll_at) {
            // The batch is durable whatever happens here; a roll that fails
            // is tried again after the next append.
            if let Err(err) = self.roll() {
                tracing::warn!("queue store could not start a new segment (will retry): {err}");
            }
        }
        Ok(())
    }

    /// Writes and syncs `records` at the end of the active segment and
    /// indexes them, or cuts the file back and reports the error.
    fn write(&mut self, records: &[Record]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let good = self.index.segments.get(&self.active_id).map_or(0, |s| s.len);
        if self.dirty {
            self.cut_back(good).map_err(|err| {
                io::Error::new(err.kind(), format!("the store is still failed after an earlier error: {err}"))
            })?;
        }
        let (buf, placed) = encode(records);
        if let Err(err) = self.active.write_all(&buf).and_then(|()| self.active.sync_data()) {
            // What reached the file may be partial or not durable: cut it
            // off, so later offsets stay right and nothing unconfirmed
            // is replayed.
            if let Err(cut) = self.cut_back(good) {
                tracing::error!("queue store could not cut back a failed write: {cut}");
            }
            return Err(err);
        }
        let active = self.active_id;
        for (record, (offset, len)) in records.iter().zip(placed) {
            self.index.apply(record, active, good + offset, len);
        }
        Ok(())
    }

    fn cut_back(&mut self, good: u64) -> io::Result<()> {
        self.dirty = true;
        self.active.set_len(good)?;
        self.active.sync_data()?;
        self.dirty = false;
        Ok(())
    }

    /// Starts a new segment headed by every declaration and every producer
    /// id still in its duplicate window, then deletes emptied segments and
    /// compacts sparse ones. The head is durable before the segment is used.
    fn roll(&mut self) -> io::Result<()> {
        self.index.seen.retain(|_, (_, until)| *until > now_ms());
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
        let id = self.active_id + 1;
        let path = segment_path(&self.dir, id);
        let (buf, placed) = encode(&head);
        let started = open_segment(&path).and_then(|mut file| {
            file.set_len(0)?;
            file.write_all(&buf)?;
            file.sync_data()?;
            sync_dir(&self.dir)?;
            Ok(file)
        });
        let file = match started {
            Ok(file) => file,
            Err(err) => {
                let _ = fs::remove_file(&path);
                return Err(err);
            }
        };
        self.active = file;
        self.active_id = id;
        self.index.segments.insert(id, Segment { head_len: buf.len() as u64, ..Segment::default() });
        for (record, (offset, len)) in head.iter().zip(placed) {
            self.index.apply(record, id, offset, len);
        }
        self.reclaim()
    }

    /// Deletes segments with nothing live; copies the live messages of
    /// sparse ones (under a quarter live) forward, then deletes them. What a
    /// deleted segment says about puts kept elsewhere is written forward first.
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
            let carried = self.index.carried_by(id);
            if !carried.is_empty() {
                self.write(&carried)?;
            }
            fs::remove_file(segment_path(&self.dir, id))?;
            sync_dir(&self.dir)?;
            self.index.drop_segment(id);
        }
        Ok(())
    }

    fn copy_forward(&mut self, segment: u64) -> io::Result<()> {
        let mut file = File::open(segment_path(&self.dir, segment))?;
        let mut moved = Vec::new();
        for (id, location) in self.index.live_in(segment) {
            let mut raw = vec![0u8; location.len as usize];
            file.seek(SeekFrom::Start(location.offset))?;
            file.read_exact(&mut raw)?;
            let (record, _) = Record::decode(&Bytes::from(raw))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let Record::Put(mut message) = record {
                message.attempts = message.attempts.max(self.index.attempts_of(id));
                moved.push(Record::Put(message));
            }
        }
        self.write(&moved)
    }

    /// Bytes on disk, all segments together.
    pub fn disk_bytes(&self) -> u64 {
        self.index.segments.values().map(|s| s.len).sum()
    }

    /// Messages the store holds.
    pub fn live_count(&self) -> usize {
        self.index.live_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queues::record::test_put;

    fn put(id: u64, size: usize) -> Record {
        test_put("jobs", id, size)
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

    /// Issue 12, defect 1, at the store's level: acks written in segments
    /// that held no live put were deleted with them, and the older puts
    /// they removed came back on replay.
    #[test]
    fn acks_outlive_the_segments_they_were_written_in() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut store, _) = Store::open(dir.path(), 8 * 1024).unwrap();
            for id in 1..=16 {
                store.append(&[put(id, 1000)]).unwrap();
            }
            for id in 1..=6 {
                store.append(&[ack(id)]).unwrap();
            }
            for id in 100..400 {
                store.append(&[other(id, 1000)]).unwrap();
                store.append(&[Record::Ack { queue: "other".into(), id }]).unwrap();
            }
        }
        let (_, recovered) = Store::open(dir.path(), 8 * 1024).unwrap();
        let ids: Vec<u64> = recovered.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, (7..=16).collect::<Vec<u64>>());
    }

    fn other(id: u64, size: usize) -> Record {
        test_put("other", id, size)
    }

    #[test]
    fn heads_never_roll_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path(), 4096).unwrap();
        // A head far larger than a segment: 200 producer ids of 256 bytes.
        let far = now_ms() + 3_600_000;
        let seen: Vec<Record> = (0..200)
            .map(|n| Record::Seen {
                queue: "jobs".into(),
                dedup_id: format!("{n:0>256}"),
                id: n,
                until_ms: far,
            })
            .collect();
        store.append(&seen).unwrap();
        for id in 1..=20 {
            store.append(&[put(id, 10)]).unwrap();
        }
        let segments = fs::read_dir(dir.path()).unwrap().count();
        assert!(segments <= 2, "{segments} segments for 20 tiny puts");
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
