//! The embedded STUN/TURN server, for a clinic that runs Bedside alone: off by default,
//! switched on with `turn.embedded = true`.
//!
//! Built on the `turn` crate of the webrtc-rs project (its async, tokio-based server;
//! the sans-IO `rtc-turn` that `webrtc` 0.21 uses has a client only). Around it, Bedside
//! adds what the crate leaves to its user:
//!
//! - authentication with the credentials Bedside mints (`expiry:subject.issued`, HMAC-SHA1
//!   of the shared secret, as coturn's `use-auth-secret`), expired usernames refused;
//! - a quota of live allocations per subject (one person in one visit, however often they
//!   rejoin and whatever credential they use), answered with 486;
//! - a removed or denied identity's credentials (issued no later than the block) refused
//!   with 403 when they ask for an allocation, and the relays they already hold closed
//!   within a second or two of the block being stored (whichever node stored it);
//! - peer addresses in private, loopback, link-local and other non-global ranges refused
//!   with 403 unless `allow_private_peers` is set, so the relay cannot be turned against
//!   the clinic's own network. Checked on CreatePermission and ChannelBind (the only ways
//!   to open a path to a peer), and again on every datagram a relay socket sends or takes.
//!
//! UDP only: no TCP or TLS listener (`turns:`); see docs/nat-traversal.md.

use async_trait::async_trait;
use bedside_auth::{MAX_TURN_CREDENTIAL_SECS, TurnSecret, subject_of};
use bedside_rooms::storage::AccessBlocks;
use bedside_visit::{Block, VisitId};
use chrono::{DateTime, Utc};
use std::any::Any;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock, Weak};
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS};
use stun::error_code::{CODE_ALLOC_QUOTA_REACHED, CODE_FORBIDDEN, ErrorCode, ErrorCodeAttribute};
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, Getter, METHOD_ALLOCATE, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, Message, MessageType, Method, Setter, is_message,
};
use stun::textattrs::Username;
use thiserror::Error;
use tokio::net::UdpSocket;
use turn::auth::{AuthHandler, generate_auth_key};
use turn::relay::RelayAddressGenerator;
use turn::server::Server;
use turn::server::config::{ConnConfig, ServerConfig};
use webrtc_util::Conn;

/// STUN's magic cookie, which XOR-encoded addresses are masked with.
const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Attempts at a free port of the relay range before an allocation fails.
const PORT_ATTEMPTS: usize = 64;

/// What the embedded server needs, resolved from the `turn` settings.
#[derive(Debug, Clone)]
pub struct EmbeddedTurnConfig {
    /// UDP address to serve STUN and TURN on.
    pub listen: SocketAddr,
    pub realm: String,
    pub secret: TurnSecret,
    /// The address relayed candidates carry: the one peers can reach.
    pub relay_address: IpAddr,
    /// Local address relay sockets bind to.
    pub relay_bind: IpAddr,
    /// Inclusive port range of relay sockets; `None`: any free port.
    pub relay_ports: Option<(u16, u16)>,
    /// Live allocations one username (one participant) may hold.
    pub max_allocations_per_user: usize,
    /// Relay to private, loopback and link-local peers too.
    pub allow_private_peers: bool,
}

#[derive(Debug, Error)]
pub enum TurnServerError {
    #[error("binding the TURN listener udp://{addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("starting the TURN server: {0}")]
    Start(#[from] turn::Error),
}

/// How often the server looks for new blocks, to close the relays their identities hold.
const REVOKED_LOOK: std::time::Duration = std::time::Duration::from_secs(1);
/// How far back each look reads blocks: a block's row lands a moment after its time (the
/// owner's writer batches), on any node; one stored later than this is left to the 403
/// its identity's next Allocate gets.
const REVOKED_WINDOW_SECS: i64 = 300;

/// A running embedded TURN server.
pub struct EmbeddedTurn {
    server: Arc<Server>,
    local_addr: SocketAddr,
    /// Closes relays of identities blocked after they allocated them.
    closer: tokio::task::JoinHandle<()>,
}

impl EmbeddedTurn {
    /// Starts serving; `blocks` is where removals and denials are stored.
    pub async fn start(
        config: EmbeddedTurnConfig,
        blocks: Arc<dyn AccessBlocks>,
    ) -> Result<Self, TurnServerError> {
        let socket =
            UdpSocket::bind(config.listen)
                .await
                .map_err(|source| TurnServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = socket
            .local_addr()
            .map_err(|source| TurnServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let rules = Arc::new(Rules {
            allow_private_peers: config.allow_private_peers,
            max_allocations_per_user: config.max_allocations_per_user,
        });
        // The guard asks the server how many allocations a username holds; the server
        // only exists once the guard is handed to it.
        let server_slot = Arc::new(OnceLock::new());
        let guard = Guard {
            socket: Arc::new(socket),
            rules: rules.clone(),
            server: server_slot.clone(),
            secret: config.secret.clone(),
            blocks: blocks.clone(),
        };
        let secret = config.secret.clone();
        let server = Arc::new(
            Server::new(ServerConfig {
                conn_configs: vec![ConnConfig {
                    conn: Arc::new(guard),
                    relay_addr_generator: Box::new(Relays {
                        advertised: config.relay_address,
                        bind: config.relay_bind,
                        ports: config.relay_ports,
                        rules,
                    }),
                }],
                realm: config.realm.clone(),
                auth_handler: Arc::new(SecretAuth {
                    secret: config.secret,
                }),
                channel_bind_timeout: std::time::Duration::ZERO,
                alloc_close_notify: None,
            })
            .await?,
        );
        let _ = server_slot.set(Arc::downgrade(&server));
        let closer = tokio::spawn(close_revoked(Arc::downgrade(&server), blocks, secret));
        tracing::info!(
            listen = %local_addr,
            relay_address = %config.relay_address,
            realm = %config.realm,
            allow_private_peers = config.allow_private_peers,
            "embedded TURN server listening (udp)"
        );
        Ok(Self {
            server,
            local_addr,
            closer,
        })
    }

    /// The UDP address it serves on (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Closes every allocation and stops serving.
    pub async fn stop(self) {
        self.closer.abort();
        if let Err(e) = self.server.close().await {
            tracing::warn!(error = %e, "closing the TURN server");
        }
    }
}

/// Checks usernames minted by Bedside: the key is derived from the shared secret, and an
/// expired or malformed username has none.
struct SecretAuth {
    secret: TurnSecret,
}

impl AuthHandler for SecretAuth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        _src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        match self.secret.password_for(username, Utc::now()) {
            Ok(password) => Ok(generate_auth_key(username, realm, &password)),
            Err(e) => {
                // Neither the username (the client's text) nor the address is logged.
                tracing::debug!(reason = %e, "TURN credential refused");
                Err(turn::Error::Other(e.to_string()))
            }
        }
    }
}

/// The policy both the listener guard and the relay sockets apply.
struct Rules {
    allow_private_peers: bool,
    max_allocations_per_user: usize,
}

impl Rules {
    fn peer_allowed(&self, ip: IpAddr) -> bool {
        self.allow_private_peers || is_global(ip)
    }
}

/// Whether an address is a plausible public peer: not private (RFC 1918, unique local),
/// loopback, link-local, shared (CGNAT), unspecified, multicast, broadcast or reserved.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_global_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) carries an IPv4 address in its low bits.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return is_global_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

/// The server's listening socket, screened: requests the policy refuses are answered
/// here and never reach the `turn` crate.
struct Guard {
    socket: Arc<UdpSocket>,
    rules: Arc<Rules>,
    server: Arc<OnceLock<Weak<Server>>>,
    secret: TurnSecret,
    blocks: Arc<dyn AccessBlocks>,
}

/// What to do with one datagram from a client.
enum Verdict {
    Pass,
    /// Answer with this error response and drop the request.
    Refuse(Vec<u8>),
}

impl Guard {
    async fn screen(&self, packet: &[u8], from: SocketAddr) -> Verdict {
        // ChannelData and anything else that is not STUN passes untouched: a channel only
        // exists once its ChannelBind passed the checks below.
        if !is_message(packet) {
            return Verdict::Pass;
        }
        let mut typ = MessageType::default();
        typ.read_value(u16::from_be_bytes([packet[0], packet[1]]));
        if typ.class != CLASS_REQUEST {
            return Verdict::Pass;
        }
        let opens_a_path =
            typ.method == METHOD_CREATE_PERMISSION || typ.method == METHOD_CHANNEL_BIND;
        if !(typ.method == METHOD_ALLOCATE || opens_a_path && !self.rules.allow_private_peers) {
            return Verdict::Pass;
        }
        let mut m = Message::new();
        if m.unmarshal_binary(packet).is_err() {
            return Verdict::Pass; // the server answers malformed requests itself
        }
        if opens_a_path {
            let denied = m
                .attributes
                .0
                .iter()
                .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
                .filter_map(|a| xor_address(&a.value, &m.transaction_id.0))
                .any(|ip| !self.rules.peer_allowed(ip));
            if denied {
                // Peer addresses are not logged, like ICE candidates.
                tracing::debug!("TURN permission to a private address refused");
                return refuse(&m, typ.method, CODE_FORBIDDEN, b"Forbidden");
            }
            return Verdict::Pass;
        }
        // An Allocate: only an authenticated attempt can create one, and only those count.
        if !m.contains(ATTR_MESSAGE_INTEGRITY) {
            return Verdict::Pass;
        }
        let mut username = Username::new(ATTR_USERNAME, String::new());
        if username.get_from(&m).is_err() {
            return Verdict::Pass;
        }
        // Usernames Bedside did not mint are the `turn` crate's to refuse (401).
        let Some((subject, issued)) = subject_of(&username.text) else {
            return Verdict::Pass;
        };
        if self.revoked(subject, issued).await {
            tracing::info!(
                participant = subject,
                "TURN allocation of a revoked identity refused"
            );
            return refuse(&m, typ.method, CODE_FORBIDDEN, b"Forbidden");
        }
        let Some(server) = self.server.get().and_then(Weak::upgrade) else {
            return Verdict::Pass;
        };
        let Ok(live) = server.get_allocations_info(None).await else {
            return Verdict::Pass;
        };
        // Counted per subject, whatever the username: rejoining mints new usernames for
        // the same person. A retransmitted Allocate from a client that already holds its
        // allocation is the server's to answer.
        let held = live
            .iter()
            .filter(|(tuple, info)| {
                subject_of(&info.username).is_some_and(|(s, _)| s == subject)
                    && tuple.src_addr != from
            })
            .count();
        if held >= self.rules.max_allocations_per_user {
            tracing::info!(participant = subject, held, "TURN allocation quota reached");
            return refuse(
                &m,
                typ.method,
                CODE_ALLOC_QUOTA_REACHED,
                b"Allocation Quota Reached",
            );
        }
        Verdict::Pass
    }
}

impl Guard {
    /// Whether a credential of `subject` issued at `issued` (unix seconds) belongs to an
    /// identity removed or denied since. Credentials live a day at most, so the blocks of
    /// the last day are all that can matter. Storage that does not answer refuses nothing:
    /// a clinic's call must not fail because a check could not be made.
    async fn revoked(&self, subject: &str, issued: i64) -> bool {
        let since = Utc::now() - chrono::TimeDelta::seconds(MAX_TURN_CREDENTIAL_SECS);
        let Ok(blocks) = self.blocks.blocks_since(since).await else {
            tracing::warn!("TURN: access blocks could not be read");
            return false;
        };
        blocks
            .iter()
            .any(|(visit, block)| revokes(&self.secret, *visit, block, subject, issued))
    }
}

/// Whether `block` (in `visit`) revokes a TURN credential of `subject` issued at `issued`
/// (unix seconds): the subject is that identity's in that visit, and the credential was
/// issued no later than the block.
fn revokes(secret: &TurnSecret, visit: VisitId, block: &Block, subject: &str, issued: i64) -> bool {
    block.at.timestamp() >= issued && secret.subject(&visit.to_string(), &block.identity) == subject
}

/// Closes the relays held with credentials a block revoked, once a second, until the
/// server is gone. New blocks are read from storage (any node may have written them):
/// one indexed query a second, and a look at the allocations only when there is a new one.
async fn close_revoked(server: Weak<Server>, blocks: Arc<dyn AccessBlocks>, secret: TurnSecret) {
    let mut seen: std::collections::HashSet<(VisitId, String, DateTime<Utc>)> =
        std::collections::HashSet::new();
    let mut look = tokio::time::interval(REVOKED_LOOK);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        look.tick().await;
        let since = Utc::now() - chrono::TimeDelta::seconds(REVOKED_WINDOW_SECS);
        seen.retain(|(_, _, at)| *at >= since);
        let Ok(found) = blocks.blocks_since(since).await else {
            continue;
        };
        let fresh: Vec<(VisitId, Block)> = found
            .into_iter()
            .filter(|(visit, block)| seen.insert((*visit, block.identity.clone(), block.at)))
            .collect();
        if fresh.is_empty() {
            continue;
        }
        let Some(server) = server.upgrade() else {
            return;
        };
        let Ok(live) = server.get_allocations_info(None).await else {
            continue;
        };
        let doomed: std::collections::HashSet<String> = live
            .values()
            .filter(|info| {
                subject_of(&info.username).is_some_and(|(subject, issued)| {
                    fresh
                        .iter()
                        .any(|(visit, block)| revokes(&secret, *visit, block, subject, issued))
                })
            })
            .map(|info| info.username.clone())
            .collect();
        for username in doomed {
            if let Some((subject, _)) = subject_of(&username) {
                tracing::info!(
                    participant = subject,
                    "TURN relays of a revoked identity closed"
                );
            }
            if let Err(e) = server.delete_allocations_by_username(username).await {
                tracing::warn!(error = %e, "closing a revoked identity's TURN relays");
            }
        }
    }
}

/// An error response to request `m`.
fn refuse(m: &Message, method: Method, code: ErrorCode, reason: &[u8]) -> Verdict {
    let mut out = Message::new();
    let setters: [Box<dyn Setter>; 3] = [
        Box::new(Message {
            transaction_id: m.transaction_id,
            ..Default::default()
        }),
        Box::new(MessageType::new(method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code,
            reason: reason.to_vec(),
        }),
    ];
    match out.build(&setters) {
        Ok(()) => Verdict::Refuse(out.raw),
        // Cannot happen for these attributes; dropping the request is the safe answer.
        Err(_) => Verdict::Refuse(Vec::new()),
    }
}

/// Decodes an XOR-PEER-ADDRESS value (RFC 5389 15.2): family, port and address, masked
/// with the magic cookie (and, for IPv6, the transaction id).
fn xor_address(value: &[u8], transaction_id: &[u8; 12]) -> Option<IpAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match (value.get(1)?, value.get(4..)?) {
        (0x01, addr) if addr.len() == 4 => {
            let mut ip = [0u8; 4];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = addr[i] ^ cookie[i];
            }
            Some(IpAddr::from(ip))
        }
        (0x02, addr) if addr.len() == 16 => {
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&cookie);
            mask[4..].copy_from_slice(transaction_id);
            let mut ip = [0u8; 16];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = addr[i] ^ mask[i];
            }
            Some(IpAddr::from(ip))
        }
        _ => None,
    }
}

#[async_trait]
impl Conn for Guard {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(self.socket.connect(addr).await?)
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.socket.recv_from(buf).await?;
            match self.screen(&buf[..n], from).await {
                Verdict::Pass => return Ok((n, from)),
                Verdict::Refuse(reply) if !reply.is_empty() => {
                    let _ = self.socket.send_to(&reply, from).await;
                }
                Verdict::Refuse(_) => {}
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        Ok(self.socket.send(buf).await?)
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }
}

/// Hands out relay sockets: bound on `bind`, in the configured port range, advertised at
/// `advertised`, each screened by the peer policy.
struct Relays {
    advertised: IpAddr,
    bind: IpAddr,
    ports: Option<(u16, u16)>,
    rules: Arc<Rules>,
}

impl Relays {
    async fn bind_socket(&self, requested_port: u16) -> io::Result<UdpSocket> {
        if requested_port != 0 {
            return UdpSocket::bind((self.bind, requested_port)).await;
        }
        let Some((low, high)) = self.ports else {
            return UdpSocket::bind((self.bind, 0)).await;
        };
        let mut last = io::Error::new(io::ErrorKind::AddrInUse, "relay port range exhausted");
        for _ in 0..PORT_ATTEMPTS {
            match UdpSocket::bind((self.bind, rand::random_range(low..=high))).await {
                Ok(socket) => return Ok(socket),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

#[async_trait]
impl RelayAddressGenerator for Relays {
    fn validate(&self) -> Result<(), turn::Error> {
        match self.ports {
            Some((low, high)) if low == 0 || low > high => Err(turn::Error::Other(
                "relay port range must be 1-65535, low to high".into(),
            )),
            _ => Ok(()),
        }
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        if use_ipv4 != self.bind.is_ipv4() {
            return Err(turn::Error::Other(
                "address family not served by this relay".into(),
            ));
        }
        let socket = self.bind_socket(requested_port).await?;
        let port = socket.local_addr()?.port();
        let relay = RelaySocket {
            socket,
            rules: self.rules.clone(),
        };
        Ok((Arc::new(relay), SocketAddr::new(self.advertised, port)))
    }
}

/// One allocation's relay socket: datagrams to or from a peer the policy refuses are
/// dropped, whatever permissions the allocation holds.
struct RelaySocket {
    socket: UdpSocket,
    rules: Arc<Rules>,
}

#[async_trait]
impl Conn for RelaySocket {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(self.socket.connect(addr).await?)
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.socket.recv_from(buf).await?;
            if self.rules.peer_allowed(from.ip()) {
                return Ok((n, from));
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        Ok(self.socket.send(buf).await?)
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if !self.rules.peer_allowed(target.ip()) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "relaying to this peer address is not allowed",
            )
            .into());
        }
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_ranges_are_not_global() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_global(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "81.2.69.160",
            "2a00:1450:4007::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_global(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn only_minted_usernames_reach_the_logs() {
        assert_eq!(
            subject_of("1767225600:s_0123456789abcdef.1767200000"),
            Some(("s_0123456789abcdef", 1_767_200_000))
        );
        for other in [
            "s_0123456789abcdef.1",
            "1:s_01234.1",
            "1:s_0123456789abcdefg.1",
            "1:s_0123456789abcdef.\n",
            "1:\n",
        ] {
            assert_eq!(subject_of(other), None, "{other:?}");
        }
    }

    #[test]
    fn xor_peer_addresses_decode() {
        use stun::xoraddr::XorMappedAddress;
        let tid = [7u8; 12];
        for ip in ["10.0.0.7", "fd12:3456::9"] {
            let mut m = Message::new();
            m.transaction_id.0 = tid;
            let addr = XorMappedAddress {
                ip: ip.parse().unwrap(),
                port: 4242,
            };
            addr.add_to_as(&mut m, ATTR_XOR_PEER_ADDRESS).unwrap();
            let value = m.get(ATTR_XOR_PEER_ADDRESS).unwrap();
            assert_eq!(xor_address(&value, &tid), Some(ip.parse().unwrap()));
        }
        assert_eq!(xor_address(&[0, 1, 0], &tid), None);
    }
}
