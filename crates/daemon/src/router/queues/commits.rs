//! Finished commits from the queue writer: confirmations go out only for
//! what reached the disk.

use bytes::Bytes;
use switchboard_proto::sys::{self};
use switchboard_proto::{ErrorCode, Frame, SessionId};

use crate::queues::writer::Completed;

use super::state::Done;
use super::{storage_failed, Router};

impl Router {
    /// Applies finished commits: confirmations go out, committed messages
    /// become deliverable, removed ones are forgotten. A failed commit
    /// confirms nothing and changes nothing the disk does not say: failed
    /// puts are forgotten, failed removals leave their messages queued.
    pub fn queue_completed(&mut self, (dones, result): Completed<Done>) {
        let failed = result.err();
        let mut touched = Vec::new();
        for done in dones {
            match done {
                Done::Put { session, req, queue, id, dropped, duplicate } => {
                    self.settle_removals(&queue, &dropped, failed.is_none());
                    let Some(q) = self.queues.queues.get_mut(&queue) else { continue };
                    let outcome = match &failed {
                        None if duplicate.as_deref().is_some_and(|d| !q.stored_as(d, id)) => {
                            Err("the first put with this producer id was not stored".to_owned())
                        }
                        None => Ok(()),
                        Some(why) => Err(why.clone()),
                    };
                    match outcome {
                        Ok(()) => {
                            q.committed(id);
                            let payload = Bytes::copy_from_slice(&id.to_le_bytes());
                            self.send(session, &Frame::Reply { id: req, payload });
                        }
                        Err(why) => {
                            if duplicate.is_none() {
                                q.put_failed(id);
                            }
                            self.send_error(session, req, ErrorCode::StorageFailed, storage_failed(&why));
                        }
                    }
                    touched.push(queue);
                }
                Done::Ack { session, req, queue, id } => {
                    self.settle_removals(&queue, &[id], failed.is_none());
                    touched.push(queue);
                    self.confirm(session, req, &failed, Bytes::new());
                }
                Done::DeadLettered { from, id, to, new_id } => {
                    self.settle_removals(&from, &[id], failed.is_none());
                    if let Some(q) = self.queues.queues.get_mut(&to) {
                        if failed.is_none() {
                            q.committed(new_id)
                        } else {
                            q.put_failed(new_id)
                        }
                    }
                    touched.extend([from, to]);
                }
                Done::Declared { session, req } => self.confirm(session, req, &failed, Bytes::new()),
                Done::Purged { session, req, queue, ids } => {
                    self.settle_removals(&queue, &ids, failed.is_none());
                    touched.push(queue);
                    let count = Bytes::from(sys::encode(&(ids.len() as u64)));
                    self.confirm(session, req, &failed, count);
                }
                Done::Nothing => {}
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for queue in touched {
            self.dispatch(&queue);
        }
    }

    /// Removals are on disk (forget the messages) or failed (they stay queued).
    fn settle_removals(&mut self, queue: &str, ids: &[u64], written: bool) {
        if let Some(q) = self.queues.queues.get_mut(queue) {
            for id in ids {
                if written {
                    q.removed(*id)
                } else {
                    q.removal_failed(*id)
                }
            }
        }
    }

    /// Answers a request whose records were committed, or say why not.
    fn confirm(&mut self, session: SessionId, req: u32, failed: &Option<String>, payload: Bytes) {
        match failed {
            None => self.send(session, &Frame::Reply { id: req, payload }),
            Some(why) => self.send_error(session, req, ErrorCode::StorageFailed, storage_failed(why)),
        }
    }
}
