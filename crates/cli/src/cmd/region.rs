//! `switchboard region`: named shared regions from the shell — list them,
//! dump one's bytes, watch its sequence, write into one.

use std::io::Read;
use std::process::ExitCode;

use switchboard::{Bus, Region, RegionInfo};

use crate::cmd::{connect, Usage};
use crate::{output, Connection};

/// How long `region write` waits for another writer to let go.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Named shared regions: memory many processes map at once, written under
/// a lock that survives its holder's death (docs/protocol.md, "Regions").
///
/// Examples:
///   switchboard region ls
///   switchboard region write camera.frames --size 8MiB < frame.raw
///   switchboard region dump camera.frames > frame.raw
///   switchboard region dump camera.frames --hex --length 64
///   switchboard region watch camera.frames --count 10
///
/// Reading needs `region.read NAME` in the policy, writing (and creating)
/// `region.write NAME`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// Print JSON (ls: the list; watch: {"name","sequence"} per line;
    /// write: {"name","sequence","bytes"}).
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Every region: size, sequence, and who holds it mapped.
    Ls,
    /// Write a consistent copy of a region's bytes to stdout (or --out).
    Dump(DumpArgs),
    /// Print the region's sequence each time a writer announces a change.
    Watch(WatchArgs),
    /// Copy stdin (or --file) into a region under its lock, from its first
    /// byte, and announce the change; creates the region with --size.
    Write(WriteArgs),
}

#[derive(clap::Args)]
struct DumpArgs {
    name: String,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<std::path::PathBuf>,
    /// A hex dump (offset, 16 bytes a line) instead of raw bytes.
    #[arg(long)]
    hex: bool,
    /// Only the first N bytes (like 4KiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    length: Option<u64>,
}

#[derive(clap::Args)]
struct WatchArgs {
    name: String,
    /// Stop after this many changes.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

#[derive(clap::Args)]
struct WriteArgs {
    name: String,
    /// Create the region with this many bytes (like 8MiB) if it does not
    /// exist; if it does, its size must match.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    size: Option<u64>,
    /// Read the bytes from this file instead of stdin.
    #[arg(long, value_name = "FILE")]
    file: Option<std::path::PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bus = connect(&args.connection, "switchboard-region").await?;
    match args.command {
        Command::Ls => list(&bus, args.json).await?,
        Command::Dump(dump) => dump_region(&bus, dump).await?,
        Command::Watch(watch) => watch_region(&bus, watch, args.json).await?,
        Command::Write(write) => write_region(&bus, write, args.json).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `region ls` (and `ls --regions`).
pub async fn list(bus: &Bus, json: bool) -> anyhow::Result<()> {
    let regions = bus.regions().await?;
    if json {
        return output::line(serde_json::to_string_pretty(&regions)?);
    }
    print_regions(&regions)
}

fn print_regions(regions: &[RegionInfo]) -> anyhow::Result<()> {
    if regions.is_empty() {
        return output::line("no regions");
    }
    let width = regions.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
    output::line(format_args!(
        "{:<width$}  {:>12}  {:>10}  HOLDERS (pid principal mode)",
        "REGION", "SIZE", "SEQUENCE"
    ))?;
    for region in regions {
        let holders: Vec<String> = region
            .holders
            .iter()
            .map(|h| format!("{} {} {}", h.pid, h.principal, if h.write { "rw" } else { "r" }))
            .collect();
        let holders = if holders.is_empty() { "-".to_owned() } else { holders.join(", ") };
        output::line(format_args!(
            "{:<width$}  {:>12}  {:>10}  {holders}",
            region.name, region.size, region.sequence
        ))?;
    }
    Ok(())
}

async fn dump_region(bus: &Bus, args: DumpArgs) -> anyhow::Result<()> {
    let region = bus.region_reader(&args.name).await?;
    let length =
        args.length.map_or(region.len(), |n| usize::try_from(n).unwrap_or(usize::MAX).min(region.len()));
    let mut bytes = vec![0; length];
    let sequence = region.read_into(&mut bytes)?;
    if let Some(path) = &args.out {
        std::fs::write(path, &bytes).map_err(|err| anyhow::anyhow!("writing {}: {err}", path.display()))?;
        eprintln!(
            "{} bytes of region {} at sequence {sequence} written to {}",
            length,
            args.name,
            path.display()
        );
        return Ok(());
    }
    if !args.hex {
        return output::raw(&bytes);
    }
    output::line(format_args!("# region {} sequence {sequence}, {length} bytes", args.name))?;
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let text: String =
            chunk.iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '.' }).collect();
        output::line(format_args!("{:08x}  {:<47}  {text}", row * 16, hex.join(" ")))?;
    }
    Ok(())
}

async fn watch_region(bus: &Bus, args: WatchArgs, json: bool) -> anyhow::Result<()> {
    let region = bus.region_reader(&args.name).await?;
    let mut seen = region.sequence() & !1;
    print_sequence(&region, seen, json)?;
    let mut changes = 0;
    while args.count.is_none_or(|count| changes < count) {
        seen = region.changed(seen).await?;
        changes += 1;
        print_sequence(&region, seen, json)?;
    }
    Ok(())
}

fn print_sequence(region: &Region, sequence: u64, json: bool) -> anyhow::Result<()> {
    if json {
        output::line(serde_json::json!({ "name": region.name(), "sequence": sequence }))
    } else {
        output::line(format_args!("{} sequence {sequence}", region.name()))
    }
}

async fn write_region(bus: &Bus, args: WriteArgs, json: bool) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    match &args.file {
        Some(path) => {
            bytes = std::fs::read(path).map_err(|err| anyhow::anyhow!("reading {}: {err}", path.display()))?
        }
        None => {
            std::io::stdin().read_to_end(&mut bytes)?;
        }
    }
    let size = usize::try_from(args.size.unwrap_or(0)).map_err(|_| Usage("--size is too large".into()))?;
    let region = bus.region(&args.name, size).await?;
    if bytes.len() > region.len() {
        return Err(Usage(format!(
            "{} bytes do not fit region {} ({} bytes)",
            bytes.len(),
            args.name,
            region.len()
        ))
        .into());
    }
    let owner_died = {
        let mut guard = region.lock_for(LOCK_WAIT)?.ok_or_else(|| {
            anyhow::anyhow!("region {} stayed locked by another writer for {LOCK_WAIT:?}", args.name)
        })?;
        guard[..bytes.len()].copy_from_slice(&bytes);
        guard.previous_owner_died()
    };
    if owner_died {
        eprintln!("note: the previous holder of region {} died holding its lock", args.name);
    }
    let sequence = region.announce().await?;
    if json {
        output::line(serde_json::json!({ "name": args.name, "sequence": sequence, "bytes": bytes.len() }))
    } else {
        output::line(format_args!("wrote {} bytes to region {}, sequence {sequence}", bytes.len(), args.name))
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    switchboard_proto::units::parse_size(text)
        .ok_or_else(|| format!("{text:?}: expected a size like 4096, 64KiB or 8MiB"))
}
