//! Oracle for the token verifiers, shared by the fuzz targets `verify_join` and
//! `verify_resume` and the regression test that replays the committed corpora
//! (crates/auth/tests/properties.rs includes this file by path).
//!
//! An input's first byte picks what the rest is:
//! - `0` (mod 3): a token as a client would send it, verified as is;
//! - `1`: `header JSON` NUL `claims JSON` (or just claims, under a default header), signed
//!   here with the verifier's own key, so the checks after the signature get fuzzed too;
//! - `2`: the same, signed with a foreign key: it must never verify.
//!
//! Whatever the input, verifying must not panic, a refusal must carry one of the codes of
//! docs/protocol.md, and an accepted token must satisfy every documented claim rule.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bedside_auth::{
    ApiKey, CLOCK_LEEWAY_SECS, KeyRing, MAX_TOKEN_LIFETIME_SECS, ResumeClaims, ResumeKey,
    TokenError, VerifiedJoin,
};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey};

/// The tenant whose keys sign join tokens here: two keys (a rotation), one tenant.
pub const TENANT: &str = "clinic-a";
pub const KID: &str = "clinic-a";
pub const SECRET: &str = "clinic-a-secret-0123456789";
pub const ROTATED_KID: &str = "clinic-a-2027";
pub const ROTATED_SECRET: &str = "clinic-a-rotated-secret-xyz";
/// The server's resume-token secret.
pub const RESUME_SECRET: &str = "bedside-resume-secret-0123456789";
/// A key nobody here trusts.
pub const FOREIGN_SECRET: &str = "someone-elses-secret-0123456789";

/// The `error` codes docs/protocol.md gives for a refused token (all close with 4001).
pub const TOKEN_ERROR_CODES: [&str; 3] = ["invalid_token", "token_expired", "token_not_yet_valid"];

/// The verifiers' clock: 2026-11-22T09:00:00Z, so committed seeds stay valid forever.
pub const NOW: i64 = 1_795_338_000;

pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).expect("a valid instant")
}

/// The keys under test, built once per fuzzing process.
pub struct Keys {
    pub ring: KeyRing,
    pub resume: ResumeKey,
}

impl Keys {
    pub fn new() -> Self {
        let ring = KeyRing::new([
            ApiKey::new(KID, SECRET).expect("valid key"),
            ApiKey::for_tenant(ROTATED_KID, ROTATED_SECRET, TENANT).expect("valid key"),
        ])
        .expect("valid ring");
        Self {
            ring,
            resume: ResumeKey::new(RESUME_SECRET.as_bytes()),
        }
    }
}

impl Default for Keys {
    fn default() -> Self {
        Self::new()
    }
}

const DEFAULT_JOIN_HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT","kid":"clinic-a"}"#;
const DEFAULT_RESUME_HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;

/// A compact JWT over arbitrary header and claims bytes, HS256-signed with `secret`.
pub fn sign_raw(header: &[u8], claims: &[u8], secret: &str) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(secret.as_bytes()),
        Algorithm::HS256,
    )
    .expect("HS256 signing cannot fail");
    format!("{message}.{signature}")
}

/// What an input asks for.
enum Case {
    Raw(String),
    Signed(String),
    Foreign(String),
}

fn case(input: &[u8], default_header: &[u8], secret: &str) -> Option<Case> {
    let (&mode, rest) = input.split_first()?;
    let signed = |key: &str| {
        let (header, claims) = match rest.iter().position(|&b| b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (default_header, rest),
        };
        sign_raw(header, claims, key)
    };
    Some(match mode % 3 {
        0 => Case::Raw(String::from_utf8_lossy(rest).into_owned()),
        1 => Case::Signed(signed(secret)),
        _ => Case::Foreign(signed(FOREIGN_SECRET)),
    })
}

fn check_refusal(e: &TokenError, token: &str) {
    assert!(
        TOKEN_ERROR_CODES.contains(&e.code()),
        "undocumented code {:?} for {token:?}",
        e.code()
    );
    assert!(
        !matches!(e, TokenError::Signing | TokenError::WrongTenant),
        "verifying cannot fail with {e:?}"
    );
    let _ = e.to_string();
}

/// Checks `KeyRing::verify_join` on one input (see the module doc for its layout).
pub fn check_join(keys: &Keys, input: &[u8]) {
    let Some(case) = case(input, DEFAULT_JOIN_HEADER, SECRET) else {
        return;
    };
    let (token, must_fail) = match &case {
        Case::Raw(t) | Case::Signed(t) => (t.as_str(), false),
        Case::Foreign(t) => (t.as_str(), true),
    };
    match keys.ring.verify_join(token, now()) {
        Ok(v) => {
            assert!(
                !must_fail,
                "a token signed with a foreign key verified: {token:?}"
            );
            check_verified_join(&v);
        }
        Err(e) => check_refusal(&e, token),
    }
    // A join token is never a resume token, whoever signed it.
    assert!(
        keys.resume.verify(token, now()).is_err(),
        "join token resumed: {token:?}"
    );
}

/// Everything docs/protocol.md promises about the claims of an accepted join token.
pub fn check_verified_join(v: &VerifiedJoin) {
    let c = &v.claims;
    assert_eq!(v.tenant.as_str(), TENANT);
    assert!(c.iss == KID || c.iss == ROTATED_KID, "iss {:?}", c.iss);
    assert!(!c.sub.is_empty() && c.sub.len() <= 128, "sub length");
    assert!(
        !c.sub.chars().any(char::is_control),
        "control character in sub"
    );
    assert!(!c.visit.is_empty() && c.visit.len() <= 64, "visit length");
    assert!(!c.jti.is_empty() && c.jti.len() <= 128, "jti length");
    assert!(
        !c.name.chars().any(char::is_control),
        "control character in name {:?}",
        c.name
    );
    assert!(
        c.name.chars().count() <= 100,
        "name longer than 100 characters"
    );
    assert_eq!(c.name.trim(), c.name, "name not trimmed");
    assert!(c.nbf < c.exp, "exp before nbf");
    assert!(
        i128::from(c.exp) - i128::from(c.nbf) <= i128::from(MAX_TOKEN_LIFETIME_SECS),
        "lifetime over 31 days"
    );
    check_window(c.nbf, c.exp);
}

/// `nbf`/`iat` and `exp` hold at [`NOW`] within the leeway (computed without overflow).
fn check_window(from: i64, exp: i64) {
    let (from, exp, now, leeway) = (
        i128::from(from),
        i128::from(exp),
        i128::from(NOW),
        i128::from(CLOCK_LEEWAY_SECS),
    );
    assert!(exp + leeway > now, "accepted after exp");
    assert!(from - leeway <= now, "accepted before nbf");
}

/// Checks `ResumeKey::verify` on one input (see the module doc for its layout).
pub fn check_resume(keys: &Keys, input: &[u8]) {
    let Some(case) = case(input, DEFAULT_RESUME_HEADER, RESUME_SECRET) else {
        return;
    };
    let (token, must_fail) = match &case {
        Case::Raw(t) | Case::Signed(t) => (t.as_str(), false),
        Case::Foreign(t) => (t.as_str(), true),
    };
    match keys.resume.verify(token, now()) {
        Ok(c) => {
            assert!(
                !must_fail,
                "a token signed with a foreign key resumed: {token:?}"
            );
            check_verified_resume(&c);
        }
        Err(e) => check_refusal(&e, token),
    }
    // A resume token is never a join token: the server's secret is no tenant's key.
    assert!(
        keys.ring.verify_join(token, now()).is_err(),
        "resume token joined: {token:?}"
    );
}

/// What an accepted resume token must say.
pub fn check_verified_resume(c: &ResumeClaims) {
    assert_eq!(c.aud, "bedside:resume");
    check_window(c.iat, c.exp);
}
