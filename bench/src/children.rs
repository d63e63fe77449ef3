//! The processes a benchmark starts: a raw echo server, a raw relay, the
//! daemon and a Switchboard echo service — each this same binary, run with a
//! hidden subcommand, so the bench measures exactly this build.
//!
//! Every child watches its parent and exits when the parent is gone, so an
//! interrupted bench leaves nothing running; the parent also kills its
//! children (by PID) when their [`Child`] guard drops.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// How long a child has to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process, stopped when dropped.
pub struct Child {
    process: std::process::Child,
    /// For `child-exec`: closing it tells the child to stop its server.
    stdin: Option<std::process::ChildStdin>,
}

impl Child {
    pub fn pid(&self) -> u32 {
        self.process.id()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(stdin) = self.stdin.take() {
            // End of input: child-exec stops its server and exits.
            drop(stdin);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if matches!(self.process.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Starts `self ARGS...` and waits for it to print `ready`. A
/// `child-exec` child also gets a pipe on its stdin, whose end stops it.
pub fn spawn(args: &[&str]) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let exec = args.first() == Some(&"child-exec");
    let mut process = Command::new(exe)
        .args(args)
        .stdin(if exec { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {args:?}"))?;
    let stdin = process.stdin.take();
    let stdout = process.stdout.take().context("child stdout")?;
    let mut child = Child { process, stdin };
    // Read "ready" on a helper thread, so a child that hangs while starting
    // fails the bench with its name instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(READY_TIMEOUT).unwrap_or_default();
    if line.trim() != "ready" {
        child.stdin = None;
        bail!("{args:?} did not start within {READY_TIMEOUT:?} (said {line:?})");
    }
    Ok(child)
}

/// Runs `command` (a peer's server) as our child; says ready once
/// `wait_port` accepts connections (or `wait_path` exists); stops it when
/// our stdin ends — the bench closes it when done, and the kernel closes it
/// when the bench dies, however it dies. This ties a foreign server to the
/// bench's lifetime without `unsafe` pre-exec hooks.
pub fn exec(
    command: &[String],
    env: &[String],
    wait_port: Option<u16>,
    wait_path: Option<&Path>,
) -> anyhow::Result<()> {
    let (program, args) = command.split_first().context("no command")?;
    let vars = env.iter().filter_map(|kv| kv.split_once('='));
    // Its own process group: servers started by a script (RabbitMQ's beam
    // under its launcher) are stopped with it.
    let mut server = Command::new(program)
        .args(args)
        .envs(vars)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    if let Some(port) = wait_port {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline || server.try_wait()?.is_some() {
                stop_group(&mut server);
                bail!("{program} did not start listening on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if let Some(path) = wait_path {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !path.exists() {
            if std::time::Instant::now() > deadline || server.try_wait()?.is_some() {
                stop_group(&mut server);
                bail!("{program} did not create {}", path.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    ready();
    let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let ended = ended.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            ended.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if ended.load(std::sync::atomic::Ordering::SeqCst) || server.try_wait()?.is_some() {
            stop_group(&mut server);
            return Ok(());
        }
    }
}

/// SIGTERM to the server's whole process group, SIGKILL after 5 s.
fn stop_group(server: &mut std::process::Child) {
    use rustix::process::{kill_process_group, Pid, Signal};
    let Some(group) = i32::try_from(server.id()).ok().and_then(Pid::from_raw) else { return };
    let _ = kill_process_group(group, Signal::TERM);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        // The group is gone once no process of it is left to signal.
        let _ = server.try_wait();
        if kill_process_group(group, Signal::CONT).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill_process_group(group, Signal::KILL);
    let _ = server.wait();
}

/// Exits this process when its parent dies.
pub fn exit_with_parent() {
    let parent = rustix::process::getppid();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(200));
        if rustix::process::getppid() != parent {
            std::process::exit(0);
        }
    });
}

fn ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
}

/// Raw baseline: echo fixed-size messages back, one blocking thread per connection.
pub fn raw_echo(socket: &Path, size: usize) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    ready();
    for stream in listener.incoming() {
        let mut stream = stream?;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; size];
            while stream.read_exact(&mut buf).is_ok() {
                if stream.write_all(&buf).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

/// Raw baseline: forward bytes both ways between each client and `upstream`,
/// a blocking thread per direction — the least a relay process can cost.
pub fn raw_relay(socket: &Path, upstream: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    ready();
    for client in listener.incoming() {
        let client = client?;
        let server = UnixStream::connect(upstream)?;
        let (mut c_read, mut s_write) = (client.try_clone()?, server.try_clone()?);
        let (mut s_read, mut c_write) = (server, client);
        std::thread::spawn(move || std::io::copy(&mut c_read, &mut s_write));
        std::thread::spawn(move || std::io::copy(&mut s_read, &mut c_write));
    }
    Ok(())
}

/// The daemon, as `switchboard up` runs it (single-threaded runtime).
pub fn daemon(
    socket: &Path,
    data_dir: &Path,
    services: Option<std::path::PathBuf>,
    max_frame: Option<u32>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut limits = switchboard_daemon::Limits::default();
        if let Some(max_frame) = max_frame {
            limits.max_outbox += max_frame.saturating_sub(limits.max_frame) as usize;
            limits.max_frame = max_frame;
        }
        let config = switchboard_daemon::Config {
            limits,
            listen: vec![switchboard::Endpoint::Unix(socket.to_owned())],
            data_dir: data_dir.to_owned(),
            config_file: services,
            ..Default::default()
        };
        let apps = switchboard_daemon::host::Apps::new()
            .with::<switchboard_supervisor::Supervisor>()
            .with::<switchboard_gateway::Gateway>()
            .with::<switchboard_fleet::Fleet>();
        let daemon = switchboard_daemon::Daemon::bind(config, apps).await?;
        let _ = daemon.run(tokio_util::sync::CancellationToken::new(), ready).await;
        Ok(())
    })
}

/// A Switchboard service `bench.echo` that replies with the request, as
/// `instances` instances on one connection.
pub fn sb_echo(addr: &str, instances: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let bus = switchboard::Bus::connect(addr).await?;
        let mut services = Vec::new();
        for _ in 0..instances.max(1) {
            let echo = |request: switchboard::Request| async move { Ok(request.payload) };
            services.push(bus.serve("bench")?.method("echo", echo).start().await?);
        }
        ready();
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// A minimal HTTP echo server (hyper, through axum): `POST /echo` answers
/// the body as JSON, the baseline of the gateway's HTTP cost.
pub fn http_echo(port: u16) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let app = axum::Router::new().route(
            "/echo",
            axum::routing::post(|body: bytes::Bytes| async move {
                ([(axum::http::header::CONTENT_TYPE, "application/json")], body)
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        ready();
        axum::serve(listener, app).await?;
        Ok(())
    })
}
