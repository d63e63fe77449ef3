//! What the store knows about its segments: where each live message's `Put`
//! is, and which removals must outlive the segment they were written in.
//!
//! Pure bookkeeping: it never touches a file. The rule it exists to keep:
//! a segment may be forgotten only once nothing a replay needs is in it. A
//! segment's live puts are copied forward before it goes; so are its
//! *tombstones* — the acks (and purges, as one ack per message) and attempt
//! counts that describe puts still on disk in other segments. Without them
//! those older puts would come back on restart, acknowledged messages
//! resurrected (issue 12, defect 1).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::record::Record;

/// Where a `Put` record is.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

/// One segment file's size and how much of it is still live.
#[derive(Debug, Default)]
pub struct Segment {
    pub len: u64,
    /// Bytes of the head (declarations and producer ids) at its start; a
    /// head never counts toward rolling over.
    pub head_len: u64,
    pub live: u32,
    pub live_bytes: u64,
}

impl Segment {
    /// Bytes written after the head.
    pub fn body_len(&self) -> u64 {
        self.len.saturating_sub(self.head_len)
    }
}

/// A live message: its queue, its current `Put`, and every segment that
/// still holds a copy of that `Put` (a crash between copying forward and
/// deleting the old segment leaves two).
#[derive(Debug)]
struct Live {
    queue: String,
    at: Location,
    copies: Vec<u64>,
}

/// A removed message whose `Put` is still on disk somewhere: the segment
/// holding its removal must not go without carrying the removal forward.
#[derive(Debug)]
struct Tomb {
    queue: String,
    copies: Vec<u64>,
    removed_in: u64,
}

/// The store's bookkeeping.
#[derive(Default)]
pub struct Index {
    pub segments: BTreeMap<u64, Segment>,
    live: HashMap<u64, Live>,
    /// Latest attempt count of live messages, and the segment whose record says so.
    attempts: HashMap<u64, (u32, u64)>,
    tombs: HashMap<u64, Tomb>,
    pub declares: BTreeMap<String, Bytes>,
    /// Deleted queues → the segment whose `Delete` record says so; kept
    /// while an older segment may still declare them.
    deleted: HashMap<String, u64>,
    /// Producer ids to keep refusing as duplicates: (queue, id) → (message, until).
    pub seen: HashMap<(String, String), (u64, u64)>,
}

impl Index {
    pub fn segment(&mut self, id: u64) -> &mut Segment {
        self.segments.entry(id).or_default()
    }

    /// Updates the bookkeeping for a record written at `segment`/`offset`.
    pub fn apply(&mut self, record: &Record, segment: u64, offset: u64, len: u32) {
        self.segment(segment).len = offset + u64::from(len);
        match record {
            Record::Declare { queue, options } => {
                self.declares.insert(queue.clone(), options.clone());
                self.deleted.remove(queue);
            }
            Record::Delete { queue } => {
                self.declares.remove(queue);
                self.seen.retain(|(q, _), _| q != queue);
                self.deleted.insert(queue.clone(), segment);
            }
            Record::Put(m) => {
                let at = Location { segment, offset, len };
                let mut copies = vec![segment];
                if let Some(old) = self.live.remove(&m.id) {
                    // Copied forward: the old copy no longer counts as live,
                    // but stays a copy until its segment is deleted.
                    self.forget(old.at);
                    copies.extend(old.copies.into_iter().filter(|c| *c != segment));
                }
                self.live.insert(m.id, Live { queue: m.queue.clone(), at, copies });
                let seg = self.segment(segment);
                seg.live += 1;
                seg.live_bytes += u64::from(len);
                if m.attempts > 0 {
                    self.attempts.insert(m.id, (m.attempts, segment));
                }
            }
            Record::Ack { id, .. } => self.remove(*id, segment),
            Record::Attempt { id, attempts, .. } => {
                if self.live.contains_key(id) {
                    self.attempts.insert(*id, (*attempts, segment));
                }
            }
            Record::Purge { queue } => {
                let ids: Vec<u64> =
                    self.live.iter().filter(|(_, l)| &l.queue == queue).map(|(id, _)| *id).collect();
                for id in ids {
                    self.remove(id, segment);
                }
            }
            Record::Seen { queue, dedup_id, id, until_ms } => {
                self.seen.insert((queue.clone(), dedup_id.clone()), (*id, *until_ms));
            }
        }
    }

    fn remove(&mut self, id: u64, removed_in: u64) {
        self.attempts.remove(&id);
        if let Some(live) = self.live.remove(&id) {
            self.forget(live.at);
            self.tombs.insert(id, Tomb { queue: live.queue, copies: live.copies, removed_in });
        } else if let Some(tomb) = self.tombs.get_mut(&id) {
            // A removal carried forward: the newer record is the one to keep.
            tomb.removed_in = removed_in;
        }
    }

    fn forget(&mut self, location: Location) {
        let seg = self.segment(location.segment);
        seg.live = seg.live.saturating_sub(1);
        seg.live_bytes = seg.live_bytes.saturating_sub(u64::from(location.len));
    }

    /// The live messages whose current `Put` is in `segment`, in file order.
    pub fn live_in(&self, segment: u64) -> Vec<(u64, Location)> {
        let mut entries: Vec<(u64, Location)> =
            self.live.iter().filter(|(_, l)| l.at.segment == segment).map(|(id, l)| (*id, l.at)).collect();
        entries.sort_by_key(|(_, l)| l.offset);
        entries
    }

    /// The latest attempt count known for a live message.
    pub fn attempts_of(&self, id: u64) -> u32 {
        self.attempts.get(&id).map_or(0, |(n, _)| *n)
    }

    /// The records in `segment` that a replay still needs once it is gone:
    /// removals of puts that other segments still hold, and attempt counts
    /// of live messages written nowhere else. Call after its live puts
    /// were copied forward.
    pub fn carried_by(&self, segment: u64) -> Vec<Record> {
        let held_elsewhere =
            |copies: &[u64]| copies.iter().any(|c| *c != segment && self.segments.contains_key(c));
        let mut records: Vec<Record> = self
            .tombs
            .iter()
            .filter(|(_, t)| t.removed_in == segment && held_elsewhere(&t.copies))
            .map(|(id, t)| Record::Ack { queue: t.queue.clone(), id: *id })
            .collect();
        let older_exists = self.segments.keys().any(|s| *s < segment);
        records.extend(
            self.deleted
                .iter()
                .filter(|(_, at)| **at == segment && older_exists)
                .map(|(queue, _)| Record::Delete { queue: queue.clone() }),
        );
        records.extend(self.attempts.iter().filter(|(_, (_, at))| *at == segment).filter_map(
            |(id, (attempts, _))| {
                let live = self.live.get(id)?;
                Some(Record::Attempt { queue: live.queue.clone(), id: *id, attempts: *attempts })
            },
        ));
        records
    }

    /// `segment` is deleted: forget it, and every tombstone whose last copy it held.
    pub fn drop_segment(&mut self, segment: u64) {
        self.segments.remove(&segment);
        self.tombs.retain(|_, t| {
            t.copies.retain(|c| *c != segment);
            !t.copies.is_empty()
        });
        for live in self.live.values_mut() {
            live.copies.retain(|c| *c != segment);
        }
        let oldest = self.segments.keys().next().copied().unwrap_or(u64::MAX);
        self.deleted.retain(|_, at| *at > oldest);
    }

    /// Messages the store holds.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// Acknowledged messages whose put is still on disk (for tests and
    /// diagnostics: they bound how much a replay reads for nothing).
    pub fn tomb_count(&self) -> usize {
        self.tombs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queues::record::test_put;

    fn put(id: u64) -> Record {
        test_put("jobs", id, 0)
    }

    fn ack(id: u64) -> Record {
        Record::Ack { queue: "jobs".into(), id }
    }

    #[test]
    fn an_ack_for_a_put_in_an_older_segment_is_carried() {
        let mut index = Index::default();
        index.apply(&put(1), 1, 0, 10);
        index.apply(&put(2), 1, 10, 10);
        index.apply(&ack(1), 2, 0, 10);
        assert_eq!(index.carried_by(2), vec![ack(1)]);
        // Once the put's segment is gone, nothing needs the ack.
        index.drop_segment(1);
        assert!(index.carried_by(2).is_empty());
        assert_eq!(index.tomb_count(), 0);
    }

    #[test]
    fn an_ack_in_the_same_segment_as_its_put_is_not_carried() {
        let mut index = Index::default();
        index.apply(&put(1), 1, 0, 10);
        index.apply(&ack(1), 1, 10, 10);
        assert!(index.carried_by(1).is_empty());
    }

    #[test]
    fn a_purge_is_carried_as_one_ack_per_message() {
        let mut index = Index::default();
        index.apply(&put(1), 1, 0, 10);
        index.apply(&put(2), 1, 10, 10);
        index.apply(&Record::Purge { queue: "jobs".into() }, 2, 0, 10);
        let mut carried = index.carried_by(2);
        carried.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(carried, vec![ack(1), ack(2)]);
    }

    #[test]
    fn a_carried_ack_moves_with_its_new_record() {
        let mut index = Index::default();
        index.apply(&put(1), 1, 0, 10);
        index.apply(&ack(1), 2, 0, 10);
        index.apply(&ack(1), 3, 0, 10);
        index.drop_segment(2);
        assert!(index.carried_by(2).is_empty());
        assert_eq!(index.carried_by(3), vec![ack(1)]);
    }

    #[test]
    fn a_put_copied_forward_keeps_the_old_copy_until_its_segment_goes() {
        let mut index = Index::default();
        index.apply(&put(1), 1, 0, 10);
        index.apply(&put(1), 3, 0, 10);
        assert_eq!(index.segments[&1].live, 0, "segment 1's copy no longer counts as live");
        index.apply(&ack(1), 4, 0, 10);
        assert_eq!(index.carried_by(4), vec![ack(1)]);
        index.drop_segment(1);
        assert_eq!(index.carried_by(4), vec![ack(1)], "segment 3 still holds a copy");
        index.drop_segment(3);
        assert!(index.carried_by(4).is_empty());
    }

    #[test]
    fn a_delete_is_carried_while_an_older_segment_may_declare_the_queue() {
        let mut index = Index::default();
        let declare = Record::Declare { queue: "jobs".into(), options: Bytes::new() };
        let delete = Record::Delete { queue: "jobs".into() };
        index.apply(&declare, 1, 0, 10);
        index.apply(&delete, 2, 0, 10);
        assert!(index.declares.is_empty());
        assert_eq!(index.carried_by(2), vec![delete.clone()]);
        index.apply(&delete, 3, 0, 10);
        index.drop_segment(2);
        assert_eq!(index.carried_by(3), vec![delete]);
        index.drop_segment(1);
        assert!(index.carried_by(3).is_empty(), "nothing older declares it any more");
    }

    #[test]
    fn attempts_written_in_a_segment_are_carried_for_live_messages() {
        let mut index = Index::default();
        index.apply(&put(1), 1, 0, 10);
        index.apply(&Record::Attempt { queue: "jobs".into(), id: 1, attempts: 3 }, 2, 0, 10);
        assert_eq!(index.carried_by(2), vec![Record::Attempt { queue: "jobs".into(), id: 1, attempts: 3 }]);
        index.apply(&ack(1), 3, 0, 10);
        assert!(index.carried_by(2).is_empty(), "no attempt count is carried for a removed message");
    }
}
