//! The REST API against the real binary: every call, its validation, its errors, and
//! tenant isolation.

use bedside_tests::{CLINIC_A, CLINIC_B, TestServer, claims_of};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

#[tokio::test]
async fn creating_a_visit_returns_it_with_defaults() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let http = bedside_loadtest::http::client();
    let resp = http
        .post(format!("{}/v1/visits", server.base))
        .basic_auth(CLINIC_A.0, Some(CLINIC_A.1))
        .json(&json!({"external_ref": "appt-1", "metadata": {"room": "3B"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/visits/{}", v["id"].as_str().unwrap())
    );
    assert_eq!(v["status"], "open");
    assert_eq!(v["ended_reason"], Value::Null);
    assert_eq!(v["max_participants"], 4);
    assert_eq!(v["metadata"], json!({"room": "3B"}));
    let id = uuid::Uuid::parse_str(v["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 4, "random ids, never sequential");
    let created = chrono::DateTime::parse_from_rfc3339(v["created_at"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(v["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_hours(), 12);

    // Read back identically.
    let read = api.get_visit(v["id"].as_str().unwrap()).await;
    for field in [
        "id",
        "status",
        "created_at",
        "expires_at",
        "metadata",
        "external_ref",
    ] {
        assert_eq!(read[field], v[field], "{field}");
    }
    assert_eq!(read["connected"], json!([]));
    assert_eq!(read["waiting"], json!([]));

    let b = api.visit().await;
    assert_ne!(b, v["id"].as_str().unwrap());
}

#[tokio::test]
async fn bad_visit_requests_get_clear_errors() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let far = (chrono::Utc::now() + chrono::Duration::days(400)).to_rfc3339();
    let soon = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let later = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let cases = [
        (json!({"max_participants": 1}), "validation_failed"),
        (json!({"max_participants": 9}), "validation_failed"),
        (json!({"expires_at": past}), "validation_failed"),
        (json!({"expires_at": far}), "validation_failed"),
        (
            json!({"not_before": later, "expires_at": soon}),
            "validation_failed",
        ),
        (json!({"metadata": [1, 2]}), "validation_failed"),
        (
            json!({"metadata": {"x": "y".repeat(5000)}}),
            "validation_failed",
        ),
        (json!({"external_ref": "a\nb"}), "validation_failed"),
        (json!({"unknown_field": 1}), "validation_failed"),
        (json!({"expires_at": "tomorrow"}), "validation_failed"),
    ];
    for (body, expected) in cases {
        let (status, resp) = api
            .call(Method::POST, "/v1/visits", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {resp}");
        assert_eq!(code(&resp), expected);
        assert!(!resp["error"]["message"].as_str().unwrap().is_empty());
    }

    let http = bedside_loadtest::http::client();
    let post = |body: &'static str, content_type: Option<&'static str>| {
        let mut req = http
            .post(format!("{}/v1/visits", server.base))
            .basic_auth(CLINIC_A.0, Some(CLINIC_A.1))
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let resp = post("{not json", Some("application/json")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code(&resp.json().await.unwrap()), "invalid_json");
    let resp = post("{}", None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(code(&resp.json().await.unwrap()), "unsupported_media_type");
    let big = format!(r#"{{"external_ref":"{}"}}"#, "x".repeat(100 * 1024));
    let resp = http
        .post(format!("{}/v1/visits", server.base))
        .basic_auth(CLINIC_A.0, Some(CLINIC_A.1))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(&resp.json().await.unwrap()), "payload_too_large");

    // Unknown routes and methods answer in the same format.
    let (status, resp) = api.call(Method::GET, "/v1/nothing-here", None).await;
    assert_eq!((status, code(&resp)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, resp) = api.call(Method::PUT, "/v1/visits", Some(json!({}))).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let (status, resp) = api.call(Method::GET, "/v1/visits/not-a-uuid", None).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::NOT_FOUND, "visit_not_found")
    );
}

#[tokio::test]
async fn authentication_is_required_and_checked() {
    let server = TestServer::start().await;
    let http = bedside_loadtest::http::client();
    let url = format!("{}/v1/visits", server.base);
    let attempts = [
        http.get(&url),
        http.get(&url)
            .basic_auth(CLINIC_A.0, Some("wrong-secret-0123456789")),
        http.get(&url)
            .basic_auth(CLINIC_A.0, Some(&CLINIC_A.1[..CLINIC_A.1.len() - 1])),
        http.get(&url).basic_auth("nobody", Some(CLINIC_A.1)),
        http.get(&url).basic_auth(CLINIC_A.0, None::<&str>),
        http.get(&url).bearer_auth(CLINIC_A.1),
        http.get(&url).header("authorization", "Basic %%%"),
    ];
    for req in attempts {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.headers()["www-authenticate"],
            r#"Basic realm="bedside""#
        );
        assert_eq!(code(&resp.json().await.unwrap()), "unauthorized");
    }
}

#[tokio::test]
async fn listing_pages_through_the_tenants_visits_only() {
    let server = TestServer::start().await;
    let a = server.api(CLINIC_A);
    let b = server.api(CLINIC_B);
    let mut mine = Vec::new();
    for _ in 0..5 {
        mine.push(a.visit().await);
        b.visit().await;
    }
    mine.reverse();
    let mut seen = Vec::new();
    let mut path = "/v1/visits?limit=2".to_owned();
    loop {
        let (status, page) = a.call(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["visits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/visits?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, mine, "newest first, each once, none of clinic-b's");

    a.call(Method::POST, &format!("/v1/visits/{}/end", mine[0]), None)
        .await;
    let (_, ended) = a.call(Method::GET, "/v1/visits?status=ended", None).await;
    let ended: Vec<_> = ended["visits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].clone())
        .collect();
    assert_eq!(ended, [json!(mine[0])]);
    let (_, open) = a.call(Method::GET, "/v1/visits?status=open", None).await;
    assert_eq!(open["visits"].as_array().unwrap().len(), 4);

    for bad in [
        "/v1/visits?limit=0",
        "/v1/visits?limit=1000",
        "/v1/visits?status=paused",
        "/v1/visits?limit=x",
    ] {
        let (status, body) = a.call(Method::GET, bad, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
    let (status, body) = a
        .call(Method::GET, "/v1/visits?cursor=garbage!", None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
}

#[tokio::test]
async fn join_tokens_carry_the_design_claims() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let visit = api
        .create_visit(
            json!({"expires_at": (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339()}),
        )
        .await;
    let id = visit["id"].as_str().unwrap();
    let (status, t) = api
        .call(
            Method::POST,
            &format!("/v1/visits/{id}/tokens"),
            Some(json!({"role": "patient", "identity": "pt-9", "name": "Kim"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let token = t["token"].as_str().unwrap();
    assert_eq!(t["join_url"], format!("{}/#token={token}", server.base));
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
    assert_eq!(header.kid.as_deref(), Some("clinic-a"));
    let c = claims_of(token);
    assert_eq!(c["iss"], "clinic-a");
    assert_eq!(c["sub"], "pt-9");
    assert_eq!(c["visit"], id);
    assert_eq!(c["role"], "patient");
    assert_eq!(c["name"], "Kim");
    for field in ["iat", "nbf", "exp"] {
        assert!(c[field].is_i64(), "{field}");
    }
    assert!(c["jti"].is_string());
    // The default lifetime (24 h) is cut to the visit's end.
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(visit["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(c["exp"].as_i64().unwrap(), expires_at.timestamp());
    let expires = chrono::DateTime::parse_from_rfc3339(t["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires.timestamp(), c["exp"].as_i64().unwrap());

    let (status, t) = api
        .call(
            Method::POST,
            &format!("/v1/visits/{id}/tokens"),
            Some(json!({"role": "doctor", "identity": "dr", "ttl_seconds": 600})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let c = claims_of(t["token"].as_str().unwrap());
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 600);

    let bad = [
        json!({"role": "admin", "identity": "x"}),
        json!({"role": "patient"}),
        json!({"role": "patient", "identity": ""}),
        json!({"role": "patient", "identity": "x".repeat(200)}),
        json!({"role": "patient", "identity": "a\nb"}),
        json!({"role": "patient", "identity": "x", "name": "a\u{0007}"}),
        json!({"role": "patient", "identity": "x", "ttl_seconds": 10}),
    ];
    for body in bad {
        let (status, resp) = api
            .call(
                Method::POST,
                &format!("/v1/visits/{id}/tokens"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {resp}");
    }
}

#[tokio::test]
async fn ending_is_idempotent_and_audited() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let id = api.visit().await;
    let (status, v) = api
        .call(Method::POST, &format!("/v1/visits/{id}/end"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (v["status"].as_str(), v["ended_reason"].as_str()),
        (Some("ended"), Some("ended_by_api"))
    );
    assert!(v["ended_at"].is_string());
    let (status, again) = api
        .call(Method::POST, &format!("/v1/visits/{id}/end"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["ended_at"], v["ended_at"]);
    let events = api.events(&id).await;
    let kinds: Vec<_> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "ended"]);
    assert_eq!(events[1]["actor"], "api:clinic-a");
    assert_eq!(events[1]["detail"], "ended_by_api");
    assert!(events[0]["seq"].as_i64().unwrap() < events[1]["seq"].as_i64().unwrap());

    // Removing an identity never seen revokes its links all the same (docs/security.md),
    // in an ended visit too: nothing to take out, and the answer is the same.
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/v1/visits/{id}/participants/nobody"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let removed = api.events(&id).await.pop().expect("an audit row");
    assert_eq!(
        (removed["kind"].as_str(), removed["identity"].as_str()),
        (Some("removed"), Some("nobody"))
    );
}

#[tokio::test]
async fn a_tenant_cannot_touch_another_tenants_visit() {
    let server = TestServer::start().await;
    let a = server.api(CLINIC_A);
    let b = server.api(CLINIC_B);
    let id = a.visit().await;
    let attempts = [
        (Method::GET, format!("/v1/visits/{id}"), None),
        (
            Method::POST,
            format!("/v1/visits/{id}/tokens"),
            Some(json!({"role": "doctor", "identity": "intruder"})),
        ),
        (Method::POST, format!("/v1/visits/{id}/end"), None),
        (
            Method::DELETE,
            format!("/v1/visits/{id}/participants/dr"),
            None,
        ),
        (Method::GET, format!("/v1/visits/{id}/events"), None),
    ];
    for (method, path, body) in attempts {
        let (status, resp) = b.call(method.clone(), &path, body).await;
        assert_eq!(
            (status, code(&resp)),
            (StatusCode::NOT_FOUND, "visit_not_found"),
            "{method} {path}"
        );
    }
    let (_, list) = b.call(Method::GET, "/v1/visits", None).await;
    assert_eq!(list["visits"], json!([]));
    // Untouched for its owner.
    let v = a.get_visit(&id).await;
    assert_eq!(v["status"], "open");
    assert_eq!(a.events(&id).await.len(), 1);
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let server = TestServer::start().await;
    let http = bedside_loadtest::http::client();
    let get = |path: &str| http.get(format!("{}{path}", server.base)).send();
    assert_eq!(
        get("/healthz")
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
        json!({"status": "ok"})
    );
    assert_eq!(
        get("/readyz").await.unwrap().json::<Value>().await.unwrap(),
        json!({"status": "ready"})
    );

    let api = server.api(CLINIC_A);
    api.visit().await;
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    for needle in [
        "bedside_visits{status=\"open\"} 1",
        "bedside_visits{status=\"ended\"} 0",
        "bedside_connections",
        "bedside_live_visits",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }

    // The OpenAPI document is generated from the handlers and names every call.
    let doc: Value = get("/v1/openapi.json").await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/visits", "post"),
        ("/v1/visits", "get"),
        ("/v1/visits/{id}", "get"),
        ("/v1/visits/{id}/tokens", "post"),
        ("/v1/visits/{id}/end", "post"),
        ("/v1/visits/{id}/participants/{identity}", "delete"),
        ("/v1/visits/{id}/events", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path}"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in [
        "CreateVisit",
        "VisitBody",
        "MintToken",
        "TokenBody",
        "ErrorBody",
        "EventBody",
        "ParticipantView",
        "Role",
    ] {
        assert!(schemas.contains_key(schema), "{schema}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "basic"
    );
}

#[tokio::test]
async fn a_config_file_sets_keys_and_key_rotation_keeps_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bedside.toml");
    std::fs::write(
        &path,
        r#"
grace_seconds = 20

[[api_keys]]
id = "north-2026"
secret = "north-old-secret-0123456789"
tenant = "north-clinic"

[[api_keys]]
id = "north-2027"
secret = "north-new-secret-0123456789"
tenant = "north-clinic"

[ws]
rate_per_second = 20
"#,
    )
    .unwrap();
    let server = TestServer::start_with(&[
        ("BEDSIDE_CONFIG", path.to_str().unwrap()),
        ("BEDSIDE_API_KEYS", ""),
    ])
    .await;
    let old = server.api(("north-2026", "north-old-secret-0123456789"));
    let new = server.api(("north-2027", "north-new-secret-0123456789"));
    let id = old.visit().await;
    // The rotated key sees and runs the same tenant's visits, and signs with its own kid.
    assert_eq!(new.get_visit(&id).await["id"], id.as_str());
    let token = new.mint(&id, "doctor", "dr", "Dr").await;
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
        Some("north-2027")
    );
    let (_, joined) = bedside_tests::Client::join(&server, &token).await;
    assert_eq!(joined["role"], "doctor");
    // Only the configured keys exist: no development key was generated.
    assert!(!server.logs().contains("development API key"));
    assert_eq!(
        server
            .api(CLINIC_A)
            .call(Method::GET, "/v1/visits", None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn without_keys_a_development_key_is_printed_and_kept() {
    let server = TestServer::start_with(&[("BEDSIDE_API_KEYS", "")]).await;
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|l| l.trim_start().starts_with("API key:"))
        .expect("the key is printed");
    let pair = line.split_whitespace().last().unwrap().to_owned();
    assert!(
        logs.contains(&format!("curl -u {pair}")),
        "a ready-to-paste curl example:\n{logs}"
    );
    let (id, secret) = pair.split_once(':').unwrap();
    let id_visit = server.api((id, secret)).visit().await;

    let server = server.restart().await;
    assert!(
        server.logs().contains(&pair),
        "the same key after a restart"
    );
    assert_eq!(
        server.api((id, secret)).get_visit(&id_visit).await["status"],
        "open"
    );
}

/// `BEDSIDE_PUBLIC_URL` is the base of join links and, by default, the one browser origin
/// allowed on `/ws`.
#[tokio::test]
async fn the_public_url_makes_the_join_links_and_the_allowed_origin() {
    let server =
        TestServer::start_with(&[("BEDSIDE_PUBLIC_URL", "https://visits.example-clinic.org/")])
            .await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/v1/visits/{visit}/tokens"),
            Some(json!({"role": "patient", "identity": "pt-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let link = body["join_url"].as_str().unwrap();
    assert_eq!(
        link,
        format!(
            "https://visits.example-clinic.org/#token={}",
            body["token"].as_str().unwrap()
        )
    );
    let ws = server.ws_url();
    assert!(
        bedside_tests::Client::connect_url(&ws, Some("https://visits.example-clinic.org"))
            .await
            .is_ok()
    );
    assert_eq!(
        bedside_tests::Client::connect_url(&ws, Some(&server.base))
            .await
            .err(),
        Some(StatusCode::FORBIDDEN),
        "the listen address is not the public origin"
    );
}

/// `RUST_LOG` filters what is logged; the default level is `info`.
#[tokio::test]
async fn rust_log_sets_what_is_logged() {
    for (filter, expect_info) in [("", true), ("error", false)] {
        let mut server = TestServer::start_with(&[("RUST_LOG", filter)]).await;
        let api = server.api(CLINIC_A);
        let _pair = bedside_tests::Pair::admitted(&server, &api).await;
        assert!(server.terminate().await.success());
        let logs = server.logs();
        assert_eq!(
            logs.contains(" INFO "),
            expect_info,
            "RUST_LOG={filter:?}:\n{logs}"
        );
        assert!(
            logs.contains("bedside listening on"),
            "the address is always printed"
        );
    }
}

#[tokio::test]
async fn listing_filters_active_visits_and_pages_by_fifty() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let mut ids = Vec::new();
    for _ in 0..51 {
        ids.push(api.visit().await);
    }
    let (status, page) = api.call(Method::GET, "/v1/visits", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        page["visits"].as_array().unwrap().len(),
        50,
        "default limit"
    );
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let (_, rest) = api
        .call(Method::GET, &format!("/v1/visits?cursor={cursor}"), None)
        .await;
    assert_eq!(rest["visits"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null(), "{rest}");

    // Someone joins one: it alone is active.
    let token = api.mint(&ids[7], "doctor", "dr-1", "D").await;
    let (_doctor, _) = bedside_tests::Client::join(&server, &token).await;
    let (_, active) = api
        .call(Method::GET, "/v1/visits?status=active", None)
        .await;
    let active: Vec<_> = active["visits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(active, [ids[7].clone()]);
}
