//! `switchboard`: run the daemon and talk to it from the shell.
//!
//! A thin binary: flags are parsed into the library's domain types and the
//! work is done by `switchboard-daemon` and the `switchboard` client.
//! Exit codes: 0 success, 1 the operation failed (an error reply, no
//! daemon), 2 bad usage or input. A closed stdout (`| head`) is not an error.
#![forbid(unsafe_code)]

mod cmd;
mod json;
mod output;
mod systemd;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchboard_proto::supervision as sup;

/// Switchboard: start, control and connect the services of this machine.
///
/// Services register names on a local daemon and call each other through it.
/// Start a daemon with `switchboard up`, then in another shell:
///
///   switchboard respond demo.echo --echo
///   switchboard call demo.echo '{"hi":1}'
///
/// With `switchboard up --config FILE` the daemon also supervises services:
/// `switchboard status`, `start`, `stop`, `restart`, `pause`, `continue`,
/// `control`, `logs`, `reload`; `reexec` upgrades the daemon in place.
///
/// Client commands find the daemon at $SWITCHBOARD_ADDR, else at the default
/// socket ($XDG_RUNTIME_DIR/switchboard/bus.sock or /tmp/switchboard-UID/bus.sock).
#[derive(Parser)]
#[command(name = "switchboard", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How client commands reach the daemon.
#[derive(clap::Args, Clone)]
pub struct Connection {
    /// Daemon address: unix:PATH, tcp://HOST:PORT or a socket path.
    #[arg(long, env = "SWITCHBOARD_ADDR", global = true, value_name = "ADDR")]
    addr: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    Up(cmd::up::Args),
    Call(cmd::call::CallArgs),
    Notify(cmd::call::NotifyArgs),
    Broadcast(cmd::call::BroadcastArgs),
    Pub(cmd::topics::PubArgs),
    Sub(cmd::topics::SubArgs),
    Respond(cmd::respond::Args),
    Ls(cmd::ls::Args),
    Queue(cmd::queue::Args),
    Region(cmd::region::Args),
    Status(cmd::services::StatusArgs),
    Start(cmd::services::LifecycleArgs),
    Stop(cmd::services::LifecycleArgs),
    Restart(cmd::services::LifecycleArgs),
    Pause(cmd::services::LifecycleArgs),
    Continue(cmd::services::LifecycleArgs),
    Control(cmd::services::ControlArgs),
    Logs(cmd::logs::Args),
    Reload(cmd::services::ReloadArgs),
    Reexec(cmd::reexec::Args),
    Check(cmd::check::Args),
    Whoami(cmd::ls::WhoamiArgs),
    Metrics(cmd::metrics::Args),
    Monitor(cmd::monitor::Args),
    Top(cmd::top::Args),
    Install(cmd::install::InstallArgs),
    Uninstall(cmd::install::UninstallArgs),
    Completions(cmd::shell::CompletionsArgs),
    Man(cmd::shell::ManArgs),
    #[command(hide = true)]
    Names(cmd::shell::NamesArgs),
}

/// Parses durations like `500ms`, `5s`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("{err} (try 500ms, 5s, 2m)"))
}

/// The log goes to stderr: colored only on a terminal, one JSON object per
/// line with `up --log-format json`. `SWITCHBOARD_LOG` filters it
/// (`info` for the daemon, `warn` for client commands by default).
fn init_logging(daemon: bool, format: cmd::up::LogFormat) {
    use std::io::IsTerminal;
    let default_level = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        cmd::up::LogFormat::Json => builder.json().with_current_span(false).init(),
        cmd::up::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::Up(args) => args.log_format,
        _ => cmd::up::LogFormat::Text,
    };
    init_logging(matches!(cli.command, Command::Up(_)), format);

    let result = match cli.command {
        Command::Up(args) => cmd::up::run(args),
        Command::Call(args) => cmd::client_runtime(cmd::call::call(args)),
        Command::Notify(args) => cmd::client_runtime(cmd::call::notify(args)),
        Command::Broadcast(args) => cmd::client_runtime(cmd::call::broadcast(args)),
        Command::Pub(args) => cmd::client_runtime(cmd::topics::publish(args)),
        Command::Sub(args) => cmd::client_runtime(cmd::topics::subscribe(args)),
        Command::Respond(args) => cmd::client_runtime(cmd::respond::run(args)),
        Command::Ls(args) => cmd::client_runtime(cmd::ls::run(args)),
        Command::Queue(args) => cmd::client_runtime(cmd::queue::run(args)),
        Command::Region(args) => cmd::client_runtime(cmd::region::run(args)),
        Command::Status(args) => cmd::client_runtime(cmd::services::status(args)),
        Command::Start(args) => cmd::client_runtime(cmd::services::lifecycle(sup::START, args)),
        Command::Stop(args) => cmd::client_runtime(cmd::services::lifecycle(sup::STOP, args)),
        Command::Restart(args) => cmd::client_runtime(cmd::services::lifecycle(sup::RESTART, args)),
        Command::Pause(args) => cmd::client_runtime(cmd::services::lifecycle(sup::PAUSE, args)),
        Command::Continue(args) => cmd::client_runtime(cmd::services::lifecycle(sup::CONTINUE, args)),
        Command::Control(args) => cmd::client_runtime(cmd::services::control(args)),
        Command::Logs(args) => cmd::client_runtime(cmd::logs::run(args)),
        Command::Reload(args) => cmd::client_runtime(cmd::services::reload(args)),
        Command::Reexec(args) => cmd::client_runtime(cmd::reexec::run(args)),
        Command::Check(args) => cmd::check::run(&args),
        Command::Whoami(args) => cmd::client_runtime(cmd::ls::whoami(args)),
        Command::Metrics(args) => cmd::client_runtime(cmd::metrics::run(args)),
        Command::Monitor(args) => cmd::client_runtime(cmd::monitor::run(args)),
        Command::Top(args) => cmd::top::run(&args),
        Command::Install(args) => cmd::install::install(&args),
        Command::Uninstall(args) => cmd::install::uninstall(&args),
        Command::Completions(args) => cmd::shell::completions(&args),
        Command::Man(args) => cmd::shell::man(&args),
        Command::Names(args) => cmd::client_runtime(cmd::shell::names(args)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            if output::is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::from(cmd::exit_code(&err))
        }
    }
}
