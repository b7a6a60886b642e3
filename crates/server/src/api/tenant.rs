//! The `Tenant` extractor: HTTP Basic with an API key id and secret.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bedside_auth::{ApiKey, KeyId, TenantId};

/// The authenticated caller: which key it used and which tenant that key belongs to.
pub struct Tenant {
    pub key: KeyId,
    pub id: TenantId,
}

impl Tenant {
    fn from_key(key: &ApiKey) -> Self {
        Self {
            key: key.id.clone(),
            id: key.tenant.clone(),
        }
    }
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let (scheme, encoded) = value.split_once(' ').ok_or(ApiError::Unauthorized)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(ApiError::Unauthorized);
        }
        let decoded = STANDARD
            .decode(encoded.trim())
            .map_err(|_| ApiError::Unauthorized)?;
        let text = std::str::from_utf8(&decoded).map_err(|_| ApiError::Unauthorized)?;
        let (id, secret) = text.split_once(':').ok_or(ApiError::Unauthorized)?;
        let key = state
            .keys
            .authenticate(id, secret)
            .map_err(|_| ApiError::Unauthorized)?;
        Ok(Tenant::from_key(key))
    }
}
