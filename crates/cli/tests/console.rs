//! The web console in a real browser (Debian's chromium, headless, through
//! chromedriver) against the real daemon and gateway: a user signs in with
//! a token, finds the running services, stops one with its button and sees
//! its state change, and sees a published message appear in the live view.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::Duration;

use support::http::free_port;
use support::supervised::{bus_aware_cache, supervise};
use support::webdriver::Browser;

const OPS: &str = "ops-token-0123456789abcdefg";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_services_stops_one_and_follows_messages() {
    let port = free_port();
    let s = supervise(&format!(
        "[security]\ntokens = {{ ops = \"{OPS}\" }}\n\
         [[policy]]\nprincipal = \"token:ops\"\nallow = [\"call >\", \"control >\", \"subscribe >\"]\n\
         [gateway]\nlisten = \"127.0.0.1:{port}\"\n{}",
        bus_aware_cache(0)
    ));
    s.wait_state("cache", "Running", Duration::from_secs(20));
    let bus = s.daemon.bus().await;
    let url = format!("http://127.0.0.1:{port}/");
    let browser = tokio::task::spawn_blocking(move || {
        let browser = Browser::start();
        browser.open(&url);
        // Anonymous may do nothing here: the page says so, and shows nothing.
        browser.wait_text("#principal", Duration::from_secs(20), |t| t == "as anonymous");
        browser.wait_text("#problem", Duration::from_secs(20), |t| t.contains("may not"));
        // Signed in with a token (exchanged for a session cookie).
        browser.type_into("#token", OPS);
        browser.click("#signin button[type=submit]");
        browser.wait_text("#principal", Duration::from_secs(20), |t| t == "as token:ops");
        let state = "#supervised tr[data-service=cache] .state";
        browser.wait_text(state, Duration::from_secs(20), |t| t == "Running");
        browser.wait_text("#services", Duration::from_secs(20), |t| t.contains("cache") && t.contains("get"));
        assert_eq!(browser.run("return document.cookie"), "", "the session cookie is HttpOnly");
        browser.click("#supervised tr[data-service=cache] button[data-action=stop]");
        browser.wait_text(state, Duration::from_secs(30), |t| t == "Stopped");
        browser
    })
    .await
    .unwrap();
    assert_eq!(s.status("cache").state, "Stopped", "the daemon agrees with the page");

    bus.publish("orders.console", switchboard::encode(&serde_json::json!({"id": 42})).unwrap())
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        let seen = browser.wait_text("#live", Duration::from_secs(20), |t| t.contains("orders.console"));
        assert!(seen.contains(r#"{"id":42}"#), "{seen}");
    })
    .await
    .unwrap();
}
