//! The gateway over HTTPS, against the real daemon, reached with curl (the
//! client an operator would use): a client certificate signed by the
//! configured CA is the request's `cert:CN` principal and the policy applies
//! to it; a certificate from another CA, or plain HTTP, gets no answer at
//! all; a state-changing request must come from the `https://` origin; the
//! session cookie is `Secure`; `switchboard check` takes an HTTPS gateway on
//! any address and names a certificate it cannot read.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::path::Path;
use std::process::Command;

use support::http::free_port;
use support::Daemon;

const DEPLOY: &str = "deploy-token-0123456789abcdef";

/// What curl got: its exit status, the HTTP status (0 without an answer),
/// the response head and the body.
struct Got {
    ok: bool,
    status: u16,
    head: String,
    body: String,
    stderr: String,
}

/// `curl -i` over HTTPS with the test's CA; `args` add a certificate,
/// headers, a method, a body.
fn curl(work: &Path, url: &str, args: &[&str]) -> Got {
    let ca = work.join("ca.pem");
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "--cacert", ca.to_str().unwrap()])
        .args(args)
        .arg(url)
        .current_dir(work)
        .output()
        .expect("curl (installed by scripts/install-test-deps.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Got { ok: out.status.success(), status, head: head.to_owned(), body: body.to_owned(), stderr }
}

const EDGE: &[&str] = &["--cert", "client.pem", "--key", "client.key"];

fn tls_config(work: &Path, port: u16, require_client_cert: bool) -> String {
    let p = |name: &str| work.join(name);
    format!(
        "[security]\ntokens = {{ deploy = \"{DEPLOY}\" }}\n\
         [[policy]]\nprincipal = \"cert:edge-1\"\nallow = [\"call demo.*\"]\n\
         [gateway]\nlisten = \"127.0.0.1:{port}\"\n\
         [gateway.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\nrequire_client_cert = {require_client_cert}\n",
        p("server.pem"),
        p("server.key"),
        p("ca.pem"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_a_cert_principal_and_the_policy_applies_to_it() {
    let certs = tempfile::tempdir().unwrap();
    support::certs::certificates(certs.path());
    let work = certs.path();
    let port = free_port();
    let (daemon, _dir) = Daemon::start_with_config(&tls_config(work, port, false), &[]);
    let bus = daemon.bus().await;
    let _demo =
        bus.serve("demo").unwrap().method("echo", |r| async move { Ok(r.payload) }).start().await.unwrap();
    let url = |path: &str| format!("https://127.0.0.1:{port}{path}");
    // The daemon starts its apps before it lets anyone in: the gateway is up.
    assert_eq!(curl(work, &url("/healthz"), &[]).status, 200);

    let call = |args: &[&str], path: &str| {
        curl(
            work,
            &url(path),
            &[&["-X", "POST", "-H", "Content-Type: application/json", "-d", "\"hi\""], args].concat(),
        )
    };
    let edge = call(EDGE, "/v1/call/demo/echo");
    assert_eq!((edge.status, edge.body.as_str()), (200, "\"hi\""), "{}", edge.head);

    let denied = call(EDGE, "/v1/call/other/thing");
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert!(denied.body.contains("cert:edge-1 may not call other.thing"), "{}", denied.body);

    let anonymous = call(&[], "/v1/call/demo/echo");
    assert_eq!(anonymous.status, 403, "{}", anonymous.body);
    assert!(anonymous.body.contains("anonymous may not call demo.echo"), "{}", anonymous.body);

    // A certificate with the same name from a CA nobody configured: no
    // handshake, so no request, so no answer of any kind.
    let forged = call(&["--cert", "forged.pem", "--key", "forged.key"], "/v1/call/demo/echo");
    assert!(!forged.ok && forged.status == 0, "a forged certificate got in: {} {}", forged.head, forged.body);

    // Plain HTTP on the HTTPS port is not served either.
    let plain = curl(work, &format!("http://127.0.0.1:{port}/healthz"), &[]);
    assert!(!plain.ok && plain.status == 0, "plain HTTP answered: {}", plain.head);

    // A state-changing request from the http:// origin of the same host is
    // another origin.
    let http_origin =
        call(&[EDGE, &["-H", &format!("Origin: http://127.0.0.1:{port}")]].concat(), "/v1/call/demo/echo");
    assert_eq!(http_origin.status, 403, "{}", http_origin.body);
    assert!(http_origin.body.contains("cross-origin"), "{}", http_origin.body);
    let same_origin =
        call(&[EDGE, &["-H", &format!("Origin: https://127.0.0.1:{port}")]].concat(), "/v1/call/demo/echo");
    assert_eq!(same_origin.status, 200, "{}", same_origin.body);

    // A browser's session cookie over HTTPS is never sent back over HTTP.
    let login =
        curl(work, &url("/v1/session"), &["-X", "POST", "-H", &format!("Authorization: Bearer {DEPLOY}")]);
    assert_eq!(login.status, 200, "{}", login.body);
    let cookie =
        login.head.lines().find(|line| line.to_ascii_lowercase().starts_with("set-cookie:")).unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("Secure"), "{cookie}");
    assert!(login.body.contains("token:deploy"), "{}", login.body);
    assert!(edge.stderr.is_empty(), "{}", edge.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_certificates_required_a_client_without_one_gets_no_answer() {
    let certs = tempfile::tempdir().unwrap();
    support::certs::certificates(certs.path());
    let work = certs.path();
    let port = free_port();
    let (_daemon, _dir) = Daemon::start_with_config(&tls_config(work, port, true), &[]);
    let url = format!("https://127.0.0.1:{port}/healthz");
    assert_eq!(curl(work, &url, EDGE).status, 200);
    let without = curl(work, &url, &[]);
    assert!(!without.ok && without.status == 0, "answered without a certificate: {}", without.head);
}

#[test]
fn check_takes_an_https_gateway_on_any_address_and_names_a_certificate_it_cannot_read() {
    let certs = tempfile::tempdir().unwrap();
    support::certs::certificates(certs.path());
    let config = certs.path().join("daemon.toml");
    let check = |text: &str| {
        std::fs::write(&config, text).unwrap();
        let out = Command::new(support::BIN)
            .args(["check", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), said)
    };
    let anywhere = tls_config(certs.path(), 8443, false).replace("127.0.0.1:8443", "0.0.0.0:8443");
    let (ok, said) = check(&anywhere);
    assert!(ok, "{said}");

    let missing = certs.path().join("missing.pem");
    let (ok, said) = check(
        &anywhere.replace(certs.path().join("server.pem").to_str().unwrap(), missing.to_str().unwrap()),
    );
    assert!(!ok, "{said}");
    assert!(said.contains("gateway.tls") && said.contains("missing.pem"), "{said}");
}
