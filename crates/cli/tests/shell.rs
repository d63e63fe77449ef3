//! Shell completions and man pages, exercised by the real programs that use
//! them: bash sources the script and runs its completion function against a
//! live daemon; `man -l` renders every generated page.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::process::Command;

use support::{Daemon, BIN};

/// What bash completes for `words` (the last one being completed).
fn bash_complete(daemon: &Daemon, words: &str) -> Vec<String> {
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let script = format!(
        "source <(switchboard completions bash)\nCOMP_WORDS=({words})\nCOMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"\nCOMP_POINT=${{#COMP_LINE}}\n_switchboard_dynamic switchboard\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\""
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .env("PATH", path)
        .env("SWITCHBOARD_ADDR", &daemon.addr)
        .output()
        .unwrap();
    assert!(out.status.success(), "bash: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bash_completes_commands_and_the_daemons_targets_and_queues() {
    let out = Command::new("bash")
        .args(["-c", &format!("source <({BIN} completions bash); complete -p switchboard")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("-F _switchboard_dynamic switchboard"));

    let daemon = Daemon::start();
    let _responder = support::Guard(daemon.responder(&["demo.echo", "--echo"]));
    let bus = daemon.bus().await;
    bus.queue("jobs").unwrap().put("x").await.unwrap();
    assert_eq!(bash_complete(&daemon, "switchboard call de"), ["demo.echo"]);
    assert_eq!(bash_complete(&daemon, "switchboard queue get jo"), ["jobs"]);
    // Everything else comes from the CLI's own definitions.
    assert!(bash_complete(&daemon, "switchboard qu").contains(&"queue".to_owned()));
    assert!(bash_complete(&daemon, "switchboard up --data").contains(&"--data-dir".to_owned()));
    // Without a daemon there is nothing to offer, and no error either.
    let gone = Command::new(BIN)
        .args(["names", "targets", "--addr", "unix:/nonexistent/bus.sock"])
        .output()
        .unwrap();
    assert!(gone.status.success() && gone.stdout.is_empty() && gone.stderr.is_empty());
}

#[test]
fn zsh_and_fish_completions_name_every_command() {
    for (shell, marker) in [("zsh", "#compdef switchboard"), ("fish", "complete -c switchboard")] {
        let out = Command::new(BIN).args(["completions", shell]).output().unwrap();
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success() && script.contains(marker), "{shell}");
        for command in ["up", "call", "queue", "status", "completions"] {
            assert!(script.contains(command), "{shell} completion lacks {command}");
        }
    }
}

#[test]
fn every_man_page_renders_with_man() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).arg("man").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pages: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
    assert!(pages.len() >= 20, "{pages:?}");
    assert!(pages.iter().any(|p| p.ends_with("switchboard-up.1")));
    assert!(!pages.iter().any(|p| p.contains("names")), "the hidden helper has no page");
    for page in &pages {
        let rendered = Command::new("man")
            .arg("-l")
            .arg(page)
            .env("MANWIDTH", "100")
            .env("MAN_KEEP_FORMATTING", "0")
            .output()
            .unwrap();
        // man marks bold by overstriking (`N\bN`): keep what is left standing.
        let mut text = String::new();
        for c in String::from_utf8_lossy(&rendered.stdout).chars() {
            if c == '\u{8}' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        assert!(rendered.status.success(), "man -l {page}: {}", String::from_utf8_lossy(&rendered.stderr));
        assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "man -l {page} rendered {text}");
    }
}
