//! `switchboard install` / `uninstall`: the daemon as the machine's (or the
//! user's) systemd service — a `Type=notify` unit, a socket unit for the bus
//! socket, a default config, the data and log directories, man pages and
//! shell completions.
//!
//! What to write is decided by [`Layout`] (pure: paths and file contents);
//! the command only writes, or prints with `--print`. `--root DIR` writes
//! under another root, which is how the tests run it: nothing here ever
//! touches the machine's own /etc unless asked to.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::output;

/// Install Switchboard as a systemd service.
///
/// Writes switchboard.service (Type=notify, NotifyAccess=main, Delegate=yes,
/// ExecReload=switchboard reload) and switchboard.socket (the bus socket,
/// /run/switchboard/bus.sock, or $XDG_RUNTIME_DIR/switchboard/bus.sock with
/// --user), a default config (kept if one exists), the data and log
/// directories, man pages and bash/zsh/fish completions. Then:
///
///   systemctl enable --now switchboard.socket switchboard.service
///
/// On a machine without systemd it says so and prints what to run instead.
#[derive(clap::Args)]
pub struct InstallArgs {
    #[command(flatten)]
    target: Target,
    /// Print the unit files instead of writing anything.
    #[arg(long)]
    print: bool,
}

/// Remove what `install` wrote (the config and the data are kept unless --purge).
#[derive(clap::Args)]
pub struct UninstallArgs {
    #[command(flatten)]
    target: Target,
    /// Also remove the config file and the data and log directories.
    #[arg(long)]
    purge: bool,
}

#[derive(clap::Args)]
struct Target {
    /// A user unit (~/.config/systemd/user) instead of a system one.
    #[arg(long)]
    user: bool,
    /// Install under this directory instead of / (packaging, tests).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The switchboard binary the unit runs (default: this one).
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
}

/// Where everything goes, and what the units say.
pub struct Layout {
    pub bin: PathBuf,
    pub user: bool,
    pub units: PathBuf,
    pub config: PathBuf,
    pub data: PathBuf,
    pub logs: PathBuf,
    pub socket: String,
    pub man: PathBuf,
    pub completions: [(PathBuf, &'static str); 3],
}

impl Layout {
    /// The system layout (FHS paths), or the user's (XDG paths) with `user`.
    pub fn new(bin: PathBuf, user: bool, home: &Path) -> Self {
        if user {
            let share = home.join(".local/share");
            Self {
                bin,
                user,
                units: home.join(".config/systemd/user"),
                config: home.join(".config/switchboard/switchboard.toml"),
                data: home.join(".local/state/switchboard"),
                logs: home.join(".local/state/switchboard/logs"),
                socket: "%t/switchboard/bus.sock".into(),
                man: share.join("man/man1"),
                completions: [
                    (share.join("bash-completion/completions/switchboard"), "bash"),
                    (share.join("zsh/site-functions/_switchboard"), "zsh"),
                    (home.join(".config/fish/completions/switchboard.fish"), "fish"),
                ],
            }
        } else {
            Self {
                bin,
                user,
                units: "/etc/systemd/system".into(),
                config: "/etc/switchboard/switchboard.toml".into(),
                data: "/var/lib/switchboard".into(),
                logs: "/var/log/switchboard".into(),
                socket: "/run/switchboard/bus.sock".into(),
                man: "/usr/local/share/man/man1".into(),
                completions: [
                    ("/usr/share/bash-completion/completions/switchboard".into(), "bash"),
                    ("/usr/share/zsh/vendor-completions/_switchboard".into(), "zsh"),
                    ("/usr/share/fish/vendor_completions.d/switchboard.fish".into(), "fish"),
                ],
            }
        }
    }

    pub fn service_unit(&self) -> String {
        let bin = self.bin.display();
        let (data, config, socket) = (self.data.display(), self.config.display(), &self.socket);
        let wanted_by = if self.user { "default.target" } else { "multi-user.target" };
        format!(
            "[Unit]\n\
             Description=Switchboard: the services of this machine and the bus that connects them\n\
             Requires=switchboard.socket\n\
             After=switchboard.socket network.target\n\
             \n\
             [Service]\n\
             # READY=1 once the bus socket is served and the queues are recovered.\n\
             Type=notify\n\
             NotifyAccess=main\n\
             ExecStart={bin} up --config {config} --data-dir {data} --log-format json\n\
             ExecReload={bin} reload --addr unix:{socket}\n\
             # SIGTERM to the daemon only: it stops the services it supervises in order.\n\
             KillMode=mixed\n\
             TimeoutStopSec=90s\n\
             Restart=on-failure\n\
             WatchdogSec=30s\n\
             # The cgroup subtree is the daemon's: memory_max and cpu_max of services work.\n\
             Delegate=yes\n\
             # Hardening that leaves supervision working. Not set, on purpose: User=,\n\
             # ProtectSystem=, ProtectHome=, PrivateTmp= — they would apply to every\n\
             # supervised service, which runs as its own configured user instead.\n\
             NoNewPrivileges=yes\n\
             ProtectKernelModules=yes\n\
             ProtectKernelLogs=yes\n\
             ProtectClock=yes\n\
             LockPersonality=yes\n\
             \n\
             [Install]\n\
             WantedBy={wanted_by}\n\
             Also=switchboard.socket\n"
        )
    }

    pub fn socket_unit(&self) -> String {
        let mode = if self.user { "0700" } else { "0755" };
        format!(
            "[Unit]\n\
             Description=Switchboard bus socket\n\
             \n\
             [Socket]\n\
             ListenStream={}\n\
             # Who may connect at all; the policy decides the rest ([security] socket_mode).\n\
             SocketMode=0600\n\
             DirectoryMode={mode}\n\
             \n\
             [Install]\n\
             WantedBy=sockets.target\n",
            self.socket
        )
    }

    /// The files to write: (path, contents).
    pub fn files(&self) -> Vec<(PathBuf, String)> {
        vec![
            (self.units.join("switchboard.service"), self.service_unit()),
            (self.units.join("switchboard.socket"), self.socket_unit()),
        ]
    }
}

/// The default config: valid as it is (an empty file is), and a map of what
/// can go in it.
pub const DEFAULT_CONFIG: &str =
    "# Switchboard's config: `switchboard check` validates it, `switchboard reload`
# (systemctl reload switchboard) applies it. Every section is optional.
# docs/supervisor.md and docs/security.md describe every key.
#
# [services.web]
# command = \"/usr/local/bin/web\"
# user = \"web\"
# ready = \"notify\"
# restart = \"on-failure\"
#
# [security]
# socket_mode = \"0600\"
#
# [[policy]]
# principal = \"group:ops\"
# allow = [\"call web.*\", \"control web\"]
";

fn under(root: Option<&Path>, path: &Path) -> PathBuf {
    match root {
        Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_owned(),
    }
}

fn layout(target: &Target) -> anyhow::Result<Layout> {
    let bin = match &target.bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?,
    };
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    Ok(Layout::new(bin, target.user, &home))
}

pub fn install(args: &InstallArgs) -> anyhow::Result<ExitCode> {
    let layout = layout(&args.target)?;
    if args.print {
        for (path, contents) in layout.files() {
            output::line(format_args!("# {}\n{contents}", path.display()))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let root = args.target.root.as_deref();
    let write = |path: &Path, contents: &[u8]| -> anyhow::Result<()> {
        let path = under(root, path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, contents)
            .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", path.display()))?;
        output::line(format_args!("wrote {}", path.display()))
    };
    for (path, contents) in layout.files() {
        write(&path, contents.as_bytes())?;
    }
    let config = under(root, &layout.config);
    if config.exists() {
        output::line(format_args!("kept {}", config.display()))?;
    } else {
        write(&layout.config, DEFAULT_CONFIG.as_bytes())?;
    }
    for dir in [&layout.data, &layout.logs] {
        let dir = under(root, dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        output::line(format_args!("made {}", dir.display()))?;
    }
    super::shell::write_man_pages(&under(root, &layout.man))?;
    for (path, shell) in &layout.completions {
        write(path, &super::shell::completion_script(shell)?)?;
    }
    next_steps(&layout, root)?;
    Ok(ExitCode::SUCCESS)
}

fn next_steps(layout: &Layout, root: Option<&Path>) -> anyhow::Result<()> {
    let user = if layout.user { " --user" } else { "" };
    if !Path::new("/run/systemd/system").exists() {
        output::line("this machine does not run systemd (no /run/systemd/system): nothing was enabled.")?;
        return output::line(format_args!(
            "start the daemon from your init system or a shell instead:\n  {} up --config {} --data-dir {}",
            layout.bin.display(),
            layout.config.display(),
            layout.data.display()
        ));
    }
    if root.is_none() {
        let reload = std::process::Command::new("systemctl")
            .args(user.split_whitespace())
            .arg("daemon-reload")
            .status();
        if !reload.is_ok_and(|status| status.success()) {
            output::line(format_args!("could not run `systemctl{user} daemon-reload`: run it yourself"))?;
        }
    }
    output::line(format_args!(
        "enable it with: systemctl{user} enable --now switchboard.socket switchboard.service"
    ))
}

pub fn uninstall(args: &UninstallArgs) -> anyhow::Result<ExitCode> {
    let layout = layout(&args.target)?;
    let root = args.target.root.as_deref();
    let mut paths: Vec<PathBuf> = layout.files().into_iter().map(|(path, _)| path).collect();
    paths.extend(layout.completions.iter().map(|(path, _)| path.clone()));
    paths.extend(super::shell::man_page_names().into_iter().map(|name| layout.man.join(name)));
    if args.purge {
        paths.push(layout.config.clone());
    }
    for path in paths.iter().map(|p| under(root, p)) {
        match std::fs::remove_file(&path) {
            Ok(()) => output::line(format_args!("removed {}", path.display()))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => anyhow::bail!("cannot remove {}: {err}", path.display()),
        }
    }
    if args.purge {
        for dir in [&layout.logs, &layout.data] {
            let dir = under(root, dir);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
                output::line(format_args!("removed {}", dir.display()))?;
            }
        }
    } else {
        output::line(format_args!(
            "kept {} and {} (--purge removes them)",
            layout.config.display(),
            layout.data.display()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
