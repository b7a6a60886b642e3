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
//! - Each connection is placed on one of the connection threads (`crate::runtime`) and
//!   stays there, its socket registered with that thread's reactor: its visit's thread when
//!   the request line names one (`/ws?visit=ID`, read with a peek before anything else is
//!   parsed; not through TLS that Bedside terminates itself), otherwise the least busy.
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
            let (router, stop) = (router.clone(), stop.clone());
            match tls.clone() {
                Some(tls) => place(
                    stream,
                    threads.least_busy(),
                    &tracker,
                    async move |stream| {
                        if let Some(stream) = handshake(&tls, stream, handshake_timeout).await {
                            serve_http(stream, peer, router, handshake_timeout, stop).await;
                        }
                    },
                ),
                // The placement waits for the request line on this scheduler, not in this
                // loop.
                None => {
                    let (threads, inner) = (threads.clone(), tracker.clone());
                    tracker.spawn(async move {
                        let thread = tokio::select! {
                            _ = stop.cancelled() => return,
                            thread = thread_for(&stream, &threads, handshake_timeout) => thread,
                        };
                        let Some(thread) = thread else {
                            return;
                        };
                        place(stream, thread, &inner, async move |stream| {
                            serve_http(stream, peer, router, handshake_timeout, stop).await;
                        });
                    });
                }
            }
        }
        drop(listener);
    }
}

/// Moves `stream` to `thread`'s reactor, so its readiness wakes that thread directly rather
/// than through this one, and serves it there.
fn place<F>(
    stream: TcpStream,
    thread: &tokio::runtime::Handle,
    tracker: &TaskTracker,
    serve: impl FnOnce(TcpStream) -> F + Send + 'static,
) where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let Ok(stream) = stream.into_std() else {
        return;
    };
    tracker.spawn_on(
        async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::debug!(error = %e, "could not move a connection"),
            }
        },
        thread,
    );
}

/// The thread for a plain-HTTP connection: its visit's, if its request line names one (see
/// [`visit_hint`]), else the least busy. `None`: nothing arrived within `limit`, and the
/// connection is closed as a silent one would be.
async fn thread_for<'a>(
    stream: &TcpStream,
    threads: &'a Spread,
    limit: Duration,
) -> Option<&'a tokio::runtime::Handle> {
    // Enough for a request line with its query; what has not arrived with the first bytes is
    // not waited for. (`peek` waits for data itself: a readiness check alone may be spurious.)
    let mut head = [0u8; 512];
    let n = match tokio::time::timeout(limit, stream.peek(&mut head)).await {
        Ok(peeked) => peeked.unwrap_or(0),
        Err(_) => {
            metrics::counter!("bedside_connections_refused_total", "reason" => "handshake_timeout")
                .increment(1);
            return None;
        }
    };
    Some(match visit_hint(&head[..n]) {
        Some(visit) => threads.for_visit(visit),
        None => threads.least_busy(),
    })
}

/// The visit an upgrade names in its request line, `GET /ws?visit=ID HTTP/1.1` (among other
/// query parameters): where its connection is placed, and nothing else. An id of more than
/// 64 characters, or of characters a visit id never has, is no hint.
fn visit_hint(head: &[u8]) -> Option<&str> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let target = line.strip_prefix("GET ")?.split(' ').next()?;
    let (path, query) = target.split_once('?')?;
    if path != "/ws" {
        return None;
    }
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("visit="))
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
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

#[cfg(test)]
mod tests {
    use super::visit_hint;

    #[test]
    fn the_visit_is_read_from_the_upgrade_request_line_only() {
        fn hint(head: &str) -> Option<&str> {
            visit_hint(head.as_bytes())
        }
        assert_eq!(
            hint("GET /ws?visit=v_0a1b HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("v_0a1b")
        );
        assert_eq!(hint("GET /ws?x=1&visit=v_2&y=3 HTTP/1.1\r\n"), Some("v_2"));
        // A request line cut short by the peek still names its visit once the id is whole.
        assert_eq!(hint("GET /ws?visit=v_3 HTT"), Some("v_3"));
        for no in [
            "GET /ws HTTP/1.1\r\n",
            "GET /ws?visit= HTTP/1.1\r\n",
            "GET /v1/visits?visit=v_1 HTTP/1.1\r\n",
            "POST /ws?visit=v_1 HTTP/1.1\r\n",
            "GET /ws?visit=v_1%00 HTTP/1.1\r\n",
            "GET /ws?visit=v/../1 HTTP/1.1\r\n",
            "Host: x\r\nGET /ws?visit=v_1 HTTP/1.1\r\n",
            "\u{16}\u{3}\u{1}",
            "",
        ] {
            assert_eq!(hint(no), None, "{no:?}");
        }
        let long = format!("GET /ws?visit={} HTTP/1.1\r\n", "v".repeat(65));
        assert_eq!(hint(&long), None);
        assert_eq!(visit_hint(b"GET /ws?visit=\xff HTTP/1.1"), None);
    }
}
