//! `GET /ws`: checks the browser's origin and the connection cap, then hands the upgraded
//! socket to the signaling layer.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(r) => {
            return ApiError::BadRequest(format!(
                "expected a WebSocket upgrade: {}",
                r.body_text()
            ))
            .into_response();
        }
    };
    // Requests without an Origin do not come from a browser; CSRF-style abuse needs one.
    if let Some(origin) = headers.get(header::ORIGIN)
        && !state
            .allowed_origins
            .iter()
            .any(|allowed| allowed.as_bytes() == origin.as_bytes())
    {
        metrics::counter!("bedside_ws_refused_total", "reason" => "origin").increment(1);
        return ApiError::Forbidden("origin not allowed").into_response();
    }
    let client = state.client_ip.of(peer.ip(), &headers);
    if !state.limits.join_attempt(client) {
        metrics::counter!("bedside_ws_refused_total", "reason" => "join_rate").increment(1);
        return ApiError::RateLimited.into_response();
    }
    let Some(ip_slot) = state.limits.socket(client) else {
        metrics::counter!("bedside_ws_refused_total", "reason" => "per_ip").increment(1);
        return ApiError::TooManyConnections.into_response();
    };
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        metrics::counter!("bedside_ws_refused_total", "reason" => "capacity").increment(1);
        return ApiError::Unavailable.into_response();
    };
    let tracker = state.tracker.clone();
    let signaling = state.signaling.clone();
    signaling.clone().configure(ws).on_upgrade(move |socket| {
        // The connection gets a task of its own, so axum's upgrade future (which holds the
        // socket, its config and our callback side by side) ends here instead of staying in
        // the connection's task for its whole life: 1.5 KiB per connection, measured.
        tracker.spawn(bedside_signaling::serve(
            socket,
            signaling,
            (permit, ip_slot),
        ));
        std::future::ready(())
    })
}
