//! `switchboard check`: every problem of a config file, before it is used.

use std::path::PathBuf;
use std::process::ExitCode;

use switchboard_daemon::host::ConfigFile;

use crate::output;

/// Check a config file and print every problem, with its file, line and key.
///
/// Checks the syntax, unknown sections and keys, the policy's rules, each
/// service's settings, that every service's command is there and executable
/// and its directory, user and group exist, and that dependencies name real
/// services without a cycle. Exit code 0 only when the file is clean.
/// `switchboard reload` runs the same check and refuses a file that fails it.
///
/// Without --config: /etc/switchboard/switchboard.toml (as root), else
/// ~/.config/switchboard/switchboard.toml — where `switchboard install` puts it.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the built-in config of `switchboard up --demo` (the examples).
    #[arg(long, conflicts_with = "config")]
    demo: bool,
    /// Print {"file", "valid", "problems": [...]} as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let path = args.config.clone().unwrap_or_else(default_config);
    let file = match args.demo {
        true => Ok(ConfigFile::from_text("(up --demo)", super::demo::config()?)),
        false => ConfigFile::read(&path),
    };
    let path = if args.demo { PathBuf::from("(up --demo)") } else { path };
    let problems: Vec<String> = match file {
        Ok(file) => switchboard_daemon::check_config(&file, &super::up::hosted_apps())
            .iter()
            .map(ToString::to_string)
            .collect(),
        Err(err) => vec![err.to_string()],
    };
    if args.json {
        let report = serde_json::json!({ "file": path, "valid": problems.is_empty(), "problems": problems });
        output::line(serde_json::to_string_pretty(&report)?)?;
    } else if problems.is_empty() {
        output::line(format_args!("{}: no problems", path.display()))?;
    } else {
        for problem in &problems {
            output::line(problem)?;
        }
        let count = problems.len();
        eprintln!("{count} problem{} in {}", if count == 1 { "" } else { "s" }, path.display());
    }
    Ok(if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn default_config() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let user = !rustix::process::geteuid().is_root();
    super::install::Layout::new(PathBuf::new(), user, &home).config
}
