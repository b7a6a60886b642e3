//! The baseline relay: the least a WebSocket relay can do. Each connection names itself in
//! the URL (`/?id=NAME`); each text frame is forwarded unchanged to the connection named in
//! its `to` field. No auth, no rooms, no storage, no limits: the floor Bedside is compared
//! against in the same run.
//!
//! It is bare but not careless: it gets the same socket settings Bedside uses (4 KiB read
//! buffer, no write buffering, one flush per batch of queued frames), so a comparison
//! measures what Bedside adds, not tungstenite defaults.

use dashmap::DashMap;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Frames written before one flush.
const WRITE_BATCH: usize = 64;

type Peers = Arc<DashMap<String, mpsc::UnboundedSender<Message>>>;

#[derive(Deserialize)]
struct Addressed<'a> {
    #[serde(borrow)]
    to: &'a str,
}

/// Serves until the listener fails.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let peers: Peers = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let peers = peers.clone();
        tokio::spawn(async move {
            let _ = connection(stream, peers).await;
        });
    }
}

// The handshake callback's error type is tungstenite's, large by design; it is never built here.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, peers: Peers) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut id = String::new();
    let config = WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024));
    let callback = |req: &Request, resp: Response| {
        id = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("id="))
            .unwrap_or_default()
            .to_owned();
        Ok(resp)
    };
    let mut ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    peers.insert(id.clone(), tx);
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(msg) => {
                    ws.feed(msg).await?;
                    let mut written = 1;
                    while written < WRITE_BATCH && let Ok(msg) = rx.try_recv() {
                        ws.feed(msg).await?;
                        written += 1;
                    }
                    ws.flush().await?;
                }
                None => break,
            },
            inbound = ws.next() => match inbound {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(a) = serde_json::from_str::<Addressed<'_>>(&text)
                        && let Some(peer) = peers.get(a.to)
                    {
                        let _ = peer.send(Message::Text(text.clone()));
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    peers.remove(&id);
    Ok(())
}
