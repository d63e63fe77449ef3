//! Fan-out without loss: a publisher paced at 80 % of what its subscribers
//! take when it goes flat out loses nothing, with four subscriber processes
//! on a real daemon. (How much an unpaced publisher loses is a benchmark
//! figure, `switchboard-bench all --only pubsub`, not asserted here.)

mod support;

use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{ChildStdout, Command, Stdio};

use support::{Daemon, Guard};

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/debug/examples/pubsub_peer");
const TOPIC: &str = "fanout.test";

struct Peer {
    _guard: Guard,
    stdin: Option<std::process::ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    fn start(daemon: &Daemon, args: &[&str]) -> Self {
        let mut child = Command::new(PEER)
            .args(args)
            .env("SWITCHBOARD_ADDR", &daemon.addr)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn pubsub_peer (cargo build -p switchboard-cli --examples)");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut peer = Self { _guard: Guard(child), stdin, lines };
        assert_eq!(peer.line(), "ready");
        peer
    }

    fn line(&mut self) -> String {
        self.lines.next().expect("a line from the peer").expect("readable")
    }

    /// The numbers after each word of its last line: `received R missed M …`.
    fn report(&mut self) -> Vec<u64> {
        self.line().split_whitespace().filter_map(|word| word.parse().ok()).collect()
    }
}

/// Subscribers' (received, missed, last_ns) and the publisher's start_ns.
fn run(daemon: &Daemon, subscribers: usize, count: u64, rate: u64) -> (Vec<Vec<u64>>, u64) {
    let expected = count.to_string();
    let mut subs: Vec<Peer> =
        (0..subscribers).map(|_| Peer::start(daemon, &["subscribe", TOPIC, &expected])).collect();
    let mut publisher = Peer::start(daemon, &["publish", TOPIC, &expected, "16", &rate.to_string()]);
    writeln!(publisher.stdin.as_mut().expect("stdin"), "go").expect("start the publisher");
    let published = publisher.report();
    assert_eq!(published[0], count, "the publisher sent them all");
    drop(publisher.stdin.take());
    (subs.iter_mut().map(Peer::report).collect(), published[1])
}

#[test]
fn a_publisher_paced_under_what_its_subscribers_take_loses_nothing() {
    let daemon = Daemon::start();
    // What four subscribers take when the publisher goes flat out.
    let (flat_out, start_ns) = run(&daemon, 4, 200_000, 0);
    let rate_of = |report: &Vec<u64>| report[0] as f64 / ((report[2] - start_ns) as f64 / 1e9);
    let slowest = flat_out.iter().map(rate_of).fold(f64::INFINITY, f64::min);
    assert!(slowest.is_finite() && slowest > 0.0, "{flat_out:?}");
    let paced_rate = (0.8 * slowest) as u64;
    // Two seconds' worth at that rate (at least 50,000 messages).
    let count = (2 * paced_rate).clamp(50_000, 1_000_000);
    let (paced, _) = run(&daemon, 4, count, paced_rate);
    let lost: Vec<u64> = flat_out.iter().map(|r| 200_000 - r[0]).collect();
    eprintln!("flat out: slowest subscriber {slowest:.0}/s, lost {lost:?} of 200,000; paced at {paced_rate}/s: {paced:?}");
    for (index, report) in paced.iter().enumerate() {
        assert_eq!((report[0], report[1]), (count, 0), "subscriber {index} got every paced message");
    }
}
