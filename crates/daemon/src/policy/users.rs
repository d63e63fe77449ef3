//! The system's user and group database (`/etc/passwd`, `/etc/group`), read
//! directly: names for peer credentials, ids for the supervisor's `user =`.

/// `(uid, primary gid)` of a user name (or a numeric uid).
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    passwd()
        .into_iter()
        .find_map(|(user, uid, gid)| (user == name || name.parse() == Ok(uid)).then_some((uid, gid)))
}

/// The gid of a group name (or a numeric gid).
pub fn lookup_group(name: &str) -> Option<u32> {
    groups().into_iter().find_map(|(group, gid, _)| (group == name || name.parse() == Ok(gid)).then_some(gid))
}

/// The name of a uid, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    passwd().into_iter().find_map(|(user, id, _)| (id == uid).then_some(user))
}

/// Names of every group `user` belongs to: its primary `gid` and the groups
/// that list it as a member.
pub fn group_names(user: Option<&str>, gid: u32) -> Vec<String> {
    groups()
        .into_iter()
        .filter(|(_, id, members)| *id == gid || user.is_some_and(|u| members.iter().any(|m| m == u)))
        .map(|(name, _, _)| name)
        .collect()
}

fn passwd() -> Vec<(String, u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(((*f.first()?).to_owned(), f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
        })
        .collect()
}

fn groups() -> Vec<(String, u32, Vec<String>)> {
    let text = std::fs::read_to_string("/etc/group").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let members =
                f.get(3).map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect());
            Some(((*f.first()?).to_owned(), f.get(2)?.parse().ok()?, members.unwrap_or_default()))
        })
        .collect()
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
