//! Every way a join or resume token must be refused, and the happy paths they guard.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bedside_auth::{
    ApiKey, CLOCK_LEEWAY_SECS, JoinClaims, KeyId, KeyRing, ResumeClaims, ResumeKey, Role, TenantId,
    TokenError,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET_A: &str = "clinic-a-secret-0123456789";
const SECRET_B: &str = "clinic-b-secret-0123456789";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap()
}

fn ring() -> KeyRing {
    KeyRing::new([
        ApiKey::new("clinic-a", SECRET_A).unwrap(),
        ApiKey::new("clinic-b", SECRET_B).unwrap(),
        ApiKey::for_tenant("clinic-a-2027", "clinic-a-rotated-secret-xyz", "clinic-a").unwrap(),
    ])
    .unwrap()
}

fn claims() -> Value {
    let t = now().timestamp();
    json!({
        "iss": "clinic-a", "sub": "patient-7", "visit": "5d0c6a1e-8f43-4ad8-9d4e-1f2a3b4c5d6e",
        "role": "patient", "name": "Ada", "iat": t, "nbf": t, "exp": t + 3600, "jti": "j-1"
    })
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, secret: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn good(claims: &Value) -> String {
    sign(Algorithm::HS256, Some("clinic-a"), claims, SECRET_A)
}

fn verify(token: &str) -> Result<bedside_auth::VerifiedJoin, TokenError> {
    ring().verify_join(token, now())
}

#[test]
fn a_well_formed_token_verifies_to_its_tenant() {
    let v = verify(&good(&claims())).unwrap();
    assert_eq!(v.tenant, TenantId::new("clinic-a").unwrap());
    assert_eq!(v.claims.role, Role::Patient);
    assert_eq!(v.claims.sub, "patient-7");
}

#[test]
fn minted_tokens_round_trip_and_carry_the_kid() {
    let ring = ring();
    let kid = KeyId::new("clinic-a-2027").unwrap();
    let c: JoinClaims = serde_json::from_value(claims()).unwrap();
    let token = ring.mint_join(&kid, &c).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("clinic-a-2027"));
    assert_eq!(header.alg, Algorithm::HS256);
    let v = ring.verify_join(&token, now()).unwrap();
    assert_eq!(v.claims.iss, "clinic-a-2027");
    // A rotated key still belongs to the same tenant.
    assert_eq!(v.tenant, TenantId::new("clinic-a").unwrap());
}

#[test]
fn alg_none_is_refused() {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"clinic-a"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        assert!(verify(&token).is_err(), "{token}");
    }
}

#[test]
fn another_algorithm_with_the_right_secret_is_refused() {
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign(alg, Some("clinic-a"), &claims(), SECRET_A);
        assert_eq!(verify(&token), Err(TokenError::InvalidSignature));
    }
}

#[test]
fn a_wrong_key_and_an_unknown_kid_get_the_same_error() {
    let wrong_secret = sign(
        Algorithm::HS256,
        Some("clinic-a"),
        &claims(),
        "not-the-secret-0123456789",
    );
    let unknown_kid = sign(Algorithm::HS256, Some("clinic-z"), &claims(), SECRET_A);
    let no_kid = sign(Algorithm::HS256, None, &claims(), SECRET_A);
    let e1 = verify(&wrong_secret).unwrap_err();
    let e2 = verify(&unknown_kid).unwrap_err();
    let e3 = verify(&no_kid).unwrap_err();
    assert_eq!(e1, TokenError::InvalidSignature);
    assert_eq!(e1, e2);
    assert_eq!(e1, e3);
    assert_eq!(e1.to_string(), e2.to_string());
}

#[test]
fn kid_lookup_is_exact() {
    for kid in ["CLINIC-A", "clinic-a ", "clinic", "clinic-a\0"] {
        let token = sign(Algorithm::HS256, Some(kid), &claims(), SECRET_A);
        assert_eq!(verify(&token), Err(TokenError::InvalidSignature), "{kid:?}");
    }
}

#[test]
fn a_token_signed_by_another_tenant_names_that_tenant() {
    let mut c = claims();
    c["iss"] = json!("clinic-b");
    let v = ring()
        .verify_join(
            &sign(Algorithm::HS256, Some("clinic-b"), &c, SECRET_B),
            now(),
        )
        .unwrap();
    // The visit belongs to clinic-a: clinic-b's token must not open it.
    assert_eq!(
        v.ensure_tenant(&TenantId::new("clinic-a").unwrap()),
        Err(TokenError::WrongTenant)
    );
    assert!(v.ensure_tenant(&TenantId::new("clinic-b").unwrap()).is_ok());
}

#[test]
fn iss_must_match_kid() {
    let mut c = claims();
    c["iss"] = json!("clinic-b");
    assert!(matches!(
        verify(&good(&c)),
        Err(TokenError::InvalidClaims(_))
    ));
}

#[test]
fn expiry_is_enforced_with_a_small_leeway() {
    let t = now().timestamp();
    let mut c = claims();
    c["exp"] = json!(t - CLOCK_LEEWAY_SECS - 1);
    c["nbf"] = json!(t - 3600);
    c["iat"] = json!(t - 3600);
    assert_eq!(verify(&good(&c)), Err(TokenError::Expired));
    c["exp"] = json!(t - CLOCK_LEEWAY_SECS + 2);
    assert!(verify(&good(&c)).is_ok(), "inside the leeway");
    const { assert!(CLOCK_LEEWAY_SECS <= 30) };
}

#[test]
fn nbf_in_the_future_is_refused() {
    let t = now().timestamp();
    let mut c = claims();
    c["nbf"] = json!(t + CLOCK_LEEWAY_SECS + 5);
    assert_eq!(verify(&good(&c)), Err(TokenError::NotYetValid));
    c["nbf"] = json!(t + CLOCK_LEEWAY_SECS - 2);
    assert!(verify(&good(&c)).is_ok(), "inside the leeway");
}

#[test]
fn time_comes_from_the_caller_not_the_clock() {
    let token = good(&claims());
    assert!(
        ring()
            .verify_join(&token, now() + Duration::minutes(59))
            .is_ok()
    );
    assert_eq!(
        ring().verify_join(&token, now() + Duration::hours(2)),
        Err(TokenError::Expired)
    );
}

#[test]
fn every_claim_of_the_design_is_required() {
    for missing in ["iss", "sub", "visit", "role", "iat", "nbf", "exp", "jti"] {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(missing);
        let err = verify(&good(&c)).unwrap_err();
        assert!(
            matches!(
                err,
                TokenError::InvalidClaims(_) | TokenError::InvalidSignature
            ),
            "{missing}: {err:?}"
        );
    }
}

#[test]
fn a_role_outside_the_enum_is_refused() {
    for role in ["admin", "Doctor", "", "nurse"] {
        let mut c = claims();
        c["role"] = json!(role);
        assert!(
            matches!(verify(&good(&c)), Err(TokenError::InvalidClaims(_))),
            "{role}"
        );
    }
}

#[test]
fn claims_with_bad_shapes_are_refused() {
    let cases: Vec<(&str, Value)> = vec![
        ("sub", json!("")),
        ("sub", json!("a\nb")),
        ("sub", json!("x".repeat(200))),
        ("visit", json!("")),
        ("exp", json!("tomorrow")),
        ("exp", json!(now().timestamp() + 60 * 24 * 3600)),
        ("aud", json!("bedside:resume")),
    ];
    for (field, value) in cases {
        let mut c = claims();
        c[field] = value.clone();
        assert!(verify(&good(&c)).is_err(), "{field}={value}");
    }
}

#[test]
fn display_names_are_sanitized() {
    let mut c = claims();
    c["name"] = json!("Ada\n2026-11-22T09:00:00Z INFO forged line");
    let v = verify(&good(&c)).unwrap();
    assert!(!v.claims.name.contains('\n'));
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    for token in [
        "",
        "a",
        "a.b",
        "a.b.c",
        "....",
        &"x".repeat(10_000),
        "eyJhbGciOiJIUzI1NiJ9.%%%.sig",
    ] {
        assert!(verify(token).is_err());
    }
}

#[test]
fn api_keys_authenticate_only_with_the_exact_secret() {
    let ring = ring();
    assert_eq!(
        ring.authenticate("clinic-a", SECRET_A).unwrap().id.as_str(),
        "clinic-a"
    );
    assert!(ring.authenticate("clinic-a", SECRET_B).is_err());
    assert!(
        ring.authenticate("clinic-a", &SECRET_A[..SECRET_A.len() - 1])
            .is_err()
    );
    assert!(ring.authenticate("clinic-a", "").is_err());
    assert!(ring.authenticate("nobody", SECRET_A).is_err());
}

#[test]
fn key_configuration_is_validated_and_secrets_do_not_print() {
    assert!(ApiKey::parse("clinic-a:short").is_err());
    assert!(ApiKey::parse("no separator").is_err());
    assert!(ApiKey::parse("bad id:0123456789abcdefgh").is_err());
    let key = ApiKey::parse("clinic-a:0123456789abcdefgh").unwrap();
    assert!(!format!("{key:?}").contains("0123456789abcdefgh"));
    let dup = KeyRing::new([key.clone(), key]);
    assert!(dup.is_err());
}

#[test]
fn resume_tokens_round_trip_and_cannot_pass_for_join_tokens() {
    let key = ResumeKey::new(b"server-resume-secret-0123456789ab");
    let claims = ResumeClaims::new(
        "clinic-a",
        "v-1",
        "patient-7",
        Role::Patient,
        "Ada",
        now(),
        now() + Duration::hours(1),
    )
    .at_place("p_00000000000000ff");
    let token = key.mint(&claims).unwrap();
    assert_eq!(key.verify(&token, now()).unwrap(), claims);
    // A token that names no place (as issued before places were named) reopens nothing.
    let placeless = key
        .mint(&ResumeClaims {
            pid: String::new(),
            ..claims.clone()
        })
        .unwrap();
    assert!(matches!(
        key.verify(&placeless, now()),
        Err(TokenError::InvalidClaims(_))
    ));
    assert_eq!(
        key.verify(&token, now() + Duration::hours(2)),
        Err(TokenError::Expired)
    );
    assert!(ring().verify_join(&token, now()).is_err());

    // A join token signed with the resume secret still lacks the resume audience.
    let forged = sign(
        Algorithm::HS256,
        None,
        &json!({"sub": "x", "exp": now().timestamp() + 60}),
        "server-resume-secret-0123456789ab",
    );
    assert!(key.verify(&forged, now()).is_err());
    // And another server's resume key cannot vouch for this one.
    let other = ResumeKey::new(b"another-server-secret-0123456789");
    assert_eq!(
        other.verify(&token, now()),
        Err(TokenError::InvalidSignature)
    );
}

#[test]
fn bedside_signs_for_a_tenant_with_its_key_configured_last() {
    let ring = KeyRing::new([
        ApiKey::for_tenant("north-2025", "0123456789abcdefgh", "north").unwrap(),
        ApiKey::for_tenant("south", "0123456789abcdefgh", "south").unwrap(),
        ApiKey::for_tenant("north-2026", "0123456789abcdefgh", "north").unwrap(),
    ])
    .unwrap();
    let signer = |t: &str| {
        ring.signer_for(&TenantId::new(t).unwrap())
            .map(|k| k.as_str().to_owned())
    };
    assert_eq!(signer("north").as_deref(), Some("north-2026"));
    assert_eq!(signer("south").as_deref(), Some("south"));
    assert_eq!(signer("west"), None);
}

/// A key still rolling out (`sign_links = false`) is known to verify tokens but never signs
/// Bedside's own links: nodes not yet restarted could not check them. With only such keys,
/// a tenant has no signer.
#[test]
fn bedside_never_signs_with_a_key_that_may_not_sign_links() {
    let ring = KeyRing::new([
        ApiKey::for_tenant("north-2025", "0123456789abcdefgh", "north").unwrap(),
        ApiKey::for_tenant("north-2026", "0123456789abcdefgh", "north")
            .unwrap()
            .with_sign_links(false),
        ApiKey::for_tenant("south", "0123456789abcdefgh", "south")
            .unwrap()
            .with_sign_links(false),
    ])
    .unwrap();
    let signer = |t: &str| {
        ring.signer_for(&TenantId::new(t).unwrap())
            .map(|k| k.as_str().to_owned())
    };
    assert_eq!(signer("north").as_deref(), Some("north-2025"));
    assert_eq!(signer("south"), None);
    // It still verifies what the clinic signs with it.
    let now = chrono::Utc::now();
    let key = KeyId::new("north-2026").unwrap();
    let claims = JoinClaims {
        iss: "north-2026".into(),
        sub: "pt".into(),
        visit: "v_0000000000000001".into(),
        role: Role::Patient,
        name: "Pat".into(),
        iat: now.timestamp(),
        nbf: now.timestamp(),
        exp: now.timestamp() + 60,
        jti: "j".into(),
    };
    let token = ring.mint_join(&key, &claims).unwrap();
    assert!(ring.verify_join(&token, now).is_ok());
}
