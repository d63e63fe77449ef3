//! The gateway's bus sessions, one per principal, each opened on that
//! principal's behalf (so the daemon's policy and limits apply to it), kept
//! for the next request of the same principal. Bounded: past
//! [`MAX_PRINCIPALS`] one is closed to make room.

use std::collections::HashMap;
use std::sync::Mutex;

use switchboard::{Bus, ConnectError, Endpoint};
use switchboard_daemon::host::RouterHandle;
use switchboard_daemon::policy::Principal;

pub const MAX_PRINCIPALS: usize = 1024;

pub struct Sessions {
    router: RouterHandle,
    endpoint: Endpoint,
    open: Mutex<HashMap<String, Bus>>,
}

impl Sessions {
    pub fn new(router: RouterHandle, endpoint: Endpoint) -> Self {
        Self { router, endpoint, open: Mutex::new(HashMap::new()) }
    }

    /// The principal a request's bearer token stands for: `token:NAME`, or
    /// `None` for a token the config does not have.
    pub fn principal(&self, bearer: Option<&str>) -> Option<Principal> {
        match bearer {
            None => Some(Principal::anonymous()),
            Some(token) => self.router.token_principal(token),
        }
    }

    /// A session as `principal`, opened once and reused.
    pub async fn bus(&self, principal: Principal) -> Result<Bus, ConnectError> {
        let name = principal.name.to_string();
        if let Some(bus) = self.lock().get(&name) {
            return Ok(bus.clone());
        }
        let dial = self.router.dialer(principal, "switchboard-gateway");
        let bus = Bus::connect_hosted(self.endpoint.clone(), "switchboard-gateway".into(), dial).await?;
        // Its calls go through the daemon, where they are counted and checked.
        bus.set_direct_calls(false);
        let mut open = self.lock();
        if open.len() >= MAX_PRINCIPALS {
            if let Some(gone) = open.keys().next().cloned() {
                if let Some(old) = open.remove(&gone) {
                    old.close();
                }
            }
        }
        Ok(open.entry(name).or_insert(bus).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bus>> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
