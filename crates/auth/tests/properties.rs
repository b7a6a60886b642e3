//! Hostile tokens against the verifiers (`KeyRing::verify_join`, `ResumeKey::verify`).
//!
//! Property tests (proptest, default case count, so CI stays fast): verifying never
//! panics, whatever the text or the claims; every refusal is one of the documented
//! `error` codes; a valid token with any single character changed is refused; a token
//! signed with any other key never verifies. Then a replay of every committed fuzz input
//! (fuzz/corpus and the crash reproducers in fuzz/regressions) through the fuzzers' own
//! oracle, which this file includes by path so both check exactly the same things.

#[path = "../../../fuzz/src/corpus.rs"]
mod corpus;
#[path = "../../../fuzz/src/tokens.rs"]
mod oracle;

use bedside_auth::{JoinClaims, KeyId, ResumeClaims, ResumeKey, Role, sanitize_display_name};
use oracle::{
    FOREIGN_SECRET, KID, Keys, NOW, RESUME_SECRET, SECRET, TOKEN_ERROR_CODES, check_join,
    check_resume, now, sign_raw,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::LazyLock;

static KEYS: LazyLock<Keys> = LazyLock::new(Keys::new);

/// An input of the oracle's layout: the mode byte, then the payload.
fn input(mode: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(payload);
    v
}

fn role() -> impl Strategy<Value = Role> {
    prop::sample::select(&[Role::Doctor, Role::Patient, Role::Guest][..])
}

/// Claims that pass every rule, with any display name (control characters included).
fn valid_claims() -> impl Strategy<Value = JoinClaims> {
    (
        "[A-Za-z0-9_.@-]{1,64}",
        "[0-9a-f-]{1,64}",
        role(),
        any::<String>(),
        -600i64..=5,
        1i64..=31 * 24 * 3600,
        "[A-Za-z0-9-]{1,40}",
    )
        .prop_map(|(sub, visit, role, name, start, life, jti)| {
            let nbf = NOW + start;
            JoinClaims {
                iss: KID.into(),
                sub,
                visit,
                role,
                name,
                iat: nbf,
                nbf,
                exp: (nbf + life).max(NOW + 1),
                jti,
            }
        })
}

fn valid_resume_claims() -> impl Strategy<Value = ResumeClaims> {
    (
        "[a-z-]{1,20}",
        "[0-9a-f-]{1,64}",
        "[A-Za-z0-9_-]{1,64}",
        role(),
        any::<String>(),
    )
        .prop_map(|(tenant, visit, sub, role, name)| {
            let at = now();
            ResumeClaims::new(
                &tenant,
                &visit,
                &sub,
                role,
                &name,
                at,
                at + chrono::Duration::hours(12),
            )
            .at_place("p_0123456789abcdef")
        })
}

/// A claim value at the edges: huge, negative, zero, the wrong type, or absent.
fn edgy_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(i64::MAX - 5)),
        Just(json!(i64::MIN + 5)),
        Just(json!(u64::MAX)),
        Just(json!(0)),
        Just(json!(1.5)),
        Just(json!("1795338000")),
        Just(Value::Null),
        (NOW - 100_000..NOW + 100_000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
    ]
}

/// Join claims with every field possibly wrong, missing, huge or of the wrong type.
fn hostile_claims() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        Just(Value::Null),
        Just(json!("")),
        Just(json!(KID)),
        any::<String>().prop_map(Value::String),
        "\\PC{100,300}".prop_map(Value::String),
        Just(json!(7)),
    ];
    (
        (text.clone(), text.clone(), text.clone(), text.clone()),
        prop::sample::select(&["doctor", "patient", "guest", "admin", ""][..]),
        (edgy_number(), edgy_number(), edgy_number()),
        (text, any::<bool>()),
    )
        .prop_map(
            |((iss, sub, visit, name), role, (iat, nbf, exp), (jti, aud))| {
                let mut c = json!({"iss": iss, "sub": sub, "visit": visit, "role": role,
                               "name": name, "iat": iat, "nbf": nbf, "exp": exp, "jti": jti});
                // Nulls stand for absent claims.
                if let Value::Object(map) = &mut c {
                    map.retain(|_, v| !v.is_null());
                    if aud {
                        map.insert("aud".into(), json!("bedside:resume"));
                    }
                }
                c
            },
        )
}

/// `token` with the character at `at` replaced by `with`.
fn mutate(token: &str, at: prop::sample::Index, with: char) -> Option<String> {
    let chars: Vec<char> = token.chars().collect();
    let i = at.index(chars.len());
    (chars[i] != with).then(|| {
        let mut out: String = chars[..i].iter().collect();
        out.push(with);
        out.extend(&chars[i + 1..]);
        out
    })
}

proptest! {
    #[test]
    fn verifying_never_panics_on_arbitrary_text(text in any::<String>()) {
        check_join(&KEYS, &input(0, text.as_bytes()));
        check_resume(&KEYS, &input(0, text.as_bytes()));
    }

    #[test]
    fn verifying_never_panics_on_jwt_shaped_text(
        header in prop::collection::vec(any::<u8>(), 0..64),
        claims in prop::collection::vec(any::<u8>(), 0..128),
        signature in "[A-Za-z0-9_=+/-]{0,64}",
        dots in "[.]{0,2}",
    ) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = format!("{}.{}.{signature}{dots}", b64.encode(&header), b64.encode(&claims));
        check_join(&KEYS, &input(0, token.as_bytes()));
        check_resume(&KEYS, &input(0, token.as_bytes()));
    }

    #[test]
    fn signed_hostile_claims_are_refused_or_obey_every_rule(
        claims in hostile_claims(),
        kid in prop::sample::select(&["clinic-a", "clinic-a-2027", "clinic-b", ""][..]),
        alg in prop::sample::select(&["HS256", "HS512", "none", "RS256"][..]),
    ) {
        // Signed with the real key, so the checks after the signature run: the oracle
        // asserts no panic, documented codes, and every claim rule on success.
        let header = json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string();
        let payload = [header.as_bytes(), &[0], claims.to_string().as_bytes()].concat();
        check_join(&KEYS, &input(1, &payload));
        check_join(&KEYS, &input(2, &payload));
        check_resume(&KEYS, &input(1, claims.to_string().as_bytes()));
    }

    #[test]
    fn any_single_character_change_to_a_join_token_is_refused(
        claims in valid_claims(),
        at in any::<prop::sample::Index>(),
        with in any::<char>(),
    ) {
        let token = KEYS.ring.mint_join(&KeyId::new(KID).expect("kid"), &claims).expect("mint");
        prop_assert!(KEYS.ring.verify_join(&token, now()).is_ok(), "the original verifies");
        if let Some(changed) = mutate(&token, at, with) {
            let refused = KEYS.ring.verify_join(&changed, now());
            prop_assert!(refused.is_err(), "{changed} verified");
            check_join(&KEYS, &input(0, changed.as_bytes()));
        }
    }

    #[test]
    fn any_single_character_change_to_a_resume_token_is_refused(
        claims in valid_resume_claims(),
        at in any::<prop::sample::Index>(),
        with in any::<char>(),
    ) {
        let token = KEYS.resume.mint(&claims).expect("mint");
        prop_assert!(KEYS.resume.verify(&token, now()).is_ok(), "the original verifies");
        if let Some(changed) = mutate(&token, at, with) {
            prop_assert!(KEYS.resume.verify(&changed, now()).is_err(), "{changed} resumed");
            check_resume(&KEYS, &input(0, changed.as_bytes()));
        }
    }

    #[test]
    fn tokens_signed_with_another_key_never_verify(
        claims in valid_claims(),
        resume in valid_resume_claims(),
        secret in "\\PC{16,64}",
    ) {
        prop_assume!(secret != SECRET && secret != RESUME_SECRET);
        let body = serde_json::to_vec(&claims).expect("claims");
        let header = br#"{"alg":"HS256","typ":"JWT","kid":"clinic-a"}"#;
        for key in [secret.as_str(), FOREIGN_SECRET] {
            let forged = sign_raw(header, &body, key);
            let refused = KEYS.ring.verify_join(&forged, now());
            prop_assert!(refused.is_err(), "join token signed with {key:?} verified");
            let forged_resume = ResumeKey::new(key.as_bytes()).mint(&resume).expect("mint");
            prop_assert!(KEYS.resume.verify(&forged_resume, now()).is_err());
        }
        // The same claims under the right key do verify: the refusal above is the key's.
        prop_assert!(KEYS.ring.verify_join(&sign_raw(header, &body, SECRET), now()).is_ok());
    }

    #[test]
    fn display_names_come_out_without_control_characters(
        claims in valid_claims(),
    ) {
        let token = KEYS.ring.mint_join(&KeyId::new(KID).expect("kid"), &claims).expect("mint");
        let verified = KEYS.ring.verify_join(&token, now()).expect("verifies");
        prop_assert_eq!(&verified.claims.name, &sanitize_display_name(&claims.name));
        prop_assert!(!verified.claims.name.chars().any(char::is_control));
        prop_assert!(verified.claims.name.chars().count() <= 100);
    }
}

#[test]
fn claims_at_the_edges_of_i64_are_refused_not_a_panic() {
    // An integrator holding its secret can sign any numbers at all.
    for (nbf, exp) in [
        (i64::MIN, i64::MAX),
        (NOW, i64::MAX),
        (i64::MIN, NOW + 60),
        (i64::MAX, i64::MAX),
        (i64::MIN, i64::MIN),
        (NOW - 5, i64::MAX - 5),
    ] {
        let claims = json!({"iss": KID, "sub": "s", "visit": "v", "role": "patient", "iat": nbf,
                            "nbf": nbf, "exp": exp, "jti": "j"});
        let token = sign_raw(
            br#"{"alg":"HS256","kid":"clinic-a"}"#,
            claims.to_string().as_bytes(),
            SECRET,
        );
        let refused = KEYS.ring.verify_join(&token, now());
        assert!(refused.is_err(), "nbf {nbf} exp {exp} verified");
        assert!(TOKEN_ERROR_CODES.contains(&refused.unwrap_err().code()));
        // Resume tokens carry no lifetime rule (only the server signs them): refused or
        // not, they must not panic, and the oracle checks any that pass.
        let resume = json!({"aud": "bedside:resume", "tenant": "t", "visit": "v", "sub": "s",
                            "role": "patient", "name": "", "iat": nbf, "exp": exp});
        check_resume(&KEYS, &input(1, resume.to_string().as_bytes()));
    }
}

/// Every committed input of `target` (fuzz/corpus and fuzz/regressions), with its path.
fn committed_inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    corpus::committed_inputs(&fuzz, target)
}

#[test]
fn every_committed_fuzz_input_replays_cleanly() {
    for (target, check) in [
        ("verify_join", check_join as fn(&Keys, &[u8])),
        ("verify_resume", check_resume),
    ] {
        let inputs = committed_inputs(target);
        assert!(
            inputs.len() >= 5,
            "the committed corpus is missing: fuzz/corpus/{target}"
        );
        for (path, bytes) in inputs {
            let outcome = std::panic::catch_unwind(|| check(&KEYS, &bytes));
            assert!(outcome.is_ok(), "{} fails the oracle", path.display());
        }
    }
}
