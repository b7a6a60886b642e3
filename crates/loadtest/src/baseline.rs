//! The baseline relay: the leanest WebSocket relay we can write on Bedside's own crates, the
//! floor every Bedside figure is divided by. Each connection names itself in the URL
//! (`/?id=NAME`); each text frame is forwarded unchanged to the connection named in its `to`
//! field. No auth, no visits, no storage, no limits, no timers.
//!
//! Lean where it costs nothing but features, so a ratio against it shows everything Bedside
//! adds, runtime choices included:
//! - one thread: a current-thread runtime and `spawn_local`, so the peer map is a plain
//!   `HashMap` behind a `RefCell` (no lock, no atomics) and no frame crosses a thread;
//! - futures-channel's unbounded queues, which allocate per queued frame instead of
//!   reserving a 32-slot block per connection up front as tokio's do (idle memory);
//! - a 2 KiB read buffer, no write buffering, one flush per batch of queued frames;
//! - only the `to` field is parsed (serde skips the rest without building it), and the text
//!   is forwarded as the same reference-counted buffer it arrived in, never copied.

use futures_channel::mpsc;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Frames written before one flush.
const WRITE_BATCH: usize = 64;

type Peers = Rc<RefCell<HashMap<Box<str>, mpsc::UnboundedSender<Message>>>>;

#[derive(Deserialize)]
struct Addressed<'a> {
    #[serde(borrow)]
    to: &'a str,
}

/// Serves until the listener fails. Runs on the current thread: call it inside a
/// `tokio::task::LocalSet` on a current-thread runtime (see the `baseline-relay` binary).
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let peers: Peers = Rc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::task::spawn_local(connection(stream, peers.clone()));
    }
}

// The handshake callback's error type is tungstenite's, large by design; it is never built here.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, peers: Peers) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
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
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let id: Box<str> = id.into();
    let (tx, mut rx) = mpsc::unbounded();
    peers.borrow_mut().insert(id.clone(), tx);
    loop {
        tokio::select! {
            out = rx.next() => match out {
                Some(msg) => {
                    if ws.feed(msg).await.is_err() {
                        break;
                    }
                    let mut written = 1;
                    while written < WRITE_BATCH
                        && let Ok(msg) = rx.try_recv()
                    {
                        if ws.feed(msg).await.is_err() {
                            break;
                        }
                        written += 1;
                    }
                    if ws.flush().await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            inbound = ws.next() => match inbound {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(a) = serde_json::from_str::<Addressed<'_>>(&text)
                        && let Some(peer) = peers.borrow().get(a.to)
                    {
                        let _ = peer.unbounded_send(Message::Text(text.clone()));
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    peers.borrow_mut().remove(&id);
}
