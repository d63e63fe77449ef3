//! The router's parts, tested as state machines: a real [`Router`] with
//! in-memory outboxes instead of sockets and no async runtime. A test sends
//! frames as a session would and reads what the router queued for each
//! session; queue changes are committed by the real writer thread on a
//! temporary directory.

mod calls;
mod grants;
mod queues;
mod topics;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto::{
    Call, ErrorCode, Frame, Headers, MethodName, MethodSpec, ServiceName, SessionId, DEFAULT_MAX_FRAME,
};
use switchboard_transport::Outbox;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::queues::{Done, QueueState};
use super::topics::BacklogSignal;
use super::{Router, SessionLink};
use crate::config_file::ConfigFile;
use crate::policy::Principal;
use crate::queues::store::Store;
use crate::queues::writer::{Completed, Writer};
use crate::Limits;

/// A router and the sessions a test opened on it.
pub(super) struct Bench {
    pub router: Router,
    outboxes: HashMap<SessionId, Arc<Outbox>>,
    completions: UnboundedReceiver<Completed<Done>>,
    next_id: u32,
    _dir: tempfile::TempDir,
}

impl Bench {
    pub fn new(limits: Limits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (store, recovered) = Store::open(&dir.path().join("queues"), 1 << 20).unwrap();
        let (completions_tx, completions) = tokio::sync::mpsc::unbounded_channel();
        let (writer, _thread) = Writer::spawn(store, completions_tx);
        let queues = QueueState::new(recovered, writer, true, 100);
        let router = Router::new(limits, dir.path().to_owned(), queues);
        Self { router, outboxes: HashMap::new(), completions, next_id: 0, _dir: dir }
    }

    /// Replaces the policy with a config file's `[security]` and `[[policy]]`.
    pub fn policy(&mut self, text: &str) {
        let file = ConfigFile::from_text("test", text.to_owned());
        let sections = file.split(&[crate::policy::SECTIONS]).unwrap();
        let (policy, security) = crate::policy::configure(&sections[0]).unwrap();
        self.router.set_policy(policy, security);
    }

    /// A session of `principal`, as a local process `pid` would have.
    pub fn connect(&mut self, principal: Principal, pid: u32) -> SessionId {
        let limits = self.router.limits.clone();
        let outbox = Arc::new(Outbox::bounded(limits.congested_at, limits.max_outbox));
        let link = SessionLink {
            outbox: outbox.clone(),
            kill: CancellationToken::new(),
            backlog: Arc::new(BacklogSignal::default()),
            client_name: "test".into(),
            uid: 1000,
            pid,
        };
        let session = self.router.add_session(link, principal).unwrap();
        self.outboxes.insert(session, outbox);
        session
    }

    pub fn send(&mut self, from: SessionId, frame: Frame) {
        self.router.handle(from, frame).unwrap();
    }

    /// Everything the router queued for `session` since the last look.
    pub fn received(&mut self, session: SessionId) -> Vec<Frame> {
        let mut bytes = self.outboxes[&session].drain();
        let mut frames = Vec::new();
        while let Some(frame) = switchboard_proto::decode(&mut bytes, DEFAULT_MAX_FRAME).unwrap() {
            frames.push(frame);
        }
        frames
    }

    /// Registers `service` with `methods` from `session`; its instance id.
    pub fn register(&mut self, session: SessionId, service: &str, methods: &[&str]) -> u64 {
        let methods =
            methods.iter().map(|m| MethodSpec { name: method(m), signature: String::new() }).collect();
        let req = self.id();
        self.send(session, Frame::Register { req, service: ServiceName::parse(service).unwrap(), methods });
        match self.received(session).pop() {
            Some(Frame::Registered { instance, .. }) => instance,
            other => panic!("not registered: {other:?}"),
        }
    }

    pub fn call(&mut self, from: SessionId, target: &str, payload: &[u8], timeout_ms: u32) -> u32 {
        let (service, method_name) = target.rsplit_once('.').unwrap();
        let id = self.id();
        self.send(
            from,
            Frame::Call(Call {
                id,
                timeout_ms,
                instance: 0,
                service: ServiceName::parse(service).unwrap(),
                method: method(method_name),
                headers: Headers::new(),
                payload: Bytes::copy_from_slice(payload),
            }),
        );
        id
    }

    /// Waits for the queue writer to make the submitted changes durable and
    /// lets the router act on it (confirmations, deliveries).
    pub fn commit(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let first = loop {
            match self.completions.try_recv() {
                Ok(done) => break done,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => panic!("nothing was committed within 5 s"),
            }
        };
        self.router.queue_completed(first);
        while let Ok(more) = self.completions.try_recv() {
            self.router.queue_completed(more);
        }
    }

    pub fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }
}

pub(super) fn method(name: &str) -> MethodName {
    MethodName::parse(name).unwrap()
}

/// The error codes among `frames`.
pub(super) fn errors(frames: &[Frame]) -> Vec<ErrorCode> {
    frames.iter().filter_map(|f| if let Frame::Error { code, .. } = f { Some(*code) } else { None }).collect()
}

/// The payloads of the replies among `frames`.
pub(super) fn replies(frames: &[Frame]) -> Vec<Bytes> {
    frames
        .iter()
        .filter_map(|f| if let Frame::Reply { payload, .. } = f { Some(payload.clone()) } else { None })
        .collect()
}
