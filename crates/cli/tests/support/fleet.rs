//! A real fleet for the tests: one NATS server and one daemon per host, the
//! servers joined in one cluster. As root (as CI runs) each host lives in
//! its own network namespace with its own address, joined to the others
//! through a bridge in a fourth namespace — created here and removed on
//! drop, those private links only. Without root it falls back to loopback
//! ports, and says so. Processes are stopped by the PIDs started here.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{Daemon, BIN};

/// One machine of the fleet.
pub struct Host {
    pub name: String,
    pub daemon: Daemon,
    /// Its network namespace, when isolated.
    pub netns: Option<String>,
    /// Its NATS server's client URL.
    pub nats_url: String,
    nats: Child,
}

pub struct Fleet {
    pub hosts: Vec<Host>,
    /// The hub namespace and every host's, removed on drop.
    namespaces: Vec<String>,
    pub isolated: bool,
    work: tempfile::TempDir,
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Where the examples are built (`cargo build -p switchboard-cli --examples`).
pub fn example(name: &str) -> PathBuf {
    let path = Path::new(BIN).parent().expect("bin dir").join("examples").join(name);
    assert!(path.exists(), "build the examples first: cargo build -p switchboard-cli --examples");
    path
}

impl Fleet {
    /// Starts `names.len()` hosts; `config(name)` is appended to each
    /// host's `[fleet]` section (its `export`, `import`, …) and may add
    /// other sections after it.
    pub fn start(names: &[&str], config: impl Fn(&str) -> String) -> Self {
        let work = tempfile::tempdir().expect("temp dir");
        let isolated = rustix::process::geteuid().is_root();
        if !isolated {
            eprintln!("not root: the fleet runs on loopback ports, without network namespaces");
        }
        // Unique per fleet: tests of one binary run side by side.
        static FLEETS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let tag =
            format!("{}-{}", std::process::id(), FLEETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let mut fleet = Self { hosts: Vec::new(), namespaces: Vec::new(), isolated, work };
        let hub = format!("sbt{tag}-hub");
        if isolated {
            run(&["ip", "netns", "add", &hub]);
            fleet.namespaces.push(hub.clone());
            run(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
            run(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        }
        // Addresses and ports first: every server names the others' routes.
        let endpoints: Vec<(String, u16, u16)> = (0..names.len())
            .map(|i| {
                if isolated {
                    (format!("10.77.0.{}", i + 1), 4222, 6222)
                } else {
                    ("127.0.0.1".to_owned(), super::http::free_port(), super::http::free_port())
                }
            })
            .collect();
        for (i, name) in names.iter().enumerate() {
            let netns = isolated.then(|| format!("sbt{tag}-{name}"));
            if let Some(ns) = &netns {
                fleet.namespaces.push(ns.clone());
                link(&hub, ns, i, &endpoints[i].0);
            }
            let (address, client, _) = &endpoints[i];
            let conf = fleet.work.path().join(format!("nats-{name}.conf"));
            std::fs::write(
                &conf,
                nats_config(names, i, &endpoints, &fleet.work.path().join(format!("js-{name}"))),
            )
            .expect("nats config");
            let log = std::fs::File::create(fleet.work.path().join(format!("nats-{name}.log"))).expect("log");
            let nats = in_netns(netns.as_deref(), "nats-server")
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("nats-server (installed by scripts/install-test-deps.sh)");
            let nats_url = format!("nats://{address}:{client}");
            // Its own server first, then the others: it reconnects to
            // another when its own dies.
            let mut servers = vec![format!("\"{nats_url}\"")];
            servers.extend(
                endpoints
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, (a, c, _))| format!("\"nats://{a}:{c}\"")),
            );
            let section = format!(
                "[fleet]\nname = \"{name}\"\nnats = [{}]\nuser = \"{name}\"\npassword = \"{}\"\n{}",
                servers.join(", "),
                password(name),
                config(name)
            );
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("daemon.toml");
            std::fs::write(&path, section).expect("config");
            let path = path.display().to_string();
            let daemon = match &netns {
                Some(ns) => Daemon::start_wrapped(dir, &["ip", "netns", "exec", ns], &["--config", &path]),
                None => Daemon::start_wrapped(dir, &[], &["--config", &path]),
            };
            fleet.hosts.push(Host { name: (*name).to_owned(), daemon, netns, nats_url, nats });
        }
        fleet.wait_until_joined(Duration::from_secs(30));
        fleet
    }

    /// Waits until every host hears every other.
    pub fn wait_until_joined(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for host in &self.hosts {
            loop {
                let heard = self.heard_by(host);
                if heard.len() + 1 == self.hosts.len() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} hears only {heard:?} after {limit:?}; its log:\n{}",
                    host.name,
                    host.daemon.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The other hosts `host` hears from, as `ls --fleet --json` says.
    pub fn heard_by(&self, host: &Host) -> Vec<String> {
        let out = self.cli(host, &["ls", "--fleet", "--json"]).output().expect("ls --fleet");
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        status["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["host"].as_str().map(str::to_owned))
            .collect()
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).expect("a host of this fleet")
    }

    /// `switchboard ARGS` run on `host` (inside its namespace).
    pub fn cli(&self, host: &Host, args: &[&str]) -> Command {
        let mut cmd = in_netns(host.netns.as_deref(), BIN);
        cmd.args(args).env("SWITCHBOARD_ADDR", &host.daemon.addr).env_remove("SWITCHBOARD_LOG");
        cmd
    }

    /// An example program run on `host` (inside its namespace), on its bus.
    pub fn spawn_example(&self, host: &Host, name: &str, env: &[(&str, &str)]) -> Child {
        let mut cmd = in_netns(host.netns.as_deref(), &example(name).display().to_string());
        cmd.env("SWITCHBOARD_ADDR", &host.daemon.addr).env("HOST_LABEL", &host.name);
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn the example");
        // It prints one line once it serves.
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).expect("read its first line");
        assert!(line.starts_with("serving"), "{name} did not start: {line:?}");
        child
    }

    /// Runs `work` on a thread inside `host`'s network namespace (where its
    /// NATS server's address is reachable), with a runtime of its own.
    pub fn on_host<T: Send + 'static>(&self, host: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn_on_host(host, work).join().expect("the thread in the host's namespace")
    }

    /// Starts `work` on a thread inside `host`'s network namespace and
    /// returns at once.
    pub fn spawn_on_host<T: Send + 'static>(
        &self,
        host: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let netns = self.host(host).netns.clone();
        std::thread::spawn(move || {
            if let Some(ns) = netns {
                let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("the namespace's file");
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&file),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .expect("enter the namespace");
            }
            work()
        })
    }

    /// Stops the NATS server of `host` (`kill -9`).
    pub fn kill_nats(&mut self, name: &str) {
        let host = self.hosts.iter_mut().find(|h| h.name == name).expect("a host of this fleet");
        let _ = host.nats.kill();
        let _ = host.nats.wait();
    }
}

/// Host `index`'s namespace `ns`, linked to the hub's bridge by a veth
/// pair, with `address`.
fn link(hub: &str, ns: &str, index: usize, address: &str) {
    run(&["ip", "netns", "add", ns]);
    let port = format!("v{index}");
    run(&["ip", "link", "add", &port, "netns", hub, "type", "veth", "peer", "name", "eth0", "netns", ns]);
    run(&["ip", "-n", hub, "link", "set", &port, "master", "br0", "up"]);
    run(&["ip", "-n", ns, "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
    run(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
    run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
}

/// Host `name`'s NATS password (each host has its own user).
pub fn password(name: &str) -> String {
    format!("secret-of-{name}")
}

/// Host `index`'s NATS server: its client and cluster ports, routes to
/// every other server, JetStream in `store`, and one user per host whose
/// permissions confine what it publishes to its own subjects
/// (`sb.*.HOST`, `sb.*.HOST.>`, answers to requests it got) and what it
/// reads to the fleet's and its own inbox.
fn nats_config(names: &[&str], index: usize, endpoints: &[(String, u16, u16)], store: &Path) -> String {
    let (address, client, cluster) = &endpoints[index];
    let routes: Vec<String> = endpoints
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != index)
        .map(|(_, (a, _, c))| format!("\"nats://{a}:{c}\""))
        .collect();
    let users: Vec<String> = names
        .iter()
        .map(|host| {
            format!(
                "{{ user: \"{host}\", password: \"{}\", permissions: {{ \
                 publish: {{ allow: [\"sb.*.{host}\", \"sb.*.{host}.>\", \"sbq.>\", \"$JS.API.>\", \"$JS.ACK.>\"] }}, \
                 subscribe: {{ allow: [\"sb.>\", \"_INBOX_{host}.>\", \"$JS.EVENT.ADVISORY.>\"] }}, allow_responses: true }} }}",
                password(host)
            )
        })
        .collect();
    format!(
        "host: \"{address}\"\nport: {client}\nserver_name: \"nats-{name}\"\n\
         jetstream {{ store_dir: \"{store}\" }}\n\
         cluster {{ name: \"sbtest\", listen: \"{address}:{cluster}\", routes: [{routes}] }}\n\
         authorization {{ users: [{users}] }}\n",
        name = names[index],
        store = store.display(),
        routes = routes.join(", "),
        users = users.join(", "),
    )
}

fn in_netns(netns: Option<&str>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, program]);
            cmd
        }
        None => Command::new(program),
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            let _ = host.nats.kill();
            let _ = host.nats.wait();
        }
        // The daemons stop as their `Daemon`s drop; then the namespaces go,
        // and the links in them with them.
        let namespaces = std::mem::take(&mut self.namespaces);
        self.hosts.clear();
        for ns in namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
