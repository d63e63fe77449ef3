//! The group-commit writer: one thread that owns the [`Store`] and turns
//! every batch of queued jobs into one write and one `fdatasync`.
//!
//! Jobs arrive in order and are written in order, so a job with no records
//! completes only after every job before it is on disk — which is how a
//! duplicate put of a message still being written is confirmed honestly.
//! The thread ends when the last sender is dropped.

use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::mpsc::UnboundedSender;

use super::record::Record;
use super::store::Store;

/// Most jobs folded into one commit.
const MAX_BATCH: usize = 8192;

/// What to do once a job's records are on disk. Opaque to the writer.
pub struct Job<T> {
    pub records: Vec<Record>,
    pub done: T,
}

/// Completed jobs, and whether the commit succeeded.
pub type Completed<T> = (Vec<T>, Result<(), String>);

/// The sending side; cheap to clone.
pub struct Writer<T> {
    jobs: mpsc::Sender<Job<T>>,
}

impl<T> Clone for Writer<T> {
    fn clone(&self) -> Self {
        Self { jobs: self.jobs.clone() }
    }
}

impl<T: Send + 'static> Writer<T> {
    /// Starts the writer thread.
    pub fn spawn(mut store: Store, completions: UnboundedSender<Completed<T>>) -> (Self, JoinHandle<()>) {
        let (jobs, rx) = mpsc::channel::<Job<T>>();
        let thread = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut records = first.records;
                    let mut dones = vec![first.done];
                    while dones.len() < MAX_BATCH {
                        let Ok(job) = rx.try_recv() else { break };
                        records.extend(job.records);
                        dones.push(job.done);
                    }
                    let result = store.append(&records).map_err(|err| {
                        tracing::error!("queue store write failed: {err}");
                        err.to_string()
                    });
                    if completions.send((dones, result)).is_err() {
                        return;
                    }
                }
            })
            // Without its writer thread the daemon cannot keep its promises.
            .unwrap_or_else(|err| panic!("cannot start the queue writer thread: {err}"));
        (Self { jobs }, thread)
    }

    /// Queues a job; false if the writer has stopped.
    pub fn submit(&self, records: Vec<Record>, done: T) -> bool {
        self.jobs.send(Job { records, done }).is_ok()
    }
}
