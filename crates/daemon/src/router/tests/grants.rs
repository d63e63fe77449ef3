//! Direct channels: granted only while every call would go to that one
//! instance anyway, and revoked at both ends the moment that stops holding.

use switchboard_proto::direct::{DirectRequest, DAEMON_DIRECT, GRANT_METHOD};
use switchboard_proto::{sys, ErrorCode, Frame};

use super::{errors, Bench};
use crate::policy::Principal;
use crate::Limits;

const POLICY: &str = "[[policy]]\nprincipal = \"token:svc\"\nallow = [\"serve echo\"]\n\
                      [[policy]]\nprincipal = \"token:app\"\nallow = [\"call echo.*\"]\n";

/// Asks for a direct channel to `echo`; the grant id the instance is
/// offered, or the error the caller got.
fn ask(bench: &mut Bench, caller: u64, callee: u64) -> Result<u64, ErrorCode> {
    let request = sys::encode(&DirectRequest { service: "echo".into(), instance: 0 });
    bench.call(caller, &format!("{}.{DAEMON_DIRECT}", sys::DAEMON_SERVICE), &request, 1000);
    if let Some(code) = errors(&bench.received(caller)).first() {
        return Err(*code);
    }
    let offered = bench.received(callee).into_iter().find_map(|f| match f {
        Frame::Request(r) if r.method.as_str() == GRANT_METHOD => {
            sys::decode::<switchboard_proto::direct::DirectGrant>(&r.payload).ok()
        }
        _ => None,
    });
    Ok(offered.expect("the instance is offered the grant").grant)
}

fn revoked(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| if let Frame::Revoke { grant, .. } = f { Some(*grant) } else { None })
        .collect()
}

#[test]
fn a_grant_is_given_for_a_lone_instance_and_revoked_at_both_ends_when_a_second_appears() {
    let mut bench = Bench::new(Limits::default());
    bench.policy(POLICY);
    let callee = bench.connect(Principal::token("svc"), 200);
    bench.register(callee, "echo", &["say"]);
    let caller = bench.connect(Principal::token("app"), 100);
    let grant = ask(&mut bench, caller, callee).unwrap();

    let second = bench.connect(Principal::token("svc"), 300);
    bench.register(second, "echo", &["say"]);
    assert_eq!(revoked(&bench.received(caller)), [grant]);
    assert_eq!(revoked(&bench.received(callee)), [grant]);
    // With two instances the daemon balances: no new grant.
    assert_eq!(ask(&mut bench, caller, callee), Err(ErrorCode::PermissionDenied));
}

#[test]
fn a_grant_is_refused_without_a_local_process_or_the_right_and_revoked_by_a_reload() {
    let mut bench = Bench::new(Limits::default());
    bench.policy(POLICY);
    let callee = bench.connect(Principal::token("svc"), 200);
    bench.register(callee, "echo", &["say"]);
    let remote = bench.connect(Principal::token("app"), 0);
    assert_eq!(ask(&mut bench, remote, callee), Err(ErrorCode::PermissionDenied), "no pid: not local");
    let stranger = bench.connect(Principal::token("other"), 101);
    assert_eq!(ask(&mut bench, stranger, callee), Err(ErrorCode::PermissionDenied), "may not call echo");

    let caller = bench.connect(Principal::token("app"), 100);
    let grant = ask(&mut bench, caller, callee).unwrap();
    // The caller loses the right to call echo: its channel goes too.
    bench.policy("[[policy]]\nprincipal = \"token:svc\"\nallow = [\"serve echo\"]\n");
    assert_eq!(revoked(&bench.received(caller)), [grant]);
    assert_eq!(revoked(&bench.received(callee)), [grant]);
}
