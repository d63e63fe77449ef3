//! The queue store under real I/O failures (issue 12, defect 3): a failed
//! `fdatasync` injected by strace, and a full filesystem (a small tmpfs
//! mounted inside a private mount namespace, never on the machine itself).
//! The store must fail closed: never confirm what is not durable, refuse
//! with a typed `storage_failed` while it cannot write, write again once it
//! can, and recover every confirmed message after `kill -9`.
//!
//! Needs root (strace attaching, `unshare -m`, `mount`). Run as another
//! user it says so and passes without checking; with `CI=true` it fails
//! instead, so CI never skips it silently.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use rustix::process::Signal;
use support::Daemon;
use switchboard::{Bus, CallError, PutOptions};

const OPS: &str = "ops-token-0123456789abcdefg";

/// Puts `name` (padded) with `name` as producer id until it is confirmed
/// (at most `tries`); returns how many attempts failed with `storage_failed`.
async fn put_until_confirmed(bus: &Bus, name: &str, tries: usize) -> usize {
    let queue = bus.queue("jobs").unwrap();
    for failures in 0..tries {
        let options = PutOptions { id: Some(name[..3].to_owned()), ..Default::default() };
        match queue.put_with(name.to_owned(), options).await {
            Ok(_) => return failures,
            Err(CallError::StorageFailed(_)) => continue,
            Err(other) => panic!("put {name}: expected success or storage_failed, got {other}"),
        }
    }
    panic!("put {name} never confirmed in {tries} tries");
}

/// Every message on `jobs`, acked; stops when none comes for a second.
async fn drain(bus: &Bus) -> Vec<String> {
    let mut consumer = bus.queue("jobs").unwrap().consume(64).await.unwrap();
    let mut got = Vec::new();
    while let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_secs(1), consumer.next()).await {
        got.push(String::from_utf8(delivery.payload.to_vec()).unwrap());
        delivery.ack().await.unwrap();
    }
    got
}

/// A daemon under strace, which fails `fdatasync` with EIO as `when` says
/// (strace's syntax: `3+5` is the third call and every fifth after it).
fn daemon_whose_fdatasync_fails(when: &str, extra: &[&str]) -> Daemon {
    let inject = format!("inject=fdatasync:error=EIO:when={when}");
    let strace = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync", "-e", inject.as_str()];
    Daemon::start_wrapped(tempfile::tempdir().unwrap(), &strace, extra)
}

fn kill_and_restart_plain(daemon: &mut Daemon) {
    daemon.signal(Signal::KILL);
    daemon.wait_exit(Duration::from_secs(10)).expect("the daemon (and its tracer) exit");
    daemon.wrapper.clear();
    daemon.restart();
}

/// Before the fix a failed fdatasync left the batch's bytes in the file
/// with the index not advanced, and the producer id recorded: the retry of
/// the failed put was "confirmed" as a duplicate of a message the queue did
/// not hold (depth one short), and later offsets were wrong. Failed before
/// the fix.
#[ignore = "needs root: scripts/test.sh runs it as root (`cargo test -- --ignored _as_root`)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fdatasync_confirms_nothing_and_the_retry_is_stored_as_root() {
    support::needs_root();
    // Every fifth fdatasync from the third on fails with EIO; small
    // segments so rolls and compaction run between the failures.
    let mut daemon = daemon_whose_fdatasync_fails("3+5", &["--queue-segment-bytes", "4096"]);
    let bus = daemon.bus().await;
    let names: Vec<String> = (0..40).map(|n| format!("m{n:02}-{}", "x".repeat(600))).collect();
    let mut failures = 0;
    for name in &names {
        failures += put_until_confirmed(&bus, name, 5).await;
    }
    assert!(failures >= 3, "only {failures} injected failures were seen: the injection did not work");
    let infos = bus.queues().await.unwrap();
    let jobs = infos.iter().find(|q| q.queue == "jobs").unwrap();
    assert_eq!(jobs.depth, names.len() as u64, "a confirmed put is not in the queue");
    drop(bus);
    kill_and_restart_plain(&mut daemon);
    let bus = daemon.bus().await;
    let got: BTreeSet<String> = drain(&bus).await.into_iter().collect();
    let want: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(got.len(), want.len(), "after kill -9: {} of {} confirmed puts", got.len(), want.len());
    assert_eq!(got, want);
}

/// A config with the gateway on `port` and a token that may put into `jobs`.
fn gateway_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let config = dir.join("daemon.toml");
    let text = format!(
        "[security]\ntokens = {{ ops = \"{OPS}\" }}\n[[policy]]\nprincipal = \"token:ops\"\nallow = [\"queue.put jobs\"]\n\
         [gateway]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// A full disk: puts fail with `storage_failed` (typed, every time, never a
/// confirmation), the daemon stays up, and once space is freed puts are
/// confirmed again; after `kill -9` every confirmed put is there. Before the
/// fix the failed write's partial bytes stayed in the log.
#[ignore = "needs root: scripts/test.sh runs it as root (`cargo test -- --ignored _as_root`)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_closed_and_recovers_when_space_returns_as_root() {
    support::needs_root();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A mount namespace holding a 512 KiB tmpfs at the data directory, kept
    // alive by a sleeping shell; the daemon is started inside it by nsenter.
    let script = format!(
        "mount -t tmpfs -o size=512k,mode=0700 switchboard-test {0} && head -c 200k /dev/zero > {0}/filler && echo up && exec sleep 300",
        data.display()
    );
    let mut holder = support::Guard(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.0.stdout.take().unwrap()), &mut line)
        .unwrap();
    assert_eq!(line.trim(), "up", "could not mount the test tmpfs");
    let ns = holder.0.id().to_string();
    let nsenter = ["nsenter", "-t", ns.as_str(), "-m", "--"];
    // The gateway too: an HTTP put on the full disk is a 500 storage_failed.
    let port = support::http::free_port();
    let config = gateway_config(dir.path(), port);
    let config = config.display().to_string();
    let extra = ["--queue-segment-bytes", "65536", "--config", config.as_str()];
    let mut daemon = Daemon::start_wrapped(dir, &nsenter, &extra);
    let bus = daemon.bus().await;
    let queue = bus.queue("jobs").unwrap();
    let mut confirmed = Vec::new();
    let mut refused = 0;
    for n in 0..2000 {
        let name = format!("m{n:04}-{}", "y".repeat(1000));
        match queue.put(name.clone()).await {
            Ok(_) => confirmed.push(name),
            Err(CallError::StorageFailed(message)) => {
                assert!(message.contains("No space left"), "{message}");
                refused += 1;
                if refused == 20 {
                    break;
                }
            }
            Err(other) => panic!("expected storage_failed on a full disk, got {other}"),
        }
    }
    assert_eq!(refused, 20, "the 512 KiB disk never filled");
    let http = support::http::Http::on_port(port);
    let put = tokio::task::spawn_blocking(move || {
        http.post("/v1/queues/jobs/messages", Some(OPS), &format!("\"{}\"", "z".repeat(1000)))
    });
    let (status, body) = put.await.unwrap();
    assert_eq!((status, body["error"].as_str()), (500, Some("storage_failed")), "{body}");
    // Space comes back: the store writes again.
    let freed = Command::new("nsenter")
        .args(["-t", &ns, "-m", "--", "rm", &format!("{}/data/filler", daemon.dir.path().display())])
        .status()
        .unwrap();
    assert!(freed.success());
    for n in 0..20 {
        let name = format!("after-{n}");
        queue.put(name.clone()).await.expect("puts are confirmed once space is back");
        confirmed.push(name);
    }
    drop(bus);
    daemon.signal(Signal::KILL);
    daemon.wait_exit(Duration::from_secs(10)).expect("killed");
    daemon.restart();
    let bus = daemon.bus().await;
    let mut got = drain(&bus).await;
    got.sort();
    confirmed.sort();
    assert_eq!(
        got.len(),
        confirmed.len(),
        "after kill -9, {} of {} confirmed puts",
        got.len(),
        confirmed.len()
    );
    assert_eq!(got, confirmed);
    drop(bus);
    drop(daemon);
    drop(holder);
}

/// A failed ack used to drop the message from memory anyway (and its bytes
/// stayed in the log): the queue showed one message fewer than the disk
/// held, or than it should after a restart. Now a failed removal leaves the
/// message queued, the ack answers `storage_failed`, and after `kill -9`
/// the message is still there. Every fdatasync from the sixth on fails
/// (five puts take one each). Failed before the fix (depth 4, not 5).
#[ignore = "needs root: scripts/test.sh runs it as root (`cargo test -- --ignored _as_root`)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_ack_leaves_the_message_in_the_queue_as_root() {
    support::needs_root();
    let mut daemon = daemon_whose_fdatasync_fails("6+", &[]);
    let bus = daemon.bus().await;
    let queue = bus.queue("jobs").unwrap();
    for n in 0..5 {
        queue.put(format!("m{n}")).await.unwrap();
    }
    let mut consumer = queue.consume(1).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await.unwrap().unwrap();
    match delivery.ack().await {
        Err(CallError::StorageFailed(message)) => {
            assert!(message.contains("nothing was confirmed"), "{message}")
        }
        other => panic!("an ack that could not be synced answered {other:?}"),
    }
    drop(consumer);
    let infos = bus.queues().await.unwrap();
    let jobs = infos.iter().find(|q| q.queue == "jobs").unwrap();
    assert_eq!(jobs.depth + jobs.in_flight, 5, "the message whose ack failed left the queue");
    drop(bus);
    kill_and_restart_plain(&mut daemon);
    let bus = daemon.bus().await;
    let got: BTreeSet<String> = drain(&bus).await.into_iter().collect();
    assert_eq!(got.len(), 5, "after kill -9: {got:?}");
}
