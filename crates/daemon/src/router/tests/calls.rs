//! Calls: admission (policy before lookup, rate, in flight, size),
//! balancing across instances, and the deadline sweep.

use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto::{ErrorCode, Frame};

use super::{errors, replies, Bench};
use crate::policy::Principal;
use crate::Limits;

/// The instance's end: answers every `Request` it was sent with its payload.
fn answer_all(bench: &mut Bench, callee: u64) -> usize {
    let requests: Vec<_> = bench
        .received(callee)
        .into_iter()
        .filter_map(|f| if let Frame::Request(r) = f { Some(r) } else { None })
        .collect();
    for request in &requests {
        bench.send(callee, Frame::Reply { id: request.id, payload: request.payload.clone() });
    }
    requests.len()
}

#[test]
fn admission_checks_policy_before_lookup_then_rate_in_flight_and_size() {
    let mut bench = Bench::new(Limits { max_inflight: 2, max_frame: 4096, ..Limits::default() });
    bench.policy(
        "[security]\nmessages_per_second = 1\nburst = 5\n[[policy]]\nprincipal = \"token:web\"\nallow = [\"call echo.*\"]\n",
    );
    let callee = bench.connect(Principal::daemon(), 0);
    bench.register(callee, "echo", &["say"]);
    let web = bench.connect(Principal::token("web"), 0);

    // Refused by the policy, whether the service exists or not: a refusal
    // never tells what is there.
    bench.call(web, "secret.read", b"", 1000);
    bench.call(web, "nosuch.read", b"", 1000);
    assert_eq!(errors(&bench.received(web)), [ErrorCode::PermissionDenied; 2]);

    // Two in flight is the limit; the third is refused, not queued.
    for _ in 0..3 {
        bench.call(web, "echo.say", b"hi", 1000);
    }
    assert_eq!(errors(&bench.received(web)), [ErrorCode::Overloaded]);
    assert_eq!(answer_all(&mut bench, callee), 2);
    assert_eq!(replies(&bench.received(web)).len(), 2);

    // Too large for the frame the callee would get.
    bench.call(web, "echo.say", &[0u8; 4096], 1000);
    assert_eq!(errors(&bench.received(web)), [ErrorCode::PayloadTooLarge]);

    // Four messages spent the rate (refusals by the policy spend none);
    // the fifth is the end of the burst, the sixth is over the rate.
    bench.call(web, "echo.say", b"hi", 1000);
    bench.call(web, "echo.say", b"hi", 1000);
    let frames = bench.received(web);
    let over = frames.iter().any(|f| matches!(f, Frame::Error { code: ErrorCode::Overloaded, message, .. } if message.contains("rate")));
    assert!(over && errors(&frames).len() == 1, "{frames:?}");
    assert_eq!(answer_all(&mut bench, callee), 1);
}

#[test]
fn calls_are_balanced_across_instances_round_robin() {
    let mut bench = Bench::new(Limits::default());
    let (a, b) = (bench.connect(Principal::daemon(), 0), bench.connect(Principal::daemon(), 0));
    let (on_a, on_b) = (bench.register(a, "work", &["run"]), bench.register(b, "work", &["run"]));
    let caller = bench.connect(Principal::daemon(), 0);
    for _ in 0..10 {
        bench.call(caller, "work.run", b"job", 1000);
        answer_all(&mut bench, a);
        answer_all(&mut bench, b);
    }
    let delivered = |instance| bench.router.registry.get(instance).map(|i| i.delivered);
    let (to_a, to_b) = (delivered(on_a), delivered(on_b));
    assert_eq!((to_a, to_b), (Some(5), Some(5)));
    assert_eq!(replies(&bench.received(caller)).len(), 10);
}

#[test]
fn the_sweep_answers_expired_calls_and_drops_late_replies() {
    let mut bench = Bench::new(Limits::default());
    let callee = bench.connect(Principal::daemon(), 0);
    bench.register(callee, "slow", &["get"]);
    let caller = bench.connect(Principal::daemon(), 0);
    let id = bench.call(caller, "slow.get", b"", 20);
    let request =
        bench
            .received(callee)
            .into_iter()
            .find_map(|f| if let Frame::Request(r) = f { Some(r) } else { None });
    let request = request.expect("forwarded");

    bench.router.expire(Instant::now());
    assert!(bench.received(caller).is_empty(), "not yet due");
    bench.router.expire(Instant::now() + Duration::from_millis(50));
    let frames = bench.received(caller);
    assert!(
        matches!(frames.as_slice(), [Frame::Error { id: got, code: ErrorCode::Timeout, .. }] if *got == id),
        "{frames:?}"
    );
    // The instance answers after all: nobody is told twice.
    bench.send(callee, Frame::Reply { id: request.id, payload: Bytes::from_static(b"late") });
    assert!(bench.received(caller).is_empty());
    // And the caller's in-flight count came back.
    assert_eq!(bench.router.sessions[&caller].inflight, 0);
}
