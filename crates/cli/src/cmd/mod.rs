//! One module per subcommand.

pub mod call;
pub mod check;
pub mod demo;
pub mod install;
pub mod logs;
pub mod ls;
pub mod metrics;
pub mod monitor;
pub mod queue;
pub mod reexec;
pub mod region;
pub mod respond;
pub mod services;
pub mod shell;
pub mod top;
pub mod topics;
pub mod up;

use std::future::Future;
use std::process::ExitCode;

use switchboard::{Bus, CallError, ConnectError, Endpoint};

use crate::Connection;

/// A failure that is bad input, not a failed operation (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Exit code for an error: 2 for bad usage or input, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    let usage = err.chain().any(|cause| {
        cause.is::<Usage>()
            || matches!(cause.downcast_ref::<CallError>(), Some(CallError::InvalidTarget(_)))
            || matches!(cause.downcast_ref::<ConnectError>(), Some(ConnectError::Endpoint(_)))
    });
    if usage {
        2
    } else {
        1
    }
}

/// Runs a client command on a single-threaded runtime: a CLI process makes
/// one connection and gains nothing from more threads.
pub fn client_runtime(work: impl Future<Output = anyhow::Result<ExitCode>>) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(work)
}

/// Connects as the CLI, to `--addr` / `$SWITCHBOARD_ADDR` or the default
/// socket. A `tls://` address uses `$SWITCHBOARD_TLS_CA` to verify the
/// daemon and `$SWITCHBOARD_TLS_CERT` / `$SWITCHBOARD_TLS_KEY` as the client's
/// certificate.
pub async fn connect(connection: &Connection, client_name: &str) -> anyhow::Result<Bus> {
    let endpoint = match &connection.addr {
        Some(addr) => Endpoint::parse(addr).map_err(|err| Usage(err.to_string()))?,
        None => switchboard::default_endpoint().map_err(|err| Usage(err.to_string()))?,
    };
    if let Endpoint::Tls(_) = &endpoint {
        let var = |name: &str| std::env::var_os(name).map(std::path::PathBuf::from);
        let ca = var("SWITCHBOARD_TLS_CA").ok_or_else(|| {
            Usage("a tls:// address needs SWITCHBOARD_TLS_CA (the CA that signed the daemon)".into())
        })?;
        let (cert, key) = (var("SWITCHBOARD_TLS_CERT"), var("SWITCHBOARD_TLS_KEY"));
        let identity = cert.as_deref().zip(key.as_deref());
        let tls = switchboard::TlsClient::from_files(&ca, identity)?;
        return Ok(Bus::connect_tls(&endpoint.to_string(), &tls).await?);
    }
    let bus = Bus::connect_endpoint(endpoint, client_name.to_owned()).await?;
    // A command makes one call: a direct channel would cost the daemon and
    // the instance a grant for nothing.
    bus.set_direct_calls(false);
    Ok(bus)
}

/// Parses `KEY=VALUE` for `--header`.
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}
