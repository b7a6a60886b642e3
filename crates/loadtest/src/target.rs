//! What is under load, and how to reach it. Only loopback targets are accepted.

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// A server under load.
#[derive(Clone)]
pub enum Target {
    /// Bedside: REST API for visits, `/ws` for the protocol, join tokens minted with the key.
    Bedside {
        http: String,
        ws: String,
        key_id: String,
        key_secret: String,
        client: reqwest::Client,
        /// Where each visit's patient connects, when not `ws`: another node of a cluster,
        /// so every signal crosses between nodes.
        patient_ws: Option<String>,
        /// Whether a participant's connection names its visit (`/ws?visit=ID`), as the
        /// SDK's does, so the server places a visit's connections on one thread.
        visit_hint: bool,
    },
    /// The baseline relay: `ws://.../?id=NAME`, frames forwarded to the `to` they name.
    Baseline { ws: String },
    /// PeerJS's signaling server (npm `peer`, `crates/loadtest/peerjs`): each connection
    /// names itself in the URL, is ready at `OPEN`, and sends `{"type", "dst", "payload"}`
    /// frames, which arrive with `src` added.
    PeerJs { ws: String },
}

/// The key PeerJS's server accepts by default.
const PEERJS_KEY: &str = "peerjs";

/// Refuses anything that is not on this machine: load never leaves loopback.
pub fn loopback(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {authority}"))?
        .next()
        .context("no address")?;
    if !addr.ip().is_loopback() {
        bail!("{url} is not a loopback address: load runs against 127.0.0.0/8 or ::1 only");
    }
    Ok(addr)
}

impl Target {
    pub fn bedside(url: &str, key: &str) -> anyhow::Result<Self> {
        loopback(url)?;
        let http = url.trim_end_matches('/').to_owned();
        let ws = format!("{}/ws", http.replacen("http", "ws", 1));
        let (key_id, key_secret) = key.split_once(':').context("--key is id:secret")?;
        Ok(Target::Bedside {
            http,
            ws,
            key_id: key_id.into(),
            key_secret: key_secret.into(),
            client: crate::http::client(),
            patient_ws: None,
            visit_hint: true,
        })
    }

    /// Connects without naming the visit in the URL, as an integration that does not use
    /// the SDK may: the server places each connection on its least busy thread.
    pub fn without_visit_hint(mut self) -> Self {
        if let Target::Bedside { visit_hint, .. } = &mut self {
            *visit_hint = false;
        }
        self
    }

    /// Connects each visit's patient to `url` (another node of the cluster) while its
    /// doctor stays on the target's own URL.
    pub fn with_patient_url(mut self, url: &str) -> anyhow::Result<Self> {
        loopback(url)?;
        let Target::Bedside { patient_ws, .. } = &mut self else {
            bail!("--patient-url is for Bedside");
        };
        *patient_ws = Some(format!(
            "{}/ws",
            url.trim_end_matches('/').replacen("http", "ws", 1)
        ));
        Ok(self)
    }

    /// Where a participant of `visit` connects: the target's `/ws`, naming the visit if
    /// hints are on.
    pub fn visit_ws_url(&self, visit: &str) -> String {
        self.hinted(self.ws_url(""), visit)
    }

    /// Where a patient of `visit` connects: [`Self::visit_ws_url`], on the other node if
    /// patients connect there.
    pub fn patient_ws_url(&self, visit: &str) -> String {
        match self {
            Target::Bedside {
                patient_ws: Some(ws),
                ..
            } => self.hinted(ws.clone(), visit),
            _ => self.visit_ws_url(visit),
        }
    }

    fn hinted(&self, ws: String, visit: &str) -> String {
        match self {
            Target::Bedside {
                visit_hint: true, ..
            } if !visit.is_empty() => format!("{ws}?visit={visit}"),
            _ => ws,
        }
    }

    pub fn baseline(url: &str) -> anyhow::Result<Self> {
        loopback(url)?;
        Ok(Target::Baseline {
            ws: url.trim_end_matches('/').replacen("http", "ws", 1),
        })
    }

    pub fn peerjs(url: &str) -> anyhow::Result<Self> {
        loopback(url)?;
        Ok(Target::PeerJs {
            ws: format!(
                "{}/peerjs",
                url.trim_end_matches('/').replacen("http", "ws", 1)
            ),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Target::Bedside { .. } => "bedside",
            Target::Baseline { .. } => "baseline",
            Target::PeerJs { .. } => "peerjs",
        }
    }

    /// How this target's signals are framed.
    pub fn wire(&self) -> Wire {
        match self {
            Target::PeerJs { .. } => Wire::PeerJs,
            _ => Wire::Signal,
        }
    }

    /// Creates a visit over the REST API; returns its id. Transport errors (a port still in
    /// TIME_WAIT after a previous run, say) are retried a few times.
    pub async fn create_visit(&self, max_participants: usize) -> anyhow::Result<String> {
        self.create_visit_with(
            json!({"max_participants": max_participants, "external_ref": "loadtest"}),
        )
        .await
    }

    /// Creates a visit with the given body (`POST /v1/visits`); its id.
    pub async fn create_visit_with(&self, body: Value) -> anyhow::Result<String> {
        let Target::Bedside {
            http,
            key_id,
            key_secret,
            client,
            ..
        } = self
        else {
            bail!("only Bedside has visits (not the baseline relay, not PeerJS)");
        };
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let sent = client
                .post(format!("{http}/v1/visits"))
                .header(
                    "authorization",
                    format!(
                        "Basic {}",
                        STANDARD.encode(format!("{key_id}:{key_secret}"))
                    ),
                )
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(resp) => break resp,
                Err(e) if attempt < 5 => {
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                    let _ = e;
                }
                Err(e) => return Err(anyhow::Error::new(e).context("create visit")),
            }
        };
        if !resp.status().is_success() {
            bail!("create visit: {}", resp.status());
        }
        let v: Value = resp.json().await?;
        Ok(v["id"].as_str().context("visit id")?.to_owned())
    }

    /// A join token minted with the tenant's secret, as an integrator may do, so setting up
    /// thousands of participants does not load the REST API.
    pub fn token(&self, visit: &str, role: &str, identity: &str) -> anyhow::Result<String> {
        self.sign(
            json!({"sub": identity, "visit": visit, "role": role, "name": identity}),
            "only Bedside has tokens",
        )
    }

    /// A provider token for `provider`'s dashboard, minted with the tenant's secret.
    pub fn provider_token(&self, provider: &str) -> anyhow::Result<String> {
        self.sign(
            json!({"sub": provider, "provider": provider, "role": "provider", "name": provider}),
            "only Bedside has providers",
        )
    }

    /// `claims` with the issuer, times (valid for six hours from now) and a fresh id added,
    /// signed with the tenant's secret; `refusal`: the error against another target.
    fn sign(&self, mut claims: Value, refusal: &'static str) -> anyhow::Result<String> {
        let Target::Bedside {
            key_id, key_secret, ..
        } = self
        else {
            bail!(refusal);
        };
        let now = chrono::Utc::now().timestamp();
        for (name, value) in [
            ("iss", json!(key_id)),
            ("iat", json!(now)),
            ("nbf", json!(now)),
            ("exp", json!(now + 6 * 3600)),
            ("jti", json!(uuid::Uuid::new_v4().to_string())),
        ] {
            claims[name] = value;
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(key_id.clone());
        Ok(jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(key_secret.as_bytes()),
        )?)
    }

    /// The WebSocket URL for a connection (the baseline and PeerJS name their connections
    /// in the URL).
    pub fn ws_url(&self, id: &str) -> String {
        match self {
            Target::Bedside { ws, .. } => ws.clone(),
            Target::Baseline { ws } => format!("{ws}/?id={id}"),
            Target::PeerJs { ws } => format!("{ws}?key={PEERJS_KEY}&id={id}&token=t-{id}"),
        }
    }
}

/// How a signal to another connection is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Bedside's `{"type":"signal","to":ID,"data":{..}}`, which the baseline relays as is.
    Signal,
    /// PeerJS's `{"type":"CANDIDATE","dst":ID,"payload":{..}}`. Its server forwards its
    /// three transmission types (`OFFER`, `ANSWER`, `CANDIDATE`) alike, so one serves.
    PeerJs,
}

impl Wire {
    /// The frame that carries `data` (JSON) to `to`.
    pub fn signal(self, to: &str, data: &str) -> String {
        match self {
            Wire::Signal => format!(r#"{{"type":"signal","to":"{to}","data":{data}}}"#),
            Wire::PeerJs => format!(r#"{{"type":"CANDIDATE","dst":"{to}","payload":{data}}}"#),
        }
    }

    /// The `type` of a relayed signal as it arrives.
    pub fn kind(self) -> &'static str {
        match self {
            Wire::Signal => "signal",
            Wire::PeerJs => "CANDIDATE",
        }
    }
}

/// Round-robin over loopback source addresses 127.0.0.1 .. 127.0.0.N, to go past one
/// address's ephemeral ports.
#[derive(Debug, Clone)]
pub struct Sources {
    count: u8,
}

impl Sources {
    pub fn new(count: u8) -> Self {
        Self {
            count: count.max(1),
        }
    }

    pub fn pick(&self, n: usize) -> IpAddr {
        IpAddr::from([127, 0, 0, 1 + (n % usize::from(self.count)) as u8])
    }
}
