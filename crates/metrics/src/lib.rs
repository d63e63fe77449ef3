//! The metrics app, hosted by `switchboard up`: serves `$sys.metrics.scrape`,
//! the Prometheus text exposition of everything the daemon counts (calls,
//! errors and latencies per method — direct-channel calls included, as
//! their instances report them —, publications and deliveries, queues,
//! connections, supervised services). `switchboard metrics` prints it; the
//! gateway will serve it at `/metrics`.
//!
//! It never takes the router's lock: it asks the daemon over its own bus
//! session, like any client with the `metrics` permission would.

mod exposition;

use bytes::Bytes;
use switchboard::{Bus, CallError, CallOptions, Reject};
use switchboard_daemon::host::{App, AppContext, AppError, ConfigError, Section};
use switchboard_daemon::policy::Principal;
use switchboard_proto::stats::{DaemonStats, DAEMON_STATS, METRICS_SCRAPE, METRICS_SERVICE};
use switchboard_proto::supervision::{self as sup, ServiceStatus};
use switchboard_proto::sys::{self, DaemonInfo, QueueInfo};

pub use exposition::{render, Snapshot};

/// The running app: its bus session and the `$sys.metrics` service on it.
pub struct Metrics {
    bus: Bus,
    _service: switchboard::Service,
}

impl App for Metrics {
    const NAME: &'static str = "metrics";
    const SECTIONS: &'static [&'static str] = &[];
    type Config = ();

    fn configure(_: &Section<'_>) -> Result<(), ConfigError> {
        Ok(())
    }

    async fn start(context: AppContext, (): (), _: Option<Bytes>) -> Result<Self, AppError> {
        let failed = |err: &dyn std::fmt::Display| AppError::new(Self::NAME, err);
        let endpoint =
            context.endpoints.first().cloned().ok_or_else(|| failed(&"the daemon listens nowhere"))?;
        let dial = context.router.dialer(Principal::daemon(), "switchboard-metrics");
        let bus = Bus::connect_hosted(endpoint, "switchboard-metrics".into(), dial)
            .await
            .map_err(|err| failed(&format!("cannot connect to its own daemon: {err}")))?;
        bus.set_direct_calls(false);
        let asking = bus.clone();
        let service = bus
            .serve(METRICS_SERVICE)
            .map_err(|err| failed(&err))?
            .method(METRICS_SCRAPE, move |_| {
                let bus = asking.clone();
                async move {
                    let snapshot = snapshot(&bus).await.map_err(|err| Reject::new(err.to_string()))?;
                    Ok(Bytes::from(render(&snapshot)))
                }
            })
            .start()
            .await
            .map_err(|err| failed(&format!("cannot register {METRICS_SERVICE}: {err}")))?;
        Ok(Self { bus, _service: service })
    }

    async fn reload(&mut self, (): ()) -> Result<Bytes, String> {
        Ok(Bytes::new())
    }

    async fn stop(self) {
        self.bus.close();
    }
}

/// Asks the daemon (and the supervisor, if it supervises anything) for
/// what a scrape reports.
pub async fn snapshot(bus: &Bus) -> Result<Snapshot, CallError> {
    let ask = |service: &str, method: &str| format!("{service}.{method}");
    let info: DaemonInfo =
        decode(bus.call(ask(sys::DAEMON_SERVICE, sys::DAEMON_INFO).as_str(), Bytes::new()).await?)?;
    let stats: DaemonStats =
        decode(bus.call(ask(sys::DAEMON_SERVICE, DAEMON_STATS).as_str(), Bytes::new()).await?)?;
    let queues: Vec<QueueInfo> =
        decode(bus.call(ask(sys::QUEUES_SERVICE, sys::QUEUES_LIST).as_str(), Bytes::new()).await?)?;
    let status = ask(sup::SERVICES_SERVICE, sup::STATUS);
    let all = Bytes::from(sys::encode(&sup::ServiceRef { service: String::new() }));
    let services: Vec<ServiceStatus> = match bus.call_with(status.as_str(), all, CallOptions::default()).await
    {
        Ok(reply) => decode(reply)?,
        // No supervisor serves it: nothing supervised to report.
        Err(CallError::NoSuchService(_)) => Vec::new(),
        Err(err) => return Err(err),
    };
    Ok(Snapshot { info, stats, queues, services })
}

fn decode<T: serde::de::DeserializeOwned>(reply: Bytes) -> Result<T, CallError> {
    sys::decode(&reply).map_err(|err| CallError::Decode(err.to_string()))
}
