//! RabbitMQ: a durable queue with persistent messages and publisher
//! confirms (the `lapin` client), beside Switchboard's durable queue.
//!
//! Settings, named because they matter: the distribution's RabbitMQ with an
//! empty config (no plugins), its own epmd on a private port, a classic
//! durable queue, `delivery_mode = 2`, one confirm per publish awaited, and
//! consumer acks that are not themselves confirmed (AMQP has no such thing).

use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::children::{self, Child};
use crate::stats::Sample;

/// A running broker (and the epmd it needs), ended with the bench.
pub struct Rabbit {
    pub url: String,
    _epmd: Child,
    _server: Child,
}

impl Rabbit {
    pub fn start(server: &Path, epmd: &Path, dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.join("rabbitmq");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("plugins"), "[].\n")?;
        let (epmd_port, node_port, dist_port) =
            (super::free_port()?, super::free_port()?, super::free_port()?);
        let epmd_env = format!("ERL_EPMD_PORT={epmd_port}");
        let epmd = children::spawn(&[
            "child-exec",
            "--wait-port",
            &epmd_port.to_string(),
            "--env",
            &epmd_env,
            "--",
            &epmd.display().to_string(),
        ])?;
        let env = [
            epmd_env.clone(),
            format!("RABBITMQ_NODE_PORT={node_port}"),
            format!("RABBITMQ_DIST_PORT={dist_port}"),
            format!("RABBITMQ_NODENAME=sbbench{}@localhost", std::process::id()),
            format!("RABBITMQ_MNESIA_BASE={}", dir.join("mnesia").display()),
            format!("RABBITMQ_LOG_BASE={}", dir.join("log").display()),
            format!("RABBITMQ_ENABLED_PLUGINS_FILE={}", dir.join("plugins").display()),
            format!("RABBITMQ_CONFIG_FILE={}", dir.join("rabbitmq").display()),
            format!("HOME={}", dir.display()),
        ];
        let mut args = vec!["child-exec".to_owned(), "--wait-port".to_owned(), node_port.to_string()];
        for var in &env {
            args.extend(["--env".to_owned(), var.clone()]);
        }
        args.extend(["--".to_owned(), server.display().to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = children::spawn(&args)?;
        Ok(Self {
            url: format!("amqp://guest:guest@127.0.0.1:{node_port}/%2f"),
            _epmd: epmd,
            _server: server,
        })
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

async fn channel(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok((connection, channel))
}

async fn declare(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    let _ = channel.queue_delete(queue, QueueDeleteOptions::default()).await;
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue, options, FieldTable::default()).await?;
    Ok(())
}

async fn publish(channel: &Channel, queue: &str, payload: &[u8]) -> anyhow::Result<()> {
    let properties = BasicProperties::default().with_delivery_mode(2);
    let confirm =
        channel.basic_publish("", queue, BasicPublishOptions::default(), payload, properties).await?;
    let confirmation = confirm.await?;
    anyhow::ensure!(confirmation.is_ack(), "the broker did not confirm a publish");
    Ok(())
}

/// Confirmed puts of 256 B: 16 channels × 64 in flight.
pub fn confirmed_puts(url: &str, total: usize) -> anyhow::Result<Sample> {
    const QUEUE: &str = "bench-puts";
    runtime()?.block_on(async {
        let mut channels = Vec::with_capacity(16);
        for _ in 0..16 {
            channels.push(channel(url).await?);
        }
        declare(&channels[0].1, QUEUE).await?;
        let channels = Rc::new(channels);
        let per_task = (total / (16 * 64)).max(1);
        let sample = crate::load::closed_loop(16 * 64, per_task, move |task| {
            let channels = channels.clone();
            async move { publish(&channels[task % 16].1, QUEUE, &[7u8; 256]).await }
        })
        .await?;
        let (_connection, admin) = channel(url).await?;
        let _ = admin.queue_delete(QUEUE, QueueDeleteOptions::default()).await;
        Ok(sample)
    })
}

/// Put → consume → ack: 64 producers awaiting each confirm, one consumer
/// acking each delivery; rate from the first put to the last ack sent.
pub fn end_to_end(url: &str, total: usize) -> anyhow::Result<Sample> {
    const QUEUE: &str = "bench-e2e";
    runtime()?.block_on(async {
        let (_producer_connection, producer) = channel(url).await?;
        let (_consumer_connection, consumer_channel) = channel(url).await?;
        declare(&producer, QUEUE).await?;
        consumer_channel.basic_qos(256, BasicQosOptions::default()).await?;
        let mut consumer = consumer_channel
            .basic_consume(QUEUE, "bench", BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        let producer = Rc::new(producer);
        let local = tokio::task::LocalSet::new();
        let started = Instant::now();
        let publisher = producer.clone();
        let (total, _producers) = crate::load::spawn_producers(&local, total, move |payload| {
            let producer = publisher.clone();
            async move { publish(&producer, QUEUE, &payload).await }
        });
        let latencies = local
            .run_until(async move {
                let mut latencies = Vec::with_capacity(total);
                while latencies.len() < total {
                    let delivery =
                        crate::load::next_delivery(&mut consumer, "RabbitMQ", latencies.len()).await?;
                    latencies.push(crate::load::since_stamp(&delivery.data));
                    delivery.ack(BasicAckOptions::default()).await?;
                }
                Ok::<_, anyhow::Error>(latencies)
            })
            .await?;
        let elapsed = started.elapsed();
        let _ = producer.queue_delete(QUEUE, QueueDeleteOptions::default()).await;
        let mut sample = Sample::latency(latencies);
        sample.rate = total as f64 / elapsed.as_secs_f64();
        Ok(sample)
    })
}
