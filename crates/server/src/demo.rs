//! `bedside demo`: creates a visit on a running server and prints a doctor link and a
//! patient link, so a new user sees a visit in two browser windows within a minute.

use crate::app::dev_key;
use crate::config::Config;
use anyhow::{Context, bail};
use bedside_rooms::storage;
use serde_json::{Value, json};

/// The API key to use: the first configured one, else the development key in the database.
async fn api_key(config: &Config) -> anyhow::Result<(String, String)> {
    if let Some(key) = config.api_keys.first() {
        use secrecy::ExposeSecret;
        return Ok((key.id.to_string(), key.secret().expose_secret().to_owned()));
    }
    let storage = storage::connect(config.database.expose()).await?;
    let key = dev_key(&*storage).await;
    storage.close().await;
    key
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let base = config.public_url(config.listen);
    let (id, secret) = api_key(&config).await?;
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        http.post(format!("{base}{path}"))
            .basic_auth(&id, Some(&secret))
            .json(&body)
            .send()
    };
    let resp = post(
        "/v1/visits".into(),
        json!({"external_ref": "demo", "max_participants": 4}),
    )
    .await
    .with_context(|| {
        format!("is bedside running at {base}? Start it with `cargo run --release`")
    })?;
    if !resp.status().is_success() {
        bail!(
            "creating the visit failed: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    let visit: Value = resp.json().await?;
    let visit_id = visit["id"].as_str().context("visit id")?;
    println!("Visit {visit_id} created on {base}.\n");
    for (role, identity, name) in [
        ("doctor", "demo-doctor", "Dr Demo"),
        ("patient", "demo-patient", "Pat Demo"),
    ] {
        let resp = post(
            format!("/v1/visits/{visit_id}/tokens"),
            json!({"role": role, "identity": identity, "name": name}),
        )
        .await?;
        if !resp.status().is_success() {
            bail!("minting the {role} link failed: {}", resp.status());
        }
        let token: Value = resp.json().await?;
        println!(
            "{role:>8} link: {}",
            token["join_url"].as_str().context("join_url")?
        );
    }
    println!("\nOpen each link in its own browser window (or one in a private window).");
    Ok(())
}
