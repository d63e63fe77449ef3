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
    let mut command = crate::Cli::command();
    let mut out = std::io::stdout().lock();
    match args.shell {
        Shell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut command, "switchboard", &mut out);
            out.write_all(BASH_DYNAMIC.as_bytes())?;
        }
        Shell::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut command, "switchboard", &mut out)
        }
        Shell::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut command, "switchboard", &mut out)
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)?;
    let command = crate::Cli::command();
    let mut written = vec![write_page(&args.dir, "switchboard", command.clone())?];
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let name = format!("switchboard-{}", sub.get_name());
        written.push(write_page(&args.dir, &name, sub.clone().name(name.clone()))?);
    }
    for path in written {
        crate::output::line(path.display())?;
    }
    Ok(ExitCode::SUCCESS)
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
