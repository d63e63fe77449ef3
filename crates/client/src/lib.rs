//! `switchboard`: the client library services link to talk over the
//! Switchboard bus.
//!
//! - [`Bus`] — a cheap-to-clone handle on one connection to the daemon;
//!   calls ([`Bus::call`]), notifications ([`Bus::notify`]) and discovery
//!   ([`Bus::services`], [`Bus::watch`]) are multiplexed on it, and it
//!   reconnects by itself with backoff, registering its services again.
//! - [`ServiceBuilder`] / [`Service`] — serve methods with async handlers,
//!   run concurrently under a bounded limit.
//! - Errors are per operation ([`ConnectError`], [`CallError`],
//!   [`RegisterError`]) with a variant for every failure a caller can meet.
//!
//! Payloads are bytes; by convention they are MessagePack ([`encode`],
//! [`decode`], [`Bus::call_as`]), which is what the CLI's JSON maps to.
#![forbid(unsafe_code)]

mod bus;
mod calls;
mod connection;
mod discovery;
mod error;
mod service;
mod topics;

pub use bus::{decode, encode, Bus, DEFAULT_TIMEOUT};
pub use bytes::Bytes;
pub use calls::{BroadcastOutcome, CallOptions, InstanceReply, IntoTarget};
pub use error::{CallError, ConnectError, RegisterError, Reject};
pub use service::{
    HandlerResult, Request, Service, ServiceBuilder, DEFAULT_CONCURRENCY, DEFAULT_QUEUED,
};
pub use switchboard_proto::sys::{
    DaemonInfo, InstanceInfo, RegistryEvent, ServiceInfo, SubscriptionInfo, TopicsInfo,
};
pub use switchboard_proto::{
    Caller, HeaderError, Headers, InstanceId, MethodName, ServiceName, Target, Topic, TopicError,
    TopicPattern,
};
pub use switchboard_transport::{default_endpoint, default_socket_path, Endpoint};
pub use topics::{
    Item, Message, PublishError, PublishOptions, SubscribeError, Subscription,
    DEFAULT_SUBSCRIPTION_CAPACITY,
};
