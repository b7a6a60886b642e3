//! The address a request comes from, for per-address limits. Behind a load balancer every
//! TCP connection comes from the balancer; when the peer is one of the configured trusted
//! proxies, the client is the nearest address in `X-Forwarded-For` that is not a trusted
//! proxy itself (entries further left were written by the client and prove nothing).

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

#[derive(Debug, Clone, Default)]
pub struct ClientIp {
    trusted: Vec<IpNet>,
}

impl ClientIp {
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self { trusted }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: `peer`, or what trusted proxies in front of it say.
    pub fn of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        // Rightmost first: each proxy appends the address it saw.
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// `10.0.0.0/8`, or a single address.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or a CIDR block"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_trusted_peers_are_believed() {
        let none = ClientIp::default();
        assert_eq!(
            none.of(ip("10.0.0.5"), &headers(&["1.2.3.4"])),
            ip("10.0.0.5")
        );
        let lb = ClientIp::new(vec![parse_net("10.0.0.0/8").unwrap()]);
        assert_eq!(lb.of(ip("10.0.0.5"), &headers(&["1.2.3.4"])), ip("1.2.3.4"));
        assert_eq!(
            lb.of(ip("192.0.2.9"), &headers(&["1.2.3.4"])),
            ip("192.0.2.9"),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(lb.of(ip("10.0.0.5"), &HeaderMap::new()), ip("10.0.0.5"));
    }

    #[test]
    fn the_nearest_untrusted_hop_wins_over_what_the_client_wrote() {
        let lb = ClientIp::new(vec![parse_net("10.0.0.0/8").unwrap()]);
        // The client forged the first entry; the proxies appended the rest.
        let h = headers(&["6.6.6.6, 1.2.3.4", "10.0.0.7"]);
        assert_eq!(lb.of(ip("10.0.0.5"), &h), ip("1.2.3.4"));
        // Garbage stops the walk at the last address a trusted hop wrote.
        let h = headers(&["1.2.3.4, nonsense, 10.0.0.7"]);
        assert_eq!(lb.of(ip("10.0.0.5"), &h), ip("10.0.0.7"));
        let v6 = ClientIp::new(vec![parse_net("::1").unwrap()]);
        assert_eq!(
            v6.of(ip("::1"), &headers(&["2001:db8::1"])),
            ip("2001:db8::1")
        );
        let mapped = ClientIp::new(vec![parse_net("127.0.0.1").unwrap()]);
        assert_eq!(
            mapped.of(ip("::ffff:127.0.0.1"), &headers(&["192.0.2.1"])),
            ip("192.0.2.1")
        );
    }
}
