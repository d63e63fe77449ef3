//! The built-in config of `switchboard up --demo`: the example services,
//! supervised, so a newcomer sees supervision and messaging together.

use anyhow::Context;

/// The demo config, pointing at the example binaries beside this one.
pub fn config() -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find the switchboard binary")?;
    let dir = exe.parent().context("the switchboard binary has no directory")?;
    let example = |name: &str| dir.join(name);
    let missing: Vec<&str> = ["orders", "resources"].into_iter().filter(|n| !example(n).is_file()).collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "--demo runs the example services, but {} not built beside {}; \
             build them with `cargo build --release -p switchboard-examples` and run \
             `target/release/switchboard up --demo`",
            missing.join(" and "),
            exe.display()
        );
    }
    let root = if rustix::process::geteuid().is_root() { "run_as_root = true\n" } else { "" };
    let orders = example("orders").display().to_string();
    let resources = example("resources").display().to_string();
    let switchboard = exe.display().to_string();
    Ok(format!(
        r#"
# Stock for the shop: serves inventory.reserve / inventory.stock.
[services.inventory]
command = {orders:?}
args = ["inventory"]
ready = "notify"
{root}
# Reserves stock for every order; starts only once inventory is ready.
[services.fulfilment]
command = {orders:?}
args = ["fulfilment"]
ready = "notify"
requires = ["inventory"]
{root}
# Logs every outcome (see `switchboard logs notifier -f`).
[services.notifier]
command = {orders:?}
args = ["notifier"]
ready = "notify"
requires = ["fulfilment"]
{root}
# Publishes resources.usage every second; health-checked over the bus.
[services.resources]
command = {resources:?}
args = ["monitor"]
ready = "notify"
health = {{ call = "resources.current", interval = "5s", timeout = "2s" }}
{root}
# The shop places four orders whenever it is started: `switchboard start shop`.
[services.shop]
command = {orders:?}
args = ["shop"]
start = "manual"
restart = "never"
requires = ["notifier"]
{root}
# With `--gateway ADDR`, the web console may look without signing in:
# anonymous (any local process reaching that port) may read the daemon's
# lists and follow topics, but not call services or control them.
[[policy]]
principal = "anonymous"
allow = ["call $sys.registry.list", "call $sys.services.status", "call $sys.topics.list", "call $sys.queues.list", "subscribe >"]

# A plain echo responder, for `switchboard call demo.echo '{{"hi":1}}'`.
[services.demo]
command = {switchboard:?}
args = ["respond", "demo.echo", "--echo"]
{root}"#
    ))
}
