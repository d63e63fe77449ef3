//! `switchboard top` in a real pseudo-terminal (tmux, which the test
//! command installs): the screen shows the service a test calls with its
//! rate, `s` changes the sort column, `q` quits.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Daemon, Guard};

/// A tmux server of this test's own (by socket name), killed on drop.
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.0)
            .args(args)
            .output()
            .expect("tmux (scripts/install-test-deps.sh installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether the session (top) still runs.
    fn alive(&self) -> bool {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.0)
            .args(["has-session", "-t", "top"])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// Waits until the screen shows what `check` wants, at most 15 s.
    fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "{what}; the screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// The rate column of `row`'s line, if the screen has one.
fn rate_of(screen: &str, row: &str) -> Option<f64> {
    let line = screen.lines().find(|line| line.contains(row))?;
    line.split_whitespace().nth(1).and_then(|rate| rate.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_the_services_called_with_their_rates_and_sorts_on_s() {
    let daemon = Daemon::start();
    let _echo = Guard(daemon.responder(&["shop.echo", "--echo", "-q"]));
    let tmux = Tmux(format!("switchboard-top-test-{}", std::process::id()));
    let command = format!("SWITCHBOARD_ADDR={} {} top --interval 500ms", daemon.addr, support::BIN);
    tmux.run(&["new-session", "-d", "-s", "top", "-x", "120", "-y", "40", &command]);
    tmux.wait_for("top did not start", |screen| screen.contains("switchboard top"));

    // Calls at about 50 a second while the screen is read.
    let bus = daemon.bus().await;
    let calling = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(6);
        while Instant::now() < until {
            bus.call("shop.echo", "x").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let screen = tokio::task::spawn_blocking(move || {
        let screen = tmux.wait_for("no rate for shop.echo", |screen| {
            rate_of(screen, "shop.echo").is_some_and(|r| r > 5.0)
        });
        tmux.run(&["send-keys", "-t", "top", "s"]);
        tmux.wait_for("s did not sort by errors", |screen| screen.contains("sorted by errors/s"));
        tmux.run(&["send-keys", "-t", "top", "q"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while tmux.alive() {
            assert!(Instant::now() < deadline, "q did not quit top");
            std::thread::sleep(Duration::from_millis(50));
        }
        screen
    })
    .await
    .unwrap();
    calling.await.unwrap();
    assert!(screen.contains("METHOD") && screen.contains("P99"), "{screen}");
    assert!(!screen.contains("$sys."), "the daemon's own services are not shown:\n{screen}");
}
