//! Private network namespaces for benchmarks that model several machines:
//! one namespace per host, each with its own address on a veth link to a
//! bridge in a hub namespace. Created here, removed on drop (the links go
//! with their namespaces); nothing else on the machine is touched.
//!
//! Needs root. Processes started by a thread inside a host's namespace
//! ([`Namespaces::enter`]) live in that namespace too.

use std::process::Command;

use anyhow::{ensure, Context};

/// The subnet of the hosts: host `i` is `10.78.0.{i + 1}`.
const SUBNET: &str = "10.78.0";

pub struct Namespaces {
    /// The hub, then every host's, in the order given.
    names: Vec<String>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    ensure!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

impl Namespaces {
    /// Whether this process may create namespaces.
    pub fn available() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// `hosts` namespaces, named after `tag` and each host, joined through
    /// a bridge.
    pub fn create(tag: &str, hosts: &[&str]) -> anyhow::Result<Self> {
        let hub = format!("{tag}-hub");
        ip(&["netns", "add", &hub])?;
        let mut made = Self { names: vec![hub.clone()] };
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (index, host) in hosts.iter().enumerate() {
            let ns = format!("{tag}-{host}");
            ip(&["netns", "add", &ns])?;
            made.names.push(ns.clone());
            let port = format!("v{index}");
            ip(&["link", "add", &port, "netns", &hub, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", Self::address(index)), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(made)
    }

    /// Host `index`'s address.
    pub fn address(index: usize) -> String {
        format!("{SUBNET}.{}", index + 1)
    }

    /// Moves the calling thread into host `index`'s namespace.
    pub fn enter(&self, index: usize) -> anyhow::Result<()> {
        let name = self.names.get(index + 1).context("no such host namespace")?;
        let file = std::fs::File::open(format!("/run/netns/{name}"))
            .with_context(|| format!("opening namespace {name}"))?;
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&file),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .with_context(|| format!("entering namespace {name}"))
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}
