//! Named shared regions end to end: real daemon, real peer processes, real
//! `kill -9`. A writer killed holding the lock leaves it recoverable and the
//! next locker told; readers in another process wait for announced changes
//! and never see a half-written copy; `ls --regions` names the holders; the
//! policy's `region.read` and `region.write` keep a second OS user out.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rustix::process::Signal;
use support::OTHER_USER;
use support::{
    example_peer, needs_root, next_line, other_user, signal_pid, wait_exit, Daemon, Guard, PeerLines,
};
use switchboard::{CallError, RegionError};

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/debug/examples/region_peer");

fn peer(daemon: &Daemon, args: &[&str]) -> (Guard, PeerLines) {
    example_peer(daemon, "region_peer", args)
}

#[tokio::test]
async fn a_writer_killed_holding_the_lock_leaves_it_recoverable_and_the_next_locker_is_told() {
    let daemon = Daemon::start();
    let (mut holder, mut lines) = peer(&daemon, &["hold", "camera.frames", "65536"]);
    let locked = next_line(&mut lines);
    assert_eq!(locked, "locked 1", "the holder's sequence is odd while it holds the lock");

    let bus = daemon.bus().await;
    let region = bus.region("camera.frames", 0).await.expect("open the existing region");
    assert_eq!(region.len(), 65536);
    assert!(region.try_lock().expect("try").is_none(), "the lock is held by the peer");
    // A reader never takes a half-written copy: it waits, then says why.
    match region.read() {
        Err(RegionError::Shared(err)) => assert!(err.to_string().contains("mid-write"), "{err}"),
        other => panic!("expected a refusal to copy mid-write, got {:?}", other.map(|(s, _)| s)),
    }

    signal_pid(holder.0.id(), Signal::KILL);
    wait_exit(&mut holder.0, Duration::from_secs(5)).expect("the holder died");
    let mut guard = region.lock_for(Duration::from_secs(5)).expect("lock").expect("free after the kill");
    assert!(guard.previous_owner_died(), "the next locker is told the owner died");
    assert_eq!(guard[0], 0xAA, "what the dead writer wrote is there");
    assert_eq!(guard[65535], 0, "and what it did not write is not");
    guard.fill(7);
    drop(guard);
    let announced = region.announce().await.expect("announce");
    assert_eq!(announced, 2, "odd (held) moved to the next even on letting go");
    let (sequence, bytes) = region.read().expect("a consistent copy now");
    assert_eq!(sequence, 2);
    assert!(bytes.iter().all(|b| *b == 7));
    let again = region.lock_for(Duration::from_secs(5)).expect("lock").expect("free");
    assert!(!again.previous_owner_died(), "recovered for good: the next locker is not told again");
}

#[tokio::test]
async fn readers_in_another_process_wait_for_each_change_and_see_it_whole() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let region = bus.region("cache.table", 1 << 20).await.expect("create");
    let (_reader, mut lines) = peer(&daemon, &["watch", "cache.table", "5"]);
    assert_eq!(next_line(&mut lines), "watching 0");
    for round in 1..=5u8 {
        region.write(|data| data.fill(round)).await.expect("write and announce");
        let line = next_line(&mut lines);
        assert_eq!(line, format!("{} {round} true", 2 * u64::from(round)), "round {round}");
    }

    let listed = daemon.cli(&["ls", "--regions", "--json"]).output().expect("ls --regions");
    assert!(listed.status.success(), "{listed:?}");
    let regions: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(regions[0]["name"], "cache.table");
    assert_eq!(regions[0]["size"], 1 << 20);
    assert_eq!(regions[0]["sequence"], 10);
    let holders = regions[0]["holders"].as_array().expect("holders");
    assert!(holders.iter().any(|h| h["pid"] == std::process::id() && h["write"] == true), "{holders:?}");

    // The CLI dumps what is there and watches the sequence.
    let dump = daemon.cli(&["region", "dump", "cache.table", "--length", "4KiB"]).output().expect("dump");
    assert!(dump.status.success(), "{dump:?}");
    assert_eq!(dump.stdout, vec![5u8; 4096]);
    let unknown = daemon.cli(&["region", "dump", "no.such"]).output().expect("dump");
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no such region: no region no.such"),
        "{unknown:?}"
    );

    // A read-only mapping has no lock to take.
    let reader = bus.region_reader("cache.table").await.expect("reader");
    assert!(matches!(reader.lock(), Err(RegionError::Shared(_))));
    // Sizes must agree, and a size over the principal's limit is refused.
    let mismatch = bus.region("cache.table", 4096).await.expect_err("size mismatch");
    assert!(
        matches!(&mismatch, RegionError::Call(CallError::BadArguments(m)) if m.contains("has 1048576 bytes")),
        "{mismatch}"
    );
    let huge = bus.region("huge", 2 << 30).await.expect_err("over max_blob");
    assert!(
        matches!(&huge, RegionError::Call(CallError::PayloadTooLarge(m)) if m.contains("max_blob")),
        "{huge}"
    );
}

#[test]
#[ignore = "needs root: scripts/test.sh runs it as root (`cargo test -- --ignored _as_root`)"]
fn a_user_without_region_rights_is_denied_by_name_as_root() {
    needs_root();
    let (uid, gid) = other_user();
    let policy = format!(
        "[security]\nsocket_mode = \"0666\"\n[[policy]]\nprincipal = \"user:{OTHER_USER}\"\nallow = [\"region.read camera.*\"]\n"
    );
    let (daemon, _work) = Daemon::start_with_config(&policy, &[]);
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let root_write =
        daemon.cli(&["region", "write", "camera.frames", "--size", "4KiB"]).stdin(Stdio::null()).output();
    assert!(root_write.expect("write").status.success());
    let secret =
        daemon.cli(&["region", "write", "secret.keys", "--size", "4KiB"]).stdin(Stdio::null()).output();
    assert!(secret.expect("write").status.success());

    let as_other = |args: &[&str]| -> Output {
        daemon
            .cli(args)
            .uid(uid)
            .gid(gid)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .expect("run as the other user")
    };
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();
    let allowed = as_other(&["region", "dump", "camera.frames", "--length", "16"]);
    assert!(allowed.status.success(), "{allowed:?}");
    let denied = as_other(&["region", "dump", "secret.keys"]);
    assert!(
        stderr(&denied)
            .contains(&format!("permission denied: user:{OTHER_USER} may not region.read secret.keys")),
        "{denied:?}"
    );
    let no_write = as_other(&["region", "write", "camera.frames"]);
    assert!(
        stderr(&no_write).contains(&format!("user:{OTHER_USER} may not region.write camera.frames")),
        "{no_write:?}"
    );
    // A reader's descriptor cannot be reopened writable behind the daemon's back.
    let escalate = Command::new(PEER)
        .args(["escalate", "camera.frames"])
        .env("SWITCHBOARD_ADDR", &daemon.addr)
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .output()
        .expect("run the peer as the other user");
    assert_eq!(String::from_utf8_lossy(&escalate.stdout).trim(), "denied", "{escalate:?}");
    // Its change events are the region's too.
    let events = as_other(&["sub", "$sys.regions.secret.keys", "--count", "1"]);
    assert!(stderr(&events).contains("permission denied"), "{events:?}");
}
