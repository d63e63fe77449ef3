//! iceoryx2's publish-subscribe with loaned samples, for `blob-fanout`:
//! the publisher loans a 1 MiB slice from iceoryx2's shared pool, writes
//! it whole, sends it and signals an event; each subscriber process wakes on
//! the event and checksums every sample whole. Behind the bench feature
//! `iceoryx2` (the crate runs bindgen, which needs libclang): without it,
//! [`run`] says it was not built.

#[cfg(feature = "iceoryx2")]
pub use built::{run, subscriber};

#[cfg(not(feature = "iceoryx2"))]
pub fn run(_count: usize) -> anyhow::Result<Option<(crate::stats::Sample, crate::stats::Sample)>> {
    Ok(None)
}

#[cfg(not(feature = "iceoryx2"))]
pub fn subscriber(_service: &str, _count: usize) -> anyhow::Result<()> {
    anyhow::bail!("this bench was built without the iceoryx2 feature")
}

#[cfg(feature = "iceoryx2")]
mod built {
    use std::io::Write;
    use std::time::Duration;

    use anyhow::anyhow;
    use iceoryx2::prelude::*;

    use crate::blob_fanout::{
        latencies, pattern, reports, stamp, subscribers, Report, GAP, SIZE, SUBSCRIBERS,
    };
    use crate::pubsub::now_ns;
    use crate::stats::Sample;

    type PubSub = iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>;
    type Event = iceoryx2::service::port_factory::event::PortFactory<ipc::Service>;

    fn failed(err: impl std::fmt::Debug) -> anyhow::Error {
        anyhow!("iceoryx2: {err:?}")
    }

    /// The services, opened with the same settings by every process.
    fn services(node: &Node<ipc::Service>, name: &str) -> anyhow::Result<(PubSub, Event)> {
        let samples = node
            .service_builder(&name.try_into().map_err(failed)?)
            .publish_subscribe::<[u8]>()
            .max_publishers(1)
            .max_subscribers(SUBSCRIBERS)
            .subscriber_max_buffer_size(4)
            .history_size(0)
            .open_or_create()
            .map_err(failed)?;
        let event = node
            .service_builder(&format!("{name}.event").as_str().try_into().map_err(failed)?)
            .event()
            .open_or_create()
            .map_err(failed)?;
        Ok((samples, event))
    }

    /// One run: the two latency samples, as `blob_fanout` reports them.
    pub fn run(count: usize) -> anyhow::Result<Option<(Sample, Sample)>> {
        let name = format!("switchboard-bench/blob-fanout/{}", std::process::id());
        let node = NodeBuilder::new().create::<ipc::Service>().map_err(failed)?;
        let (samples, event) = services(&node, &name)?;
        let publisher = samples
            .publisher_builder()
            .initial_max_slice_len(SIZE)
            .max_loaned_samples(2)
            .create()
            .map_err(failed)?;
        let notifier = event.notifier_builder().create().map_err(failed)?;
        let args: Vec<String> = ["child-ice-sub", &name, &count.to_string()].map(str::to_owned).to_vec();
        let children = subscribers(&args)?;
        for seq in 0..count as u64 {
            let asked = now_ns();
            let sample = publisher.loan_slice_uninit(SIZE).map_err(failed)?;
            let write = now_ns();
            let mut sample = sample.write_from_fn(|i| pattern(i, seq));
            stamp(sample.payload_mut(), seq, asked, write);
            sample.send().map_err(failed)?;
            notifier.notify().map_err(failed)?;
            std::thread::sleep(GAP);
        }
        Ok(Some(latencies(&reports(children)?, count)?))
    }

    /// Child: open the services, say ready, take `count` samples, print the
    /// report.
    pub fn subscriber(name: &str, count: usize) -> anyhow::Result<()> {
        let node = NodeBuilder::new().create::<ipc::Service>().map_err(failed)?;
        let (samples, event) = services(&node, name)?;
        let subscriber = samples.subscriber_builder().create().map_err(failed)?;
        let listener = event.listener_builder().create().map_err(failed)?;
        println!("ready");
        std::io::stdout().flush()?;
        let mut report = Report::default();
        while report.seen.len() < count {
            while let Some(sample) = subscriber.receive().map_err(failed)? {
                report.record(sample.payload());
            }
            if report.seen.len() < count
                && listener.timed_wait_one(Duration::from_secs(10)).map_err(failed)?.is_none()
            {
                break;
            }
        }
        println!("{}", serde_json::to_string(&report)?);
        Ok(())
    }
}
