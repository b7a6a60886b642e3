//! Flood limits: how many WebSockets one address may hold, how fast it may open them, and
//! how fast one API key may create visits. Keyed rate limits use `governor`; the per-address
//! socket count is a map of counters whose guards give the slot back when dropped.
//!
//! An "address" is an IPv4 address, or an IPv6 /64: one subscriber usually holds a whole
//! /64, so counting single IPv6 addresses would give each client 2^64 shares.

use crate::config::LimitsConfig;
use dashmap::DashMap;
use governor::clock::DefaultClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

pub struct Limits {
    sockets: Arc<DashMap<IpAddr, usize>>,
    max_per_ip: usize,
    joins: Keyed<IpAddr>,
    visits: Keyed<String>,
}

/// One address's slot in the socket count, held for the connection's life.
pub struct IpSlot {
    sockets: Arc<DashMap<IpAddr, usize>>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        // Drop the entry at zero so the map holds only addresses with open sockets.
        self.sockets.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Limits {
    pub fn new(limits: &LimitsConfig) -> Self {
        let joins = Quota::per_second(nonzero(limits.joins_per_ip_per_second))
            .allow_burst(nonzero(limits.join_burst_per_ip));
        let visits = Quota::per_minute(nonzero(limits.visits_per_minute))
            .allow_burst(nonzero(limits.visit_burst));
        Self {
            sockets: Arc::new(DashMap::new()),
            max_per_ip: limits.max_per_ip,
            joins: RateLimiter::keyed(joins),
            visits: RateLimiter::keyed(visits),
        }
    }

    /// Takes a socket slot for `ip`, or `None` when it already holds its share.
    pub fn socket(&self, ip: IpAddr) -> Option<IpSlot> {
        let ip = client_key(ip);
        let mut n = self.sockets.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            sockets: self.sockets.clone(),
            ip,
        })
    }

    /// Whether `ip` may attempt another join now.
    pub fn join_attempt(&self, ip: IpAddr) -> bool {
        self.joins.check_key(&client_key(ip)).is_ok()
    }

    /// Whether the API key `key` may create another visit now.
    pub fn visit_creation(&self, key: &str) -> bool {
        self.visits.check_key(&key.to_owned()).is_ok()
    }

    /// Forgets rate-limit state of keys that have been quiet: bounded memory under floods
    /// from many addresses.
    pub fn forget_idle(&self) {
        self.joins.retain_recent();
        self.visits.retain_recent();
        self.joins.shrink_to_fit();
        self.visits.shrink_to_fit();
    }
}

/// The address limits count by: an IPv4 address as is (also written as IPv4-mapped IPv6),
/// an IPv6 address's /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LimitsConfig {
        crate::config::Config::try_from(crate::config::Settings::default())
            .unwrap()
            .limits
    }

    #[test]
    fn socket_slots_are_counted_per_address_and_given_back() {
        let limits = Limits::new(&LimitsConfig {
            max_per_ip: 2,
            ..config()
        });
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = limits.socket(a).unwrap();
        let _second = limits.socket(a).unwrap();
        assert!(limits.socket(a).is_none());
        assert!(
            limits.socket(b).is_some(),
            "another address has its own share"
        );
        drop(first);
        assert!(limits.socket(a).is_some());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let limits = Limits::new(&LimitsConfig {
            max_per_ip: 2,
            ..config()
        });
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let _a = limits.socket(ip("2001:db8:1:2::1")).unwrap();
        let _b = limits.socket(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(limits.socket(ip("2001:db8:1:2:abcd::1")).is_none());
        assert!(limits.socket(ip("2001:db8:1:3::1")).is_some());
        assert_eq!(client_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn join_attempts_and_visit_creation_are_rate_limited() {
        let limits = Limits::new(&LimitsConfig {
            joins_per_ip_per_second: 1,
            join_burst_per_ip: 3,
            visits_per_minute: 1,
            visit_burst: 2,
            ..config()
        });
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert_eq!((0..5).filter(|_| limits.join_attempt(ip)).count(), 3);
        assert!(limits.join_attempt([10, 0, 0, 9].into()));
        assert_eq!(
            (0..5).filter(|_| limits.visit_creation("clinic-a")).count(),
            2
        );
        assert!(limits.visit_creation("clinic-b"));
    }
}
