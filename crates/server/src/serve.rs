//! Accepting connections: TCP (or TLS over it) into hyper's HTTP/1.1, guarded before a
//! single request is parsed.
//!
//! - A connection gets `handshake_timeout` to finish its TLS handshake and send a request
//!   head; one that connects and says nothing is closed, so idle sockets cannot pile up.
//! - Nagle is off: small frames (a `joined`, a candidate) must not wait for a delayed ACK.
//! - When the process runs out of file descriptors, accepting does not stall: a spare
//!   descriptor is given up to accept the waiting connection and close it at once, so the
//!   client is refused quickly, existing connections carry on, and accepting resumes as
//!   soon as descriptors free up.
//! - Each connection is placed on the least busy of the connection threads
//!   (`crate::runtime`) and stays there, its socket registered with that thread's reactor.
//! - On shutdown, the listener closes first; open HTTP connections finish their request.

use crate::runtime::Spread;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub struct Server {
    pub listener: TcpListener,
    pub tls: Option<TlsAcceptor>,
    pub handshake_timeout: Duration,
    pub router: Router,
    /// Connection tasks, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// The threads connections are spread over (this loop runs on another).
    pub threads: Spread,
}

/// A descriptor kept in reserve for refusing connections when none are left.
struct Spare(Option<std::fs::File>);

impl Spare {
    fn new() -> Self {
        Self(std::fs::File::open("/dev/null").ok())
    }

    /// Out of descriptors with a connection waiting: use the spare one to take it off the
    /// queue and close it, then take the spare back.
    async fn refuse_one(&mut self, listener: &TcpListener) {
        self.0 = None;
        if let Ok(Ok((stream, _))) =
            tokio::time::timeout(Duration::from_millis(50), listener.accept()).await
        {
            drop(stream);
            metrics::counter!("bedside_connections_refused_total", "reason" => "no_descriptors")
                .increment(1);
        }
        self.0 = std::fs::File::open("/dev/null").ok();
        if self.0.is_none() {
            // Not even one descriptor came back yet: give existing connections a moment.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl Server {
    /// Accepts until `stop` is cancelled; then stops accepting and tells open HTTP
    /// connections to finish (WebSockets are shut down by the signaling layer).
    pub async fn run(self, stop: CancellationToken) {
        let Server {
            listener,
            tls,
            handshake_timeout,
            router,
            tracker,
            threads,
        } = self;
        let tls = tls.map(Arc::new);
        let mut spare = Spare::new();
        let mut warned = false;
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => {
                    warned = false;
                    conn
                }
                Err(e) if out_of_descriptors(&e) => {
                    if !warned {
                        tracing::warn!(error = %e, "out of file descriptors: refusing new connections");
                        warned = true;
                    }
                    spare.refuse_one(&listener).await;
                    continue;
                }
                // A connection reset before we got to it, and the like: nothing to do.
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
            // The socket moves to its thread's reactor, so its readiness wakes that thread
            // directly rather than through this one.
            let Ok(stream) = stream.into_std() else {
                continue;
            };
            let (router, tls, stop) = (router.clone(), tls.clone(), stop.clone());
            let serve = async move {
                let stream = match TcpStream::from_std(stream) {
                    Ok(stream) => stream,
                    Err(e) => return tracing::debug!(error = %e, "could not move a connection"),
                };
                match tls {
                    None => serve_http(stream, peer, router, handshake_timeout, stop).await,
                    Some(tls) => {
                        if let Some(stream) = handshake(&tls, stream, handshake_timeout).await {
                            serve_http(stream, peer, router, handshake_timeout, stop).await;
                        }
                    }
                }
            };
            tracker.spawn_on(serve, threads.least_busy());
        }
        drop(listener);
    }
}

async fn handshake(
    tls: &TlsAcceptor,
    stream: TcpStream,
    limit: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(limit, tls.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            metrics::counter!("bedside_connections_refused_total", "reason" => "tls_handshake")
                .increment(1);
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            metrics::counter!("bedside_connections_refused_total", "reason" => "handshake_timeout")
                .increment(1);
            None
        }
    }
}

/// One HTTP/1.1 connection (upgradable to a WebSocket) until it closes or shutdown ends it.
async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    head_timeout: Duration,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Builds the TLS acceptor from PEM files: a certificate chain and its private key. Only
/// HTTP/1.1 is offered (WebSockets upgrade from it).
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<TlsAcceptor> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
