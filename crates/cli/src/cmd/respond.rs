//! `switchboard respond`: serve a method from the shell.

use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use switchboard::{Reject, Request, Target};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};

use crate::cmd::{connect, Usage};
use crate::{json, Connection};

/// Serve SERVICE.METHOD from the shell until Ctrl-C.
///
/// Exactly one of:
///   --echo         reply with the request itself
///   --reply JSON   reply with this fixed JSON
///   --exec CMD     run `sh -c CMD` per request: the request arrives as JSON
///                  on its stdin, its stdout (JSON) is the reply, and a
///                  non-zero exit rejects the call with its stderr.
///
/// Run it several times to get several instances; calls are balanced
/// between them.
///
/// Example: switchboard respond demo.upper --exec 'jq -c "ascii_upcase"'
#[derive(clap::Args)]
pub struct Args {
    /// The method to serve, e.g. demo.echo.
    target: Target,
    /// Reply with the request payload.
    #[arg(long, conflicts_with_all = ["reply", "exec"], required_unless_present_any = ["reply", "exec"])]
    echo: bool,
    /// Reply with this JSON.
    #[arg(long, value_name = "JSON", conflicts_with = "exec")]
    reply: Option<String>,
    /// Run this shell command per request.
    #[arg(long, value_name = "CMD")]
    exec: Option<String>,
    /// Requests handled at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Exit after serving this many requests.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Do not log each request on stderr.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Clone)]
enum Behaviour {
    Echo,
    Reply(Bytes),
    Exec(Arc<str>),
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let behaviour = match (&args.reply, &args.exec) {
        (Some(reply), _) => Behaviour::Reply(
            json::payload_from_arg(Some(reply)).map_err(|e| Usage(format!("--reply: {e:#}")))?,
        ),
        (None, Some(cmd)) => Behaviour::Exec(Arc::from(cmd.as_str())),
        (None, None) => Behaviour::Echo,
    };
    let bus = connect(&args.connection, "switchboard-respond").await?;
    let served = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let (quiet, limit) = (args.quiet, args.count);
    let handler = {
        let (served, done) = (served.clone(), done.clone());
        move |request: Request| {
            let (behaviour, served, done) = (behaviour.clone(), served.clone(), done.clone());
            async move {
                let result = handle(&behaviour, &request).await;
                if !quiet {
                    let outcome = match &result {
                        Ok(_) => "ok".to_owned(),
                        Err(reject) => format!("rejected: {reject}"),
                    };
                    eprintln!("{} from pid {}: {outcome}", request.method, request.caller.pid);
                }
                if limit.is_some_and(|n| served.fetch_add(1, Ordering::SeqCst) + 1 >= n) {
                    done.notify_one();
                }
                result
            }
        }
    };
    let service = bus
        .serve(args.target.service.as_str())?
        .max_concurrency(args.concurrency)
        .method(args.target.method.as_str(), handler)
        .start()
        .await?;
    eprintln!(
        "serving {} as instance {} on {} (Ctrl-C to stop)",
        args.target,
        service.instance(),
        bus.endpoint()
    );
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
        _ = done.notified() => {
            // Let the last reply leave before unregistering.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), service.stop()).await;
    Ok(ExitCode::SUCCESS)
}

async fn handle(behaviour: &Behaviour, request: &Request) -> Result<Bytes, Reject> {
    match behaviour {
        Behaviour::Echo => Ok(request.payload.clone()),
        Behaviour::Reply(reply) => Ok(reply.clone()),
        Behaviour::Exec(cmd) => exec(cmd, request).await.map_err(|err| Reject::new(format!("{err:#}"))),
    }
}

/// Runs `cmd` with the request as JSON on stdin; its stdout is the reply.
async fn exec(cmd: &str, request: &Request) -> anyhow::Result<Bytes> {
    let input = json::from_msgpack(&request.payload)?;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("SWITCHBOARD_METHOD", request.method.as_str())
        .env("SWITCHBOARD_CALLER_PID", request.caller.pid.to_string())
        .env("SWITCHBOARD_CALLER_UID", request.caller.uid.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that ignores its input may close stdin early; that is fine.
        let _ = stdin.write_all(format!("{input}\n").as_bytes()).await;
    }
    // The caller gives up at its deadline and reports a timeout; stopping the
    // command a little later keeps our late answer from racing that report.
    let grace = Duration::from_millis(250);
    let left = request
        .deadline
        .map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(Instant::now()) + grace);
    let output = tokio::time::timeout(left, child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("{cmd:?} did not finish before the caller's deadline"))??;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        let status = output.status.code().map_or("a signal".to_owned(), |c| format!("status {c}"));
        anyhow::bail!(
            "{cmd:?} exited with {status}{}",
            if stderr.is_empty() { String::new() } else { format!(": {stderr}") }
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let reply: serde_json::Value = if stdout.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(stdout.trim())
            .with_context(|| format!("{cmd:?} printed something that is not JSON: {}", stdout.trim()))?
    };
    Ok(json::to_msgpack(&reply))
}
