//! A WebSocket client for load: connects from a chosen loopback source address with a small
//! read buffer (thousands of them share one process), and speaks text frames.

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Longest wait for any one expected frame during setup.
pub const STEP: Duration = Duration::from_secs(30);

pub struct Ws {
    inner: WebSocketStream<TcpStream>,
    /// Text frames read while [`Ws::hold_until`] kept the connection answering pings:
    /// [`Ws::next`] returns these first.
    early: VecDeque<String>,
}

/// What closed a connection, if it closed.
#[derive(Debug)]
pub enum Incoming {
    Text(String),
    Closed(u16),
}

impl Ws {
    pub async fn connect(url: &str, source: IpAddr) -> anyhow::Result<Self> {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let authority = rest.split(['/', '?']).next().unwrap_or(rest);
        let addr: SocketAddr = crate::target::loopback(authority)?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if addr.is_ipv4() {
            socket
                .bind(SocketAddr::new(source, 0))
                .context("binding the source address")?;
        }
        let stream = socket.connect(addr).await.context("tcp connect")?;
        stream.set_nodelay(true)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (inner, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .map_err(|e| anyhow::anyhow!("websocket handshake: {e}"))?;
        Ok(Self {
            inner,
            early: VecDeque::new(),
        })
    }

    pub async fn send(&mut self, text: String) -> anyhow::Result<()> {
        self.inner.send(Message::text(text)).await.context("send")
    }

    /// Next text frame or the close; pings and pongs are skipped (reading is what answers
    /// the server's pings).
    pub async fn next(&mut self) -> anyhow::Result<Incoming> {
        if let Some(text) = self.early.pop_front() {
            return Ok(Incoming::Text(text));
        }
        self.read().await
    }

    async fn read(&mut self) -> anyhow::Result<Incoming> {
        loop {
            match self.inner.next().await {
                Some(Ok(Message::Text(t))) => return Ok(Incoming::Text(t.as_str().to_owned())),
                Some(Ok(Message::Close(f))) => {
                    return Ok(Incoming::Closed(f.map_or(1005, |f| u16::from(f.code))));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("read: {e}"),
                None => return Ok(Incoming::Closed(1006)),
            }
        }
    }

    /// Keeps reading until `go` turns true, as a browser keeps answering pings while its
    /// user waits: a connection left unread answers none, and the server rightly drops it as
    /// dead after its idle timeout (18 s), which a large setup on a busy machine outlasts.
    /// Text frames read meanwhile are kept for [`Ws::next`]; a close is kept too.
    pub async fn hold_until(&mut self, go: &mut tokio::sync::watch::Receiver<bool>) {
        loop {
            let incoming = tokio::select! {
                _ = go.wait_for(|g| *g) => return,
                incoming = self.read() => incoming,
            };
            match incoming {
                Ok(Incoming::Text(text)) => self.early.push_back(text),
                // Closed or failed: the scenario finds out on its next read.
                _ => {
                    let _ = go.wait_for(|g| *g).await;
                    return;
                }
            }
        }
    }

    /// Next text frame, within [`STEP`]; a close is an error naming its code.
    pub async fn text(&mut self) -> anyhow::Result<String> {
        match tokio::time::timeout(STEP, self.next()).await {
            Ok(Ok(Incoming::Text(t))) => Ok(t),
            Ok(Ok(Incoming::Closed(code))) => bail!("closed {code}"),
            Ok(Err(e)) => Err(e),
            Err(_) => bail!("timeout"),
        }
    }

    /// Skips frames until one whose `type` is `kind`; returns it parsed.
    pub async fn until(&mut self, kind: &str) -> anyhow::Result<serde_json::Value> {
        loop {
            let text = self.text().await?;
            let v: serde_json::Value = serde_json::from_str(&text)?;
            if v["type"] == kind {
                return Ok(v);
            }
            if v["type"] == "error" {
                bail!("error {}", v["code"]);
            }
            // PeerJS's refusal: `{"type":"ERROR","payload":{"msg":..}}`.
            if v["type"] == "ERROR" {
                bail!("error {}", v["payload"]["msg"]);
            }
        }
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.close(None)).await;
    }

    /// Drops the TCP connection without a close frame: a network blip.
    pub fn abort(self) {
        drop(self.inner);
    }
}
