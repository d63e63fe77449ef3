//! NATS: core request/reply and pub/sub, and JetStream for durable puts.
//!
//! Settings, named because they matter: nats-server defaults, loopback TCP;
//! JetStream file storage with its default sync policy (the server flushes
//! to disk periodically, not per message — so its confirmed puts are not
//! individually on disk, unlike Switchboard's).

use std::io::Write;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;

use crate::children::{self, Child};
use crate::pubsub::{now_ns, SubReport};
use crate::stats::Sample;

const ECHO: &str = "bench.echo";
const TOPIC: &str = "bench.pubsub";
const JS_SUBJECT: &str = "bench.js";

/// A running nats-server (with JetStream) and an echo responder.
pub struct Nats {
    pub url: String,
    _server: Child,
    _echo: Child,
}

impl Nats {
    pub fn start(server: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        let port = super::free_port()?;
        let url = format!("nats://127.0.0.1:{port}");
        let store = data_dir.join("nats-js");
        std::fs::create_dir_all(&store)?;
        let server = children::spawn(&[
            "child-exec",
            "--wait-port",
            &port.to_string(),
            "--",
            &server.display().to_string(),
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-js",
            "-sd",
            &store.display().to_string(),
        ])?;
        let echo = children::spawn(&["child-nats-echo", &url])?;
        Ok(Self { url, _server: server, _echo: echo })
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn ready() -> anyhow::Result<()> {
    println!("ready");
    std::io::stdout().flush()?;
    Ok(())
}

/// Child: answer every request on `bench.echo` with its payload.
pub fn echo(url: &str) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = async_nats::connect(url).await?;
        let mut requests = client.subscribe(ECHO).await?;
        client.flush().await?;
        ready()?;
        while let Some(message) = requests.next().await {
            if let Some(reply) = message.reply {
                client.publish(reply, message.payload).await?;
            }
        }
        Ok(())
    })
}

/// Sequential requests: latency.
pub fn request_latency(url: &str, size: usize, samples: usize) -> anyhow::Result<Sample> {
    runtime()?.block_on(async {
        let client = async_nats::connect(url).await?;
        let payload = Bytes::from(vec![7u8; size]);
        let mut times = Vec::with_capacity(samples);
        for i in 0..samples + samples / 10 {
            let t = Instant::now();
            client.request(ECHO, payload.clone()).await?;
            if i >= samples / 10 {
                times.push(t.elapsed());
            }
        }
        Ok(Sample::latency(times))
    })
}

/// `total` requests with 64 in flight: throughput.
pub fn request_throughput(url: &str, size: usize, total: usize) -> anyhow::Result<Sample> {
    runtime()?.block_on(async {
        let client = Rc::new(async_nats::connect(url).await?);
        let payload = Bytes::from(vec![7u8; size]);
        crate::load::closed_loop(64, total / 64, move |_| {
            let (client, payload) = (client.clone(), payload.clone());
            async move {
                client.request(ECHO, payload).await?;
                Ok(())
            }
        })
        .await
    })
}

/// Child: subscribe with the client's default buffer, count what arrives.
pub fn subscriber(url: &str, expected: u64) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = async_nats::connect(url).await?;
        let mut sub = client.subscribe(TOPIC).await?;
        client.flush().await?;
        ready()?;
        let mut report = SubReport::default();
        while report.received < expected {
            match tokio::time::timeout(crate::pubsub::patience(report.received), sub.next()).await {
                Ok(Some(_)) => {
                    report.received += 1;
                    report.last_ns = now_ns();
                }
                Ok(None) | Err(_) => break,
            }
        }
        println!("{}", serde_json::to_string(&report)?);
        Ok(())
    })
}

/// Child: publish `count` messages as fast as the client allows.
pub fn publisher(url: &str, count: u64, size: usize) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = async_nats::connect(url).await?;
        ready()?;
        let mut go = String::new();
        std::io::stdin().read_line(&mut go)?;
        let payload = Bytes::from(vec![7u8; size]);
        let start = now_ns();
        for _ in 0..count {
            client.publish(TOPIC, payload.clone()).await?;
        }
        client.flush().await?;
        println!("{start}");
        Ok(())
    })
}

/// JetStream: a file-backed stream; `total` puts from 16 producers with up
/// to 64 acks outstanding each, counted once acknowledged.
pub fn jetstream_puts(url: &str, total: usize) -> anyhow::Result<Sample> {
    runtime()?.block_on(async {
        let client = async_nats::connect(url).await?;
        let js = async_nats::jetstream::new(client.clone());
        let _ = js.delete_stream("BENCH").await;
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "BENCH".into(),
            subjects: vec![JS_SUBJECT.into()],
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await?;
        let payload = Bytes::from(vec![7u8; 256]);
        let mut producers = Vec::with_capacity(16);
        for _ in 0..16 {
            producers.push(async_nats::jetstream::new(async_nats::connect(url).await?));
        }
        let producers = Rc::new(producers);
        let per_task = (total / (16 * 64)).max(1);
        let sample = crate::load::closed_loop(16 * 64, per_task, move |task| {
            let (producers, payload) = (producers.clone(), payload.clone());
            async move {
                producers[task % 16].publish(JS_SUBJECT, payload).await?.await?;
                Ok(())
            }
        })
        .await?;
        let _ = js.delete_stream("BENCH").await;
        Ok(sample)
    })
}

/// JetStream end to end: 64 producers put 256 B messages (each awaited until
/// the server acknowledged it) while a durable pull consumer receives them
/// and double-acks each (the ack itself confirmed by the server, like a
/// Switchboard ack that returns once on disk); rate from first put to last
/// confirmed ack, latency put → delivery.
pub fn jetstream_end_to_end(url: &str, total: usize) -> anyhow::Result<Sample> {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    const STREAM: &str = "BENCHE2E";
    const SUBJECT: &str = "bench.e2e";
    runtime()?.block_on(async {
        let client = async_nats::connect(url).await?;
        let js = async_nats::jetstream::new(client.clone());
        let _ = js.delete_stream(STREAM).await;
        let stream = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: STREAM.into(),
                subjects: vec![SUBJECT.into()],
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some("e2e".into()),
                ack_policy: AckPolicy::Explicit,
                max_ack_pending: 10_000,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let producer = Rc::new(async_nats::jetstream::new(async_nats::connect(url).await?));
        let local = tokio::task::LocalSet::new();
        let started = Instant::now();
        let (total, _producers) = crate::load::spawn_producers(&local, total, move |payload| {
            let producer = producer.clone();
            async move {
                producer.publish(SUBJECT, Bytes::from(payload)).await?.await?;
                Ok(())
            }
        });
        let latencies = local
            .run_until(async move {
                let mut latencies = Vec::with_capacity(total);
                let mut acks = tokio::task::JoinSet::new();
                while latencies.len() < total {
                    let message =
                        crate::load::next_delivery(&mut messages, "JetStream", latencies.len()).await?;
                    latencies.push(crate::load::since_stamp(&message.payload));
                    acks.spawn_local(async move {
                        message.double_ack().await.map_err(|e| anyhow::anyhow!("{e}"))
                    });
                    while acks.len() > 256 {
                        acks.join_next().await;
                    }
                }
                while acks.join_next().await.is_some() {}
                Ok::<_, anyhow::Error>(latencies)
            })
            .await?;
        let elapsed = started.elapsed();
        let _ = js.delete_stream(STREAM).await;
        let mut sample = Sample::latency(latencies);
        sample.rate = total as f64 / elapsed.as_secs_f64();
        Ok(sample)
    })
}
