//! The local addresses a call gathers on, watched for changes: a laptop moving from Wi-Fi
//! to a wired or mobile network gets a new address and loses the old one, and the sockets
//! the call has bound on the old one can neither send nor receive. A change found here
//! restarts ICE at once (webrtc-rs then binds afresh on the addresses there are now)
//! instead of waiting for the media to stall.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How often the addresses are read (one `getifaddrs` call, tens of microseconds): until
/// the restart, what the call sends from an address that went fails.
pub const ADDRESS_CHECK: Duration = Duration::from_millis(250);

/// The usable addresses of the families a call binds as wildcards (`0.0.0.0`, `[::]`),
/// and when they were last read.
#[derive(Debug)]
pub struct AddressWatch {
    v4: bool,
    v6: bool,
    known: BTreeSet<IpAddr>,
    checked: Instant,
}

/// What changed between two reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddressChange {
    /// Addresses that appeared.
    pub added: Vec<IpAddr>,
    /// Addresses that went away.
    pub removed: Vec<IpAddr>,
}

impl AddressWatch {
    /// Watches the families `bind` names as wildcards; `None` when it names none (a call
    /// bound to fixed addresses gathers on those whatever the interfaces do).
    pub fn new(bind: &[String], now: Instant) -> Option<Self> {
        let wildcards: Vec<SocketAddr> = bind
            .iter()
            .filter_map(|addr| addr.parse::<SocketAddr>().ok())
            .filter(|addr| addr.ip().is_unspecified())
            .collect();
        if wildcards.is_empty() {
            return None;
        }
        let mut watch = AddressWatch {
            v4: wildcards.iter().any(SocketAddr::is_ipv4),
            v6: wildcards.iter().any(SocketAddr::is_ipv6),
            known: BTreeSet::new(),
            checked: now,
        };
        watch.known = watch.read()?;
        Some(watch)
    }

    /// Reads the addresses again, at most every [`ADDRESS_CHECK`]: what changed since the
    /// last read, if anything did. An enumeration that fails changes nothing.
    pub fn poll(&mut self, now: Instant) -> Option<AddressChange> {
        if now.saturating_duration_since(self.checked) < ADDRESS_CHECK {
            return None;
        }
        self.checked = now;
        let current = self.read()?;
        let change = diff(&self.known, &current);
        self.known = current;
        (!change.added.is_empty() || !change.removed.is_empty()).then_some(change)
    }

    fn read(&self) -> Option<BTreeSet<IpAddr>> {
        let interfaces = rtc::shared::ifaces::ifaces()
            .map_err(|err| tracing::debug!(%err, "reading the local addresses"))
            .ok()?;
        Some(usable(
            interfaces
                .iter()
                .filter_map(|interface| interface.addr.map(|addr| addr.ip())),
            self.v4,
            self.v6,
        ))
    }
}

/// The addresses ICE can gather host candidates on, as webrtc-rs expands a wildcard: not
/// loopback, unspecified or link-local, and of a family bound.
pub fn usable(addresses: impl Iterator<Item = IpAddr>, v4: bool, v6: bool) -> BTreeSet<IpAddr> {
    addresses
        .filter(|ip| if ip.is_ipv4() { v4 } else { v6 })
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !is_link_local(ip))
        .collect()
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// What `after` has that `before` had not, and the reverse.
pub fn diff(before: &BTreeSet<IpAddr>, after: &BTreeSet<IpAddr>) -> AddressChange {
    AddressChange {
        added: after.difference(before).copied().collect(),
        removed: before.difference(after).copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().filter_map(|ip| ip.parse().ok()).collect()
    }

    #[test]
    fn only_addresses_a_peer_could_reach_count() {
        let all = ips(&[
            "127.0.0.1",
            "10.1.2.3",
            "169.254.9.9",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "2001:db8::5",
        ]);
        let v4 = usable(all.iter().copied(), true, false);
        assert_eq!(v4.into_iter().collect::<Vec<_>>(), ips(&["10.1.2.3"]));
        let both = usable(all.iter().copied(), true, true);
        assert_eq!(
            both.into_iter().collect::<Vec<_>>(),
            ips(&["10.1.2.3", "2001:db8::5"])
        );
    }

    #[test]
    fn a_move_to_another_network_shows_both_sides() {
        let before: BTreeSet<IpAddr> = ips(&["10.0.0.2", "192.168.1.5"]).into_iter().collect();
        let after: BTreeSet<IpAddr> = ips(&["10.0.0.2", "172.16.0.9"]).into_iter().collect();
        let change = diff(&before, &after);
        assert_eq!(change.added, ips(&["172.16.0.9"]));
        assert_eq!(change.removed, ips(&["192.168.1.5"]));
        assert_eq!(diff(&after, &after), AddressChange::default());
    }

    #[test]
    fn fixed_addresses_are_not_watched() {
        let now = Instant::now();
        assert!(AddressWatch::new(&["127.0.0.1:0".to_owned()], now).is_none());
        assert!(AddressWatch::new(&["not an address".to_owned()], now).is_none());
        // A wildcard is, and nothing changes between two reads of the same machine.
        if let Some(mut watch) = AddressWatch::new(&["0.0.0.0:0".to_owned()], now) {
            assert_eq!(watch.poll(now), None, "too soon to read again");
        }
    }
}
