//! Resume tokens: Bedside's own credential that lets a participant who dropped come back
//! to the same visit, even after the clinic's join token has expired.
//!
//! They are signed with a server secret, not a tenant's key, so no integrator can mint
//! one, and they carry an audience no join token has, so neither can pass for the other.
//! Each names the place it reopens (`pid`, the participant id it was issued to): the visit
//! honours it only while that place is held, so it dies with the place.

use crate::keyring::{check_time, decode_verified};
use crate::{MAX_TOKEN_LEN, Role, TokenError};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use std::fmt;

const AUDIENCE: &str = "bedside:resume";

/// What a resume token says: who, in which visit, of which tenant, and which place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeClaims {
    pub aud: String,
    pub tenant: String,
    pub visit: String,
    pub sub: String,
    pub role: Role,
    pub name: String,
    /// The participant id of the place it reopens. Tokens from before places were named
    /// have none and are refused.
    #[serde(default)]
    pub pid: String,
    pub iat: i64,
    pub exp: i64,
}

impl ResumeClaims {
    pub fn new(
        tenant: &str,
        visit: &str,
        sub: &str,
        role: Role,
        name: &str,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Self {
        Self {
            aud: AUDIENCE.to_owned(),
            tenant: tenant.to_owned(),
            visit: visit.to_owned(),
            sub: sub.to_owned(),
            role,
            name: name.to_owned(),
            pid: String::new(),
            iat: now.timestamp(),
            exp: expires.timestamp(),
        }
    }

    /// Names the place the token reopens: the participant id it is issued to.
    pub fn at_place(mut self, participant_id: &str) -> Self {
        self.pid = participant_id.to_owned();
        self
    }
}

/// The server's resume-token key.
pub struct ResumeKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl fmt::Debug for ResumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeKey(..)")
    }
}

impl ResumeKey {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    pub fn mint(&self, claims: &ResumeClaims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|_| TokenError::Signing)
    }

    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<ResumeClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let claims: ResumeClaims =
            decode_verified(token, &self.decoding, Algorithm::HS256, Some(AUDIENCE))?;
        check_time(claims.iat, claims.exp, now)?;
        if claims.pid.is_empty() {
            return Err(TokenError::InvalidClaims(
                "a resume token names its place".into(),
            ));
        }
        Ok(claims)
    }
}
