//! Health probes: a command that must exit 0, or a bus call that must reply,
//! each within its timeout. The probe loop only reports results; the
//! supervisor counts failures and decides.

use std::time::Duration;

use switchboard::{Bus, CallOptions};

use super::config::{HealthCheck, Probe};

/// Runs one probe.
pub async fn probe(check: &HealthCheck, bus: &Bus) -> Result<(), String> {
    match &check.probe {
        Probe::Command(command) => run_command(command, check.timeout).await,
        Probe::Call(target) => bus
            .call_with(target.clone(), bytes::Bytes::new(), CallOptions::timeout(check.timeout))
            .await
            .map(drop)
            .map_err(|err| format!("{target}: {err}")),
    }
}

async fn run_command(command: &str, timeout: Duration) -> Result<(), String> {
    let mut sh = tokio::process::Command::new("sh");
    super::process::inherit_only_stdio(sh.as_std_mut());
    let mut child = sh
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("cannot run {command:?}: {err}"))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Err(_) => Err(format!("{command:?} did not finish within {timeout:?}")),
        Ok(Err(err)) => Err(format!("{command:?}: {err}")),
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{command:?} {}", super::process::describe_exit(&status).0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_probe_passes_fails_and_times_out() {
        let t = Duration::from_secs(5);
        assert_eq!(run_command("true", t).await, Ok(()));
        assert_eq!(run_command("exit 3", t).await, Err("\"exit 3\" exit 3".into()));
        let slow = run_command("sleep 5", Duration::from_millis(50)).await.unwrap_err();
        assert!(slow.contains("did not finish"), "{slow}");
    }
}
