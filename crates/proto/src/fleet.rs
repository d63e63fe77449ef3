//! What a caller says to the fleet (docs/fleet.md): the header that sends a
//! call to one host of the fleet instead of letting the daemon choose.

/// `sb-host: NAME`: the call goes to host NAME through the fleet, even when
/// an instance on this host could take it.
pub const HOST_HEADER: &str = "sb-host";
