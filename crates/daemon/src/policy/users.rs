//! The system's user and group database, through its own lookups
//! (`getpwnam`, `getgrgid`, `getgrouplist` via NSS), so users from LDAP,
//! SSSD, systemd's DynamicUser or extrausers resolve like local ones: names
//! for peer credentials, ids for the supervisor's `user =`.
//!
//! These calls may do I/O (a directory server): callers run them before
//! taking the router's lock, never under it.

use std::ffi::CString;

use nix::unistd::{getgrouplist, Gid, Group, Uid, User};

/// `(uid, primary gid)` of a user name (or a numeric uid).
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let user = match User::from_name(name).ok().flatten() {
        Some(user) => user,
        None => User::from_uid(Uid::from_raw(name.parse().ok()?)).ok().flatten()?,
    };
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// The gid of a group name (or a numeric gid).
pub fn lookup_group(name: &str) -> Option<u32> {
    match Group::from_name(name).ok().flatten() {
        Some(group) => Some(group.gid.as_raw()),
        None => {
            let gid: u32 = name.parse().ok()?;
            Group::from_gid(Gid::from_raw(gid)).ok().flatten().map(|g| g.gid.as_raw())
        }
    }
}

/// The name of a uid, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid)).ok().flatten().map(|u| u.name)
}

/// Names of every group `user` belongs to: its primary `gid` and its
/// supplementary groups, as the system's group lookups list them.
pub fn group_names(user: Option<&str>, gid: u32) -> Vec<String> {
    let primary = Gid::from_raw(gid);
    let gids = user
        .and_then(|u| CString::new(u).ok())
        .and_then(|u| getgrouplist(&u, primary).ok())
        .unwrap_or_else(|| vec![primary]);
    let mut names: Vec<String> =
        gids.into_iter().filter_map(|g| Group::from_gid(g).ok().flatten()).map(|g| g.name).collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_both_ways() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_user("0"), Some((0, 0)));
        assert_eq!(lookup_group("root"), Some(0));
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert!(group_names(Some("root"), 0).contains(&"root".to_owned()));
        assert_eq!(lookup_user("no-such-user-here"), None);
    }
}
