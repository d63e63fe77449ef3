//! What the examples share: connecting with a helpful message, and reading
//! the role to play from the command line.
#![forbid(unsafe_code)]

use switchboard::Bus;

/// Connects to `$SWITCHBOARD_ADDR` or the default socket, naming the client.
pub async fn connect(name: &str) -> anyhow::Result<Bus> {
    let endpoint = switchboard::default_endpoint()?;
    Bus::connect_endpoint(endpoint, name.to_owned()).await.map_err(|err| {
        anyhow::anyhow!("{err}\nstart the daemon first: cargo run --release -p switchboard-cli -- up")
    })
}

/// The first argument, or `demo`; prints usage and exits 2 when unknown.
pub fn role(usage: &str, roles: &[&str]) -> String {
    let role = std::env::args().nth(1).unwrap_or_else(|| "demo".to_owned());
    if role == "-h" || role == "--help" || !roles.contains(&role.as_str()) {
        eprintln!("{usage}");
        std::process::exit(if role.starts_with('-') { 0 } else { 2 });
    }
    role
}

/// Says the role is ready to a supervisor (`switchboard up --demo` runs the
/// roles with `ready = "notify"`); nothing when run by hand.
pub fn ready() {
    if let Err(err) = switchboard::service::notify_ready() {
        eprintln!("cannot tell the supervisor we are ready: {err}");
    }
}

/// Waits for Ctrl-C (roles that serve until stopped).
pub async fn until_interrupted() {
    let _ = tokio::signal::ctrl_c().await;
}
