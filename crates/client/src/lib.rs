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

#[doc(hidden)]
#[path = "contract.rs"]
pub mod __private;
mod answer;
mod blobs;
pub mod breaker;
mod bus;
mod calls;
mod connection;
mod context;
pub mod deadline;
mod direct;
mod discovery;
mod error;
mod fleet;
pub mod hops;
mod queues;
mod random;
mod regions;
pub mod retry;
pub mod service;
mod supervised;
mod topics;
pub mod trace;

pub use bus::{decode, encode, Bus, DEFAULT_TIMEOUT};
pub use bytes::Bytes;
pub use connection::Dialer;

pub use blobs::{Blob, BlobError, BlobMut, AUTO_BLOB};
pub use breaker::{BreakerPolicy, BreakerState};
pub use calls::{Attempted, BroadcastOutcome, CallOptions, InstanceReply, IntoTarget};
pub use error::{CallError, ConnectError, RegisterError, Reject};
pub use fleet::{FleetOutcome, FleetReply};
pub use hops::{Hop, Traced};
pub use queues::{Consumer, Delivery, PutOptions, Queue};
pub use regions::{Region, RegionError, RegionGuard};
pub use retry::RetryPolicy;
pub use service::{HandlerResult, Request, Service, ServiceBuilder, DEFAULT_CONCURRENCY, DEFAULT_QUEUED};
/// Declares a service contract on a trait: a typed client and a server
/// adapter are generated from it.
///
/// Arguments and results are serde types and travel as MessagePack, the
/// arguments as a map keyed by argument name — so the CLI's
/// `switchboard call billing.charge '{"account":"a","cents":5}'` reaches a
/// typed server. Methods marked `#[oneway]` become notifications. The
/// service name is the trait's name in snake_case unless given with
/// `#[contract(service = "...")]`. For trait `Billing` the macro generates
/// `BillingClient` (one async method per contract method, plus
/// `<method>_broadcast` for calls and `<method>_all` for one-way methods)
/// and `BillingServer::builder(&bus, implementation)`.
///
/// Arguments that do not fit are answered with [`CallError::BadArguments`]
/// naming the method and the argument; an unknown method with
/// [`CallError::NoSuchMethod`].
///
/// ```no_run
/// use serde::{Deserialize, Serialize};
/// use switchboard::{contract, Bus, Reject};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct Receipt { pub id: u64, pub cents: u64 }
///
/// #[contract(service = "billing")]
/// pub trait Billing {
///     /// Charges an account.
///     async fn charge(&self, account: String, cents: u64) -> Result<Receipt, Reject>;
///     /// Writes an audit note; nobody waits for it.
///     #[oneway]
///     async fn audit(&self, note: String);
/// }
///
/// struct Ledger;
///
/// impl Billing for Ledger {
///     async fn charge(&self, account: String, cents: u64) -> Result<Receipt, Reject> {
///         if account.is_empty() {
///             return Err(Reject::new("no account"));
///         }
///         Ok(Receipt { id: 1, cents })
///     }
///     async fn audit(&self, note: String) {
///         println!("audit: {note}");
///     }
/// }
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::connect_default().await?;
/// let _server = BillingServer::builder(&bus, Ledger).start().await?;
/// let billing = BillingClient::new(&bus);
/// let receipt = billing.charge("acct-1".into(), 5).await?;
/// billing.audit(format!("charged {}", receipt.cents)).await?;
/// # Ok(()) }
/// ```
pub use switchboard_macros::contract;
pub use switchboard_proto::fleet::MissingHost;
pub use switchboard_proto::regions::{RegionHolder, RegionInfo};
pub use switchboard_proto::sys::{
    DaemonInfo, InstanceInfo, MonitorEvent, Overflow, PeekedMessage, QueueInfo, QueueOptions, RegistryEvent,
    ServiceInfo, SubscriptionInfo, TopicsInfo, Whoami,
};
pub use switchboard_proto::{
    Caller, HeaderError, Headers, InstanceId, MethodName, PrincipalName, ServiceName, Target, Topic,
    TopicError, TopicPattern,
};
pub use switchboard_transport::tls::{TlsClient, TlsError};
pub use switchboard_transport::{default_endpoint, default_socket_path, Endpoint};
pub use topics::{
    Item, Message, PublishError, PublishOptions, SubscribeError, Subscription, DEFAULT_SUBSCRIPTION_CAPACITY,
};
