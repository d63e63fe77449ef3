//! The router and the tasks around it while the daemon runs: the queue
//! writer and the task that applies its commits, the deadline sweeper, the
//! accept loops. Started and stopped in the order that loses nothing:
//! stop accepting, answer what is in flight, say goodbye, let the writer
//! finish. Knows nothing of hosted apps; [`crate::Daemon::run`] puts them
//! between [`Running::start`] and [`Running::accept`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::host::RouterHandle;
use crate::listen::{self, Inherited, Listener};
use crate::policy::{Policy, Security};
use crate::queues::store::{Recovered, Store};
use crate::queues::writer::Writer;
use crate::router::queues::QueueState;
use crate::router::Router;
use crate::session::{self, SharedRouter};
use crate::{Config, Limits};

pub(crate) struct Running {
    pub router: SharedRouter,
    limits: Limits,
    gates: listen::Gates,
    stop_accepting: CancellationToken,
    stop_sessions: CancellationToken,
    sessions: TaskTracker,
    accepting: Vec<JoinHandle<()>>,
    committer: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    writer_thread: std::thread::JoinHandle<()>,
}

impl Running {
    /// Makes the router from the recovered queues and the policy, and starts
    /// the queue writer, its committer and the deadline sweeper. No client
    /// is let in yet.
    pub fn start(
        store: Store,
        recovered: Recovered,
        (policy, security): (Policy, Security),
        config: &Config,
    ) -> Self {
        let limits = config.limits.clone();
        let (completions_tx, mut completions) = tokio::sync::mpsc::unbounded_channel();
        let (writer, writer_thread) = Writer::spawn(store, completions_tx);
        let queues = QueueState::new(recovered, writer, config.queue_auto_create, config.max_queues);
        let mut router = Router::new(limits.clone(), config.data_dir.clone(), queues);
        if !policy.is_empty() {
            tracing::info!(grants = policy.len(), "policy loaded");
        }
        router.set_policy(policy, security);
        let router = Arc::new(Mutex::new(router));
        let committer = {
            let router = router.clone();
            tokio::spawn(async move {
                while let Some(completed) = completions.recv().await {
                    session::lock(&router).queue_completed(completed);
                }
            })
        };
        let stop_sessions = CancellationToken::new();
        let sweeper = tokio::spawn(expire_calls(router.clone(), stop_sessions.clone()));
        let gates = listen::Gates {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            handshakes: listen::budget::HandshakeBudget::new(
                limits.max_handshakes_per_peer,
                limits.max_handshakes,
            ),
        };
        Self {
            router,
            limits,
            gates,
            stop_accepting: CancellationToken::new(),
            stop_sessions,
            sessions: TaskTracker::new(),
            accepting: Vec::new(),
            committer,
            sweeper,
            writer_thread,
        }
    }

    /// The narrow handle hosted apps get.
    pub fn handle(&self) -> RouterHandle {
        RouterHandle::new(
            self.router.clone(),
            self.limits.clone(),
            self.stop_sessions.clone(),
            self.sessions.clone(),
            self.gates.connections.clone(),
        )
    }

    /// Lets clients in: an accept loop per listener.
    pub fn accept(&mut self, listeners: &[Arc<Listener>]) {
        for listener in listeners {
            self.accepting.push(tokio::spawn(listen::accept_loop(
                listener.clone(),
                self.router.clone(),
                self.limits.clone(),
                self.stop_accepting.clone(),
                self.stop_sessions.clone(),
                self.sessions.clone(),
                self.gates.clone(),
            )));
        }
    }

    /// Stops accepting, removes the socket files (or, with `hand_over`,
    /// keeps the sockets open for a successor and returns them), answers
    /// calls in flight with "shutting down", says goodbye to every client
    /// and waits up to `grace` for them, then lets the queue writer finish.
    pub async fn stop(
        self,
        listeners: Vec<Arc<Listener>>,
        grace: Duration,
        hand_over: bool,
    ) -> Vec<Inherited> {
        self.stop_accepting.cancel();
        for task in self.accepting {
            let _ = task.await;
        }
        let mut handed = Vec::new();
        for listener in listeners {
            let endpoint = listener.endpoint();
            // The accept loops are done: this is the last reference.
            let socket = match Arc::try_unwrap(listener) {
                Ok(listener) if hand_over => listener.hand_over(),
                Ok(listener) => {
                    drop(listener); // removes socket and lock files
                    continue;
                }
                Err(_) => Err(std::io::Error::other("still in use")),
            };
            match socket {
                Ok(socket) => handed.push(socket),
                Err(err) => tracing::error!(%endpoint, "cannot hand this socket over: {err}"),
            }
        }
        session::lock(&self.router).shut_down();
        self.stop_sessions.cancel();
        self.sessions.close();
        if tokio::time::timeout(grace, self.sessions.wait()).await.is_err() {
            tracing::warn!("some connections did not close within {grace:?}");
        }
        let _ = self.sweeper.await;
        // Dropping the last router handle drops the writer's sender: the
        // writer thread finishes what it was given and ends.
        self.committer.abort();
        let _ = self.committer.await;
        drop(self.router);
        let writer_thread = self.writer_thread;
        let join = tokio::task::spawn_blocking(move || writer_thread.join());
        if tokio::time::timeout(grace, join).await.is_err() {
            tracing::warn!("the queue writer did not finish within {grace:?}");
        }
        handed
    }
}

/// Answers calls whose deadline passed. Callers enforce their own deadline
/// too; this frees the daemon's state and tells callers that lost track.
async fn expire_calls(router: SharedRouter, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => session::lock(&router).expire(Instant::now()),
        }
    }
}
