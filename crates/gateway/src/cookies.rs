//! Browser sessions. `EventSource` and `WebSocket` cannot send an
//! `Authorization` header, so a browser exchanges its bearer token once
//! (`POST /v1/session`) for a cookie — random, `HttpOnly` (no script reads
//! it), `SameSite=Strict` (no other site's page sends it) — that stands for
//! the token's principal until it expires or `DELETE /v1/session` ends it.
//! Bounded: past [`MAX_COOKIES`] the oldest is forgotten.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use switchboard_daemon::host::{new_secret, Principal};

/// The cookie's name.
pub const NAME: &str = "sb_session";
/// How long a browser session lasts.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
pub const MAX_COOKIES: usize = 4096;

#[derive(Default)]
pub struct Cookies {
    open: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl Cookies {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (Principal, Instant)>> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new cookie value for `principal`.
    pub fn open(&self, principal: Principal) -> std::io::Result<String> {
        let value = new_secret()?;
        let mut open = self.lock();
        let now = Instant::now();
        open.retain(|_, (_, until)| *until > now);
        if open.len() >= MAX_COOKIES {
            let oldest = open.iter().min_by_key(|(_, (_, until))| *until).map(|(value, _)| value.clone());
            if let Some(oldest) = oldest {
                open.remove(&oldest);
            }
        }
        open.insert(value.clone(), (principal, now + LIFETIME));
        Ok(value)
    }

    /// The principal a cookie value stands for, while it lasts.
    pub fn principal(&self, value: &str) -> Option<Principal> {
        let open = self.lock();
        let (principal, until) = open.get(value)?;
        (*until > Instant::now()).then(|| principal.clone())
    }

    pub fn close(&self, value: &str) {
        self.lock().remove(value);
    }
}

/// Our cookie's value in a `Cookie` header (`a=1; sb_session=…`).
pub fn find(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == NAME)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value that gives a browser `value`.
/// Over HTTPS it is `Secure` too: never sent back over plain HTTP.
pub fn set(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{NAME}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}", LIFETIME.as_secs())
}

/// The `Set-Cookie` value that makes a browser forget it.
pub fn clear(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{NAME}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_stands_for_its_principal_until_closed() {
        let cookies = Cookies::default();
        let value = cookies.open(Principal::token("ops")).unwrap();
        assert_eq!(find(&format!("theme=dark; {NAME}={value}")), Some(value.as_str()));
        assert_eq!(find("theme=dark"), None);
        assert_eq!(cookies.principal(&value).map(|p| p.name.to_string()), Some("token:ops".to_owned()));
        assert!(cookies.principal("guess").is_none());
        cookies.close(&value);
        assert!(cookies.principal(&value).is_none());
        assert!(set(&value, false).contains("HttpOnly; SameSite=Strict"));
        assert!(set(&value, true).ends_with("; Secure") && clear(true).ends_with("; Secure"));
    }
}
