//! A flood of connections that never say `Hello` (issue 12, defect 9).
//! Needs root (to flood as a second OS user); with `CI=true` it must run.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use support::Daemon;

const FLOOD: usize = 2000;

/// Before the fix 2,000 connections that never sent `Hello` took every
/// connection slot (1,024) for the handshake timeout, so a real client
/// connecting meanwhile was refused at once ("already has 1024
/// connections"). Pending handshakes now have their own budget per uid, so
/// the flooding uid locks out only itself. Failed before the fix.
#[ignore = "needs root: scripts/test.sh runs it as root (`cargo test -- --ignored _as_root`)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_user_do_not_lock_out_another_as_root() {
    support::needs_root();
    support::raise_nofile();
    let (uid, gid) = support::other_user();
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = work.path().join("daemon.toml");
    std::fs::write(&config, "[security]\nsocket_mode = \"0666\"\n").unwrap();
    let daemon = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut flooder = support::Guard(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "hold_idle_connections", "--ignored", "--nocapture"])
            .env("FLOOD_SOCKET", &daemon.socket)
            .uid(uid)
            .gid(gid)
            .current_dir("/")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = std::io::BufReader::new(flooder.0.stdout.take().unwrap());
    let flooding = stdout.lines().map_while(Result::ok).find(|l| l.starts_with("flooding"));
    println!("{flooding:?}");
    assert!(flooding.is_some(), "the flooder did not start");
    // While the flood holds its connections (5 s handshake timeout), fresh
    // clients of another user connect and call at once.
    let started = Instant::now();
    for _ in 0..10 {
        let bus = daemon.bus().await;
        tokio::time::timeout(Duration::from_secs(1), bus.whoami()).await.unwrap().unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(3), "served, but slowly: {:?}", started.elapsed());
    assert!(daemon.log().contains("uid") && daemon.log().contains("in their handshake"), "{}", daemon.log());
}

/// The flooder of the test above, run as a second user in its own process:
/// opens connections that never send `Hello`, holds them for 4 seconds.
#[test]
#[ignore = "run by idle_connections_from_one_user_do_not_lock_out_another_as_root, as another user"]
fn hold_idle_connections() {
    let Ok(socket) = std::env::var("FLOOD_SOCKET") else { return };
    let mut held = Vec::new();
    for _ in 0..FLOOD {
        match std::os::unix::net::UnixStream::connect(&socket) {
            Ok(stream) => held.push(stream),
            Err(err) => {
                println!("connect failed after {}: {err}", held.len());
                break;
            }
        }
    }
    println!("flooding with {} connections", held.len());
    std::thread::sleep(Duration::from_secs(4));
}
