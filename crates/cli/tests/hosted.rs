//! The hosted-app interface (issue 19), with a real daemon in this process
//! and a small app: sessions an app opens on behalf of a principal get that
//! principal's policy, connection limit and reloads, never the daemon's own
//! rights; an app's config section is its own; state handed off by one
//! daemon reaches the same app in its successor.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use switchboard::{Bus, CallError, ConnectError, RegisterError, Reject};
use switchboard_daemon::host::{App, AppContext, AppError, Apps, ConfigError, Principal, Section};
use switchboard_daemon::{Config, Daemon, HandOff};
use switchboard_proto::ErrorCode;
use tokio_util::sync::CancellationToken;

/// What each probe saw, by the data directory of its daemon (tests run in
/// parallel, each with its own daemon).
static SEEN: Mutex<Vec<(PathBuf, AppContext, Option<Bytes>)>> = Mutex::new(Vec::new());

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ProbeConfig {
    #[serde(default)]
    note: String,
}

/// The probe's part of the file: its one key.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeSection {
    #[serde(default)]
    probe: ProbeConfig,
}

struct Probe {
    note: String,
}

impl App for Probe {
    const NAME: &'static str = "probe";
    const SECTIONS: &'static [&'static str] = &["probe"];
    type Config = ProbeConfig;

    fn configure(section: &Section<'_>) -> Result<ProbeConfig, ConfigError> {
        section.parse::<ProbeSection>().map(|section| section.probe)
    }

    async fn start(
        context: AppContext,
        config: ProbeConfig,
        inherited: Option<Bytes>,
    ) -> Result<Self, AppError> {
        SEEN.lock().unwrap().push((context.data_dir.clone(), context, inherited));
        Ok(Self { note: config.note })
    }

    async fn reload(&mut self, config: ProbeConfig) -> Result<Bytes, String> {
        self.note = config.note;
        Ok(Bytes::from(self.note.clone()))
    }

    async fn stop(self) {}

    async fn hand_off(self) -> Option<Bytes> {
        Some(Bytes::from(format!("handed off: {}", self.note)))
    }
}

fn seen(data_dir: &Path) -> Vec<(AppContext, Option<Bytes>)> {
    let seen = SEEN.lock().unwrap();
    seen.iter().filter(|(dir, ..)| dir == data_dir).map(|(_, c, i)| (c.clone(), i.clone())).collect()
}

struct Running {
    shutdown: CancellationToken,
    hand_off: CancellationToken,
    task: tokio::task::JoinHandle<Result<Option<HandOff>, switchboard_daemon::DaemonError>>,
}

async fn start(dir: &Path, handed: Option<HandOff>) -> Running {
    let mut config = Config {
        listen: vec![switchboard::Endpoint::Unix(dir.join("bus.sock"))],
        data_dir: dir.join("data"),
        config_file: Some(dir.join("switchboard.toml")),
        ..Config::default()
    };
    let carried = handed.map(|handed| {
        config.listen.clear();
        config.inherited = handed.sockets;
        handed.carried
    });
    let mut daemon = Daemon::bind(config, Apps::new().with::<Probe>()).await.unwrap();
    if let Some(carried) = carried {
        daemon.inherit(carried);
    }
    let (shutdown, hand_off) = (CancellationToken::new(), daemon.hand_off_trigger());
    let (ready, is_ready) = tokio::sync::oneshot::channel();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        daemon
            .run(stop, move || {
                let _ = ready.send(());
            })
            .await
    });
    is_ready.await.unwrap();
    Running { shutdown, hand_off, task }
}

const POLICY: &str = r#"
probe = { note = "first" }
[security]
tokens = { edge = "a-long-random-value" }
max_connections_per_principal = 1
[[policy]]
principal = "token:edge"
allow = ["call demo.*"]
"#;

#[tokio::test]
async fn a_session_opened_for_a_principal_gets_its_policy_limits_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("switchboard.toml"), POLICY).unwrap();
    let daemon = start(dir.path(), None).await;
    let (context, _) = seen(&dir.path().join("data")).remove(0);
    let endpoint = context.endpoints[0].clone();

    // The daemon's own session may serve anything; it counts against no limit.
    let own = Bus::connect_hosted(
        endpoint.clone(),
        "own".into(),
        context.router.dialer(Principal::daemon(), "own"),
    )
    .await
    .unwrap();
    let mut served = Vec::new();
    for name in ["demo", "other"] {
        let builder = own.serve(name).unwrap();
        let builder = builder.method("echo", |request| async move { Ok::<_, Reject>(request.payload) });
        served.push(builder.start().await.unwrap());
    }

    let edge_dial = context.router.dialer(Principal::token("edge"), "edge");
    let edge = Bus::connect_hosted(endpoint.clone(), "edge".into(), edge_dial.clone()).await.unwrap();
    assert_eq!(&edge.call("demo.echo", &b"hi"[..]).await.unwrap()[..], b"hi");
    // Not the daemon's unrestricted identity: what the policy does not grant is refused.
    let denied = edge.call("other.echo", &b"hi"[..]).await.unwrap_err();
    assert!(matches!(&denied, CallError::PermissionDenied(_)), "{denied:?}");
    let builder = edge.serve("edge-service").unwrap();
    let denied =
        builder.method("m", |_| async { Ok::<_, Reject>(Bytes::new()) }).start().await.err().unwrap();
    assert!(matches!(&denied, RegisterError::Refused(CallError::PermissionDenied(_))), "{denied:?}");
    // token:edge may have one connection.
    let second = Bus::connect_hosted(endpoint.clone(), "edge-2".into(), edge_dial).await.err().unwrap();
    assert!(matches!(&second, ConnectError::Refused { code: ErrorCode::Overloaded, .. }), "{second:?}");

    // A reload that takes the grant away applies to the hosted session at once;
    // the app gets its own section's new value.
    let without_grant = POLICY.replace("allow = [\"call demo.*\"]", "allow = []").replace("first", "second");
    std::fs::write(dir.path().join("switchboard.toml"), without_grant).unwrap();
    let reports = context.reloader.reload().await.unwrap();
    assert_eq!(&reports["probe"][..], b"second");
    let denied = edge.call("demo.echo", &b"hi"[..]).await.unwrap_err();
    assert!(matches!(&denied, CallError::PermissionDenied(_)), "{denied:?}");

    // A file with a section nobody owns is refused whole: nothing changes.
    std::fs::write(dir.path().join("switchboard.toml"), format!("{POLICY}\n[colours]\nred = 1\n")).unwrap();
    let refused = context.reloader.reload().await.unwrap_err();
    assert!(refused.contains("unknown section `colours`"), "{refused}");
    assert!(edge.call("demo.echo", &b"hi"[..]).await.is_err());

    daemon.shutdown.cancel();
    assert!(daemon.task.await.unwrap().unwrap().is_none());
}

#[tokio::test]
async fn state_an_app_hands_off_reaches_it_in_the_successor() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("switchboard.toml"), "probe = { note = \"before\" }\n").unwrap();
    let first = start(dir.path(), None).await;
    let publisher = Bus::connect(dir.path().join("bus.sock").to_str().unwrap()).await.unwrap();
    let options = switchboard::PublishOptions { retain: true, ..Default::default() };
    let topic = switchboard_proto::Topic::parse("db.primary").unwrap();
    publisher.publish_with(topic, Bytes::from_static(b"host-a"), options).await.unwrap();
    publisher.flush().await.unwrap();
    first.hand_off.cancel();
    let handed = first.task.await.unwrap().unwrap().unwrap();
    assert_eq!(&handed.carried.apps["probe"][..], b"handed off: before");
    assert_eq!(handed.sockets.len(), 1);
    // The socket stays in place for the successor.
    assert!(dir.path().join("bus.sock").exists());

    let second = start(dir.path(), Some(handed)).await;
    let inherited: Vec<Option<Bytes>> = seen(&dir.path().join("data")).into_iter().map(|(_, i)| i).collect();
    assert_eq!(inherited, vec![None, Some(Bytes::from_static(b"handed off: before"))]);
    // Served on the handed socket, with the retained value and a generation.
    let client = Bus::connect(dir.path().join("bus.sock").to_str().unwrap()).await.unwrap();
    assert_eq!(client.daemon_info().await.unwrap().generation, 1);
    let mut sub = client.subscribe("db.*").await.unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next()).await.unwrap();
    let Some(switchboard::Item::Message(value)) = next else { panic!("{next:?}") };
    assert_eq!((&value.payload[..], value.retained), (&b"host-a"[..], true));
    second.shutdown.cancel();
    assert!(second.task.await.unwrap().unwrap().is_none());
    // Owned again: removed at the final stop.
    assert!(!dir.path().join("bus.sock").exists());
}
