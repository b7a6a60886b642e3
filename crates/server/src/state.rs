//! The state every handler shares.

use crate::client_ip::ClientIp;
use crate::limits::Limits;
use crate::runtime::Spread;
use bedside_auth::{KeyRing, TenantId};
use bedside_rooms::{Desk, Links, Registry, Router};
use bedside_signaling::Signaling;
use bedside_visit::ConsentText;
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

#[derive(Clone)]
pub struct AppState {
    pub keys: Arc<KeyRing>,
    /// Where visits run: this node, or in a cluster whichever node owns each.
    pub router: Arc<dyn Router>,
    /// The visits this node runs (their deadlines are this node's to keep), and storage.
    pub registry: Arc<Registry>,
    /// Mints visit links (join tokens and the URLs carrying them).
    pub links: Arc<Links>,
    /// Providers' queues and dashboards on this node.
    pub desk: Arc<Desk>,
    /// Tenants' default consent texts (`clinic.consents`).
    pub consents: Arc<HashMap<TenantId, ConsentText>>,
    pub signaling: Arc<Signaling>,
    /// Base of join links, without a trailing slash.
    pub public_url: Arc<str>,
    /// Exact `Origin` values allowed on `/ws`.
    pub allowed_origins: Arc<[String]>,
    /// Origins allowed to frame the web client (CSP `frame-ancestors`); empty: none.
    pub embed_origins: Arc<[String]>,
    /// One permit per open WebSocket: the connection cap.
    pub connections: Arc<Semaphore>,
    /// Per-address and per-key flood limits.
    pub limits: Arc<Limits>,
    /// Who a connection is from, for those limits (behind trusted load balancers).
    pub client_ip: Arc<ClientIp>,
    /// Whether browsers reach us over HTTPS, so responses carry HSTS.
    pub hsts: bool,
    pub prometheus: PrometheusHandle,
    /// Tracks WebSocket tasks so shutdown can wait for their goodbyes.
    pub tracker: TaskTracker,
    /// The scheduler threads connections are spread over.
    pub threads: Spread,
    /// False once shutdown has begun.
    pub ready: Arc<AtomicBool>,
}
