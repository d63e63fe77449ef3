//! The conventions of a command-line tool: shell completions and man pages,
//! both generated from the CLI's own definitions (clap), so they never drift
//! from `--help`.
//!
//! Bash completion also completes what only the running daemon knows —
//! `SERVICE.METHOD` targets, supervised services, queues and subscribed
//! topics — by calling the hidden `switchboard names KIND`, which prints one
//! name per line and nothing at all when no daemon answers.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;
use switchboard_proto::supervision as sup;

use crate::Connection;

/// Print a shell completion script.
///
/// bash:  source <(switchboard completions bash)      (or save it under
///        /usr/share/bash-completion/completions/switchboard)
/// zsh:   switchboard completions zsh > "${fpath[1]}/_switchboard"
/// fish:  switchboard completions fish > ~/.config/fish/completions/switchboard.fish
///
/// Bash also completes targets, services, queues and topics from the running
/// daemon (`switchboard call <TAB>`).
#[derive(clap::Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Write the man pages (switchboard.1 and one per subcommand) into DIR.
///
/// View one with `man -l DIR/switchboard-up.1`; `switchboard install`
/// installs them.
#[derive(clap::Args)]
pub struct ManArgs {
    /// Where to write the pages (created if missing).
    dir: PathBuf,
}

/// Names the running daemon knows, one per line, for shell completion.
#[derive(clap::Args)]
pub struct NamesArgs {
    #[arg(value_enum)]
    kind: NameKind,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum NameKind {
    /// `SERVICE.METHOD` of every registered method.
    Targets,
    /// Supervised services.
    Services,
    Queues,
    /// Subscribed patterns.
    Topics,
}

/// Bash's dynamic part: the daemon's names where a command takes one; the
/// generated completion for everything else.
const BASH_DYNAMIC: &str = r#"
_switchboard_daemon_names() {
    "${COMP_WORDS[0]}" names "$1" 2>/dev/null
}
_switchboard_dynamic() {
    local cur="${COMP_WORDS[COMP_CWORD]}" sub="${COMP_WORDS[1]}" kind=""
    if [[ $COMP_CWORD -eq 2 && $cur != -* ]]; then
        case "$sub" in
            call|notify|broadcast|respond) kind=targets ;;
            status|start|stop|restart|pause|continue|control|logs) kind=services ;;
            sub|pub) kind=topics ;;
        esac
    elif [[ $COMP_CWORD -eq 3 && $sub == queue && $cur != -* ]]; then
        case "${COMP_WORDS[2]}" in
            declare|put|get|peek|purge|delete) kind=queues ;;
        esac
    fi
    if [[ -n $kind ]]; then
        local IFS=$'\n'
        COMPREPLY=($(compgen -W "$(_switchboard_daemon_names "$kind")" -- "$cur"))
        return 0
    fi
    _switchboard "$@"
}
complete -F _switchboard_dynamic -o bashdefault -o default switchboard
"#;

pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let name = match args.shell {
        Shell::Bash => "bash",
        Shell::Zsh => "zsh",
        Shell::Fish => "fish",
    };
    std::io::stdout().lock().write_all(&completion_script(name)?)?;
    Ok(ExitCode::SUCCESS)
}

/// The completion script for `bash`, `zsh` or `fish`.
pub fn completion_script(shell: &str) -> anyhow::Result<Vec<u8>> {
    let mut command = crate::Cli::command();
    let mut script = Vec::new();
    let generator = match shell {
        "bash" => clap_complete::Shell::Bash,
        "zsh" => clap_complete::Shell::Zsh,
        "fish" => clap_complete::Shell::Fish,
        other => anyhow::bail!("no completions for {other}: bash, zsh or fish"),
    };
    clap_complete::generate(generator, &mut command, "switchboard", &mut script);
    if shell == "bash" {
        script.extend_from_slice(BASH_DYNAMIC.as_bytes());
    }
    Ok(script)
}

pub fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    for path in write_man_pages(&args.dir)? {
        crate::output::line(path.display())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The pages: `switchboard` and one per visible subcommand, as (name, command).
fn man_pages() -> Vec<(String, clap::Command)> {
    let command = crate::Cli::command();
    let mut pages = vec![("switchboard".to_owned(), command.clone())];
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let name = format!("switchboard-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    pages
}

/// The file names [`write_man_pages`] writes.
pub fn man_page_names() -> Vec<String> {
    man_pages().into_iter().map(|(name, _)| format!("{name}.1")).collect()
}

/// Writes every page into `dir` (created if missing); returns their paths.
pub fn write_man_pages(dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    man_pages().into_iter().map(|(name, command)| write_page(dir, &name, command)).collect()
}

fn write_page(dir: &std::path::Path, name: &str, command: clap::Command) -> anyhow::Result<PathBuf> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command).title(name).render(&mut page)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page)?;
    Ok(path)
}

pub async fn names(args: NamesArgs) -> anyhow::Result<ExitCode> {
    // No daemon, no names: completion falls back to nothing, quietly.
    let Ok(bus) = super::connect(&args.connection, "switchboard-names").await else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut names: Vec<String> = match args.kind {
        NameKind::Targets => bus
            .services()
            .await?
            .into_iter()
            .flat_map(|service| {
                let methods: Vec<String> =
                    service.instances.iter().flat_map(|i| i.methods.iter().cloned()).collect();
                methods
                    .into_iter()
                    .filter(|m| !m.starts_with("__"))
                    .map(move |m| format!("{}.{m}", service.service))
            })
            .collect(),
        NameKind::Services => {
            let target = format!("{}.{}", sup::SERVICES_SERVICE, sup::STATUS);
            let args = switchboard::encode(&sup::ServiceRef::default())?;
            let reply = bus.call(target.as_str(), args).await?;
            let statuses: Vec<sup::ServiceStatus> = switchboard::decode(&reply)?;
            statuses.into_iter().map(|status| status.service).collect()
        }
        NameKind::Queues => bus.queues().await?.into_iter().map(|queue| queue.queue).collect(),
        NameKind::Topics => bus.topics().await?.subscriptions.into_iter().map(|s| s.pattern).collect(),
    };
    names.sort();
    names.dedup();
    for name in names {
        crate::output::line(name)?;
    }
    Ok(ExitCode::SUCCESS)
}
