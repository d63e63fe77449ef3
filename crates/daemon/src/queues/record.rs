//! What the queue store writes: one record per durable change, each framed
//! as `len:u32le crc32:u32le type:u8 body` so a torn or corrupt tail is
//! detected on replay and never mistaken for data.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A message as it is kept on disk and in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub queue: String,
    pub id: u64,
    pub priority: u8,
    /// Wall-clock milliseconds since the epoch; 0 = never expires.
    pub expires_at_ms: u64,
    pub put_at_ms: u64,
    /// Deliveries so far.
    pub attempts: u32,
    /// Producer's id for duplicate suppression; empty = none.
    pub dedup_id: String,
    /// Headers in wire form.
    pub headers: Bytes,
    pub payload: Bytes,
}

/// One durable change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A queue exists with these options (MessagePack).
    Declare {
        queue: String,
        options: Bytes,
    },
    Put(StoredMessage),
    /// The message is gone: acknowledged, dead-lettered, dropped or purged.
    Ack {
        queue: String,
        id: u64,
    },
    /// The message has been delivered this many times.
    Attempt {
        queue: String,
        id: u64,
        attempts: u32,
    },
    /// Every message of the queue is gone.
    Purge {
        queue: String,
    },
    /// The queue no longer exists (it was empty when deleted).
    Delete {
        queue: String,
    },
    /// A message with this producer id existed (it may be gone now): a
    /// retry with the same id until `until_ms` is a duplicate of `id`.
    Seen {
        queue: String,
        dedup_id: String,
        id: u64,
        until_ms: u64,
    },
}

const DECLARE: u8 = 1;
const PUT: u8 = 2;
const ACK: u8 = 3;
const ATTEMPT: u8 = 4;
const PURGE: u8 = 5;
const SEEN: u8 = 6;
const DELETE: u8 = 7;

/// Bytes of the frame header (`len` + `crc`).
pub const HEADER: usize = 8;

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("truncated record")]
    Truncated,
    #[error("checksum mismatch")]
    Checksum,
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

fn put_str(out: &mut BytesMut, s: &str) {
    let bytes = s.as_bytes();
    out.put_u16_le(bytes.len().min(u16::MAX as usize) as u16);
    out.put_slice(&bytes[..bytes.len().min(u16::MAX as usize)]);
}

fn put_blob(out: &mut BytesMut, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.put_slice(b);
}

impl Record {
    /// Appends the framed record to `out`; returns its framed length.
    pub fn encode(&self, out: &mut BytesMut) -> usize {
        let start = out.len();
        out.put_u32_le(0);
        out.put_u32_le(0);
        match self {
            Record::Declare { queue, options } => {
                out.put_u8(DECLARE);
                put_str(out, queue);
                put_blob(out, options);
            }
            Record::Put(m) => {
                out.put_u8(PUT);
                put_str(out, &m.queue);
                out.put_u64_le(m.id);
                out.put_u8(m.priority);
                out.put_u64_le(m.expires_at_ms);
                out.put_u64_le(m.put_at_ms);
                out.put_u32_le(m.attempts);
                put_str(out, &m.dedup_id);
                put_blob(out, &m.headers);
                put_blob(out, &m.payload);
            }
            Record::Ack { queue, id } => {
                out.put_u8(ACK);
                put_str(out, queue);
                out.put_u64_le(*id);
            }
            Record::Attempt { queue, id, attempts } => {
                out.put_u8(ATTEMPT);
                put_str(out, queue);
                out.put_u64_le(*id);
                out.put_u32_le(*attempts);
            }
            Record::Purge { queue } => {
                out.put_u8(PURGE);
                put_str(out, queue);
            }
            Record::Delete { queue } => {
                out.put_u8(DELETE);
                put_str(out, queue);
            }
            Record::Seen { queue, dedup_id, id, until_ms } => {
                out.put_u8(SEEN);
                put_str(out, queue);
                put_str(out, dedup_id);
                out.put_u64_le(*id);
                out.put_u64_le(*until_ms);
            }
        }
        let body_len = (out.len() - start - HEADER) as u32;
        let crc = crc32fast::hash(&out[start + HEADER..]);
        out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        out.len() - start
    }

    /// Reads one framed record from the front of `buf`; returns it and the
    /// bytes it used.
    pub fn decode(buf: &Bytes) -> Result<(Record, usize), RecordError> {
        let header = buf.get(..HEADER).ok_or(RecordError::Truncated)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let body = buf.get(HEADER..HEADER + len).ok_or(RecordError::Truncated)?;
        if crc32fast::hash(body) != crc {
            return Err(RecordError::Checksum);
        }
        let record = parse(buf.slice(HEADER..HEADER + len))?;
        Ok((record, HEADER + len))
    }

    /// The queue a record belongs to.
    pub fn queue(&self) -> &str {
        match self {
            Record::Declare { queue, .. }
            | Record::Ack { queue, .. }
            | Record::Attempt { queue, .. }
            | Record::Purge { queue }
            | Record::Delete { queue }
            | Record::Seen { queue, .. } => queue,
            Record::Put(m) => &m.queue,
        }
    }
}

struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), RecordError> {
        if self.0.remaining() < n {
            return Err(RecordError::Malformed("field runs past the record"));
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        self.need(4)?;
        Ok(self.0.get_u32_le())
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        self.need(8)?;
        Ok(self.0.get_u64_le())
    }
    fn string(&mut self) -> Result<String, RecordError> {
        self.need(2)?;
        let len = self.0.get_u16_le() as usize;
        self.need(len)?;
        String::from_utf8(self.0.split_to(len).to_vec())
            .map_err(|_| RecordError::Malformed("name is not UTF-8"))
    }
    fn blob(&mut self) -> Result<Bytes, RecordError> {
        let len = self.u32()? as usize;
        self.need(len)?;
        Ok(self.0.split_to(len))
    }
}

fn parse(body: Bytes) -> Result<Record, RecordError> {
    let mut r = Reader(body);
    let record = match r.u8()? {
        DECLARE => Record::Declare { queue: r.string()?, options: r.blob()? },
        PUT => Record::Put(StoredMessage {
            queue: r.string()?,
            id: r.u64()?,
            priority: r.u8()?,
            expires_at_ms: r.u64()?,
            put_at_ms: r.u64()?,
            attempts: r.u32()?,
            dedup_id: r.string()?,
            headers: r.blob()?,
            payload: r.blob()?,
        }),
        ACK => Record::Ack { queue: r.string()?, id: r.u64()? },
        ATTEMPT => Record::Attempt { queue: r.string()?, id: r.u64()?, attempts: r.u32()? },
        PURGE => Record::Purge { queue: r.string()? },
        DELETE => Record::Delete { queue: r.string()? },
        SEEN => Record::Seen { queue: r.string()?, dedup_id: r.string()?, id: r.u64()?, until_ms: r.u64()? },
        _ => return Err(RecordError::Malformed("unknown record type")),
    };
    if r.0.has_remaining() {
        return Err(RecordError::Malformed("trailing bytes"));
    }
    Ok(record)
}

/// A `Put` of `size` bytes to `queue`, for the store's tests.
#[cfg(test)]
pub(crate) fn test_put(queue: &str, id: u64, size: usize) -> Record {
    Record::Put(StoredMessage {
        queue: queue.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    pub fn message(id: u64) -> StoredMessage {
        StoredMessage {
            queue: "jobs".into(),
            id,
            priority: 3,
            expires_at_ms: 0,
            put_at_ms: 1,
            attempts: 0,
            dedup_id: String::new(),
            headers: Bytes::new(),
            payload: Bytes::from(vec![id as u8; 10]),
        }
    }

    #[test]
    fn every_record_round_trips() {
        let records = vec![
            Record::Declare { queue: "jobs".into(), options: Bytes::from_static(b"\x80") },
            Record::Put(message(7)),
            Record::Attempt { queue: "jobs".into(), id: 7, attempts: 2 },
            Record::Ack { queue: "jobs".into(), id: 7 },
            Record::Purge { queue: "jobs".into() },
            Record::Delete { queue: "jobs".into() },
            Record::Seen { queue: "jobs".into(), dedup_id: "order-1".into(), id: 7, until_ms: 99 },
        ];
        let mut buf = BytesMut::new();
        for r in &records {
            r.encode(&mut buf);
        }
        let mut bytes = buf.freeze();
        for expected in &records {
            let (record, used) = Record::decode(&bytes).unwrap();
            assert_eq!(&record, expected);
            bytes.advance(used);
        }
        assert!(bytes.is_empty());
    }

    #[test]
    fn torn_and_corrupt_records_are_detected() {
        let mut buf = BytesMut::new();
        Record::Put(message(1)).encode(&mut buf);
        let whole = buf.freeze();
        for cut in 0..whole.len() {
            assert_eq!(Record::decode(&whole.slice(..cut)).unwrap_err(), RecordError::Truncated);
        }
        let mut flipped = whole.to_vec();
        flipped[20] ^= 0xff;
        assert_eq!(Record::decode(&Bytes::from(flipped)).unwrap_err(), RecordError::Checksum);
    }
}
