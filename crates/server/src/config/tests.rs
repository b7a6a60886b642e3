use super::raw::{ListOrString, TurnSettings};
use super::*;

fn check(s: Settings) -> anyhow::Result<Config> {
    Config::try_from(s)
}

#[test]
fn with_nothing_configured_the_defaults_are_the_documented_ones() {
    let c = check(Settings::default()).expect("defaults load");
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.database.expose(), "sqlite://bedside.db");
    assert_eq!(c.grace, TimeDelta::seconds(30));
    assert_eq!(c.public_url(c.listen), "http://127.0.0.1:8080");
    assert!(c.api_keys.is_empty(), "no keys: a dev key is made");
    assert_eq!(c.signaling.join_timeout, Duration::from_secs(10));
    assert_eq!(c.log_format, LogFormat::Text);
    assert!(c.cluster.is_none() && c.turn.is_none() && c.tls.is_none());
    assert_eq!(c.worker_threads, None, "one per core");
}

#[test]
fn worker_threads_zero_means_one_per_core() {
    let s = |n| Settings {
        worker_threads: n,
        ..Settings::default()
    };
    assert_eq!(check(s(0)).unwrap().worker_threads, None);
    assert_eq!(check(s(3)).unwrap().worker_threads, NonZeroUsize::new(3));
}

#[test]
fn keys_come_from_a_comma_separated_string() {
    let c = check(Settings {
        api_keys: ListOrString::Text("clinic-a:0123456789abcdef, clinic-b:fedcba9876543210".into()),
        ..Settings::default()
    })
    .unwrap();
    assert_eq!(c.api_keys.len(), 2);
    assert_eq!(c.api_keys[1].tenant.as_str(), "clinic-b");
    let bad = Settings {
        api_keys: ListOrString::Text("nosecret".into()),
        ..Settings::default()
    };
    assert!(check(bad).is_err());
}

#[test]
fn webhooks_come_from_the_file_or_a_string_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bedside.toml");
    std::fs::write(
        &file,
        r#"
        api_keys = "clinic-a:0123456789abcdef"
        [[webhooks]]
        tenant = "clinic-a"
        url = "https://ehr.example/hook"
        secret = "whsec_0123456789abcdef"
        [webhook_delivery]
        give_up_hours = 48
        "#,
    )
    .unwrap();
    let c = Config::load(Some(&file)).unwrap();
    assert_eq!(c.webhooks.len(), 1);
    assert_eq!(c.webhooks[0].url, "https://ehr.example/hook");
    assert_eq!(c.delivery.give_up, TimeDelta::hours(48));
    assert_eq!(c.delivery.retry_base, Duration::from_secs(1));

    let with = |webhooks: &str| Settings {
        api_keys: ListOrString::Text("clinic-a:0123456789abcdef".into()),
        webhooks: ListOrString::Text(webhooks.into()),
        ..Settings::default()
    };
    assert!(check(with("clinic-a http://127.0.0.1:9/h whsec_0123456789abcdef")).is_ok());
    for bad in [
        "clinic-a http://127.0.0.1:9/h",                        // no secret
        "clinic-a http://127.0.0.1:9/h short",                  // weak secret
        "clinic-a ftp://127.0.0.1:9/h whsec_0123456789abcdef",  // not HTTP
        "clinic-z http://127.0.0.1:9/h whsec_0123456789abcdef", // no such tenant
        "clinic-a http://a/h whsec_0123456789abcdef, clinic-a http://b/h whsec_0123456789abcdef",
    ] {
        assert!(check(with(bad)).is_err(), "{bad}");
    }
    let mut short = with("");
    short.webhook_delivery.give_up_hours = 23;
    assert!(check(short).is_err(), "retries last at least 24 hours");
}

#[test]
fn cluster_settings_are_checked() {
    let pg = "postgres://bedside:pw@db:5432/bedside";
    let with = |f: &dyn Fn(&mut Settings)| {
        let mut s = Settings {
            database_url: Secret::new(pg),
            redis_url: Some(Secret::new("redis://redis:6379")),
            ..Settings::default()
        };
        f(&mut s);
        check(s)
    };
    let c = with(&|_| {}).unwrap();
    let cluster = c.cluster.unwrap();
    let id = cluster.node.as_str();
    assert!(
        id.starts_with("node.") && id.len() == "node.".len() + 8,
        "{id}"
    );
    assert!(
        with(&|s| s.database_url = Secret::new("sqlite://x.db")).is_err(),
        "nodes must share a database"
    );
    assert!(with(&|s| s.redis_url = Some(Secret::new("http://redis"))).is_err());
    assert!(
        with(&|s| s.redis_ca_cert = Some("ca.pem".into())).is_err(),
        "a CA is for rediss://"
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let tls = with(&|s| {
        s.redis_url = Some(Secret::new("rediss://redis:6380"));
        s.redis_ca_cert = Some(ca.clone());
    })
    .unwrap();
    assert!(tls.cluster.unwrap().redis_ca.is_some(), "read once, here");
    assert!(with(&|s| s.cluster.lease_ttl_ms = 100).is_err());
    for bad in ["", "node 1", "n\nF 1 x", &"n".repeat(65)] {
        assert!(
            with(&|s| s.cluster.node_id = Some(bad.to_owned())).is_err(),
            "{bad:?}"
        );
    }
    assert!(with(&|s| s.cluster.node_id = Some("pod-7.zone_b".into())).is_ok());
    let proxies = with(&|s| s.trusted_proxies = ListOrString::Text("10.0.0.0/8, ::1".into()));
    assert_eq!(proxies.unwrap().trusted_proxies.len(), 2);
    assert!(with(&|s| s.trusted_proxies = ListOrString::Text("10.0.0.0/33".into())).is_err());
    assert!(with(&|s| s.drain.jitter_ms = 120_000).is_err());
}

#[test]
fn origins_default_to_the_public_url() {
    let c = check(Settings::default()).unwrap();
    assert_eq!(
        c.allowed_origins("https://visits.example.org/base/"),
        ["https://visits.example.org"]
    );
    let c = check(Settings {
        allowed_origins: ListOrString::Text("http://a:1, http://b/".into()),
        ..Settings::default()
    })
    .unwrap();
    assert_eq!(c.allowed_origins("http://x"), ["http://a:1", "http://b"]);
}

#[test]
fn turn_settings_are_checked_and_the_embedded_server_advertised() {
    let secret = || Some(Secret::new("0123456789abcdef-turn"));
    let with = |turn: TurnSettings| Settings {
        turn,
        ..Settings::default()
    };
    let url = || ListOrString::Text("turn:turn.example.org:3478?transport=udp".into());
    // Nothing configured is fine; each half alone is not.
    assert!(check(with(TurnSettings::default())).is_ok());
    for bad in [
        TurnSettings {
            urls: url(),
            ..TurnSettings::default()
        },
        TurnSettings {
            secret: secret(),
            ..TurnSettings::default()
        },
        TurnSettings {
            embedded: true,
            ..TurnSettings::default()
        },
        TurnSettings {
            secret: Some(Secret::new("short")),
            urls: url(),
            ..TurnSettings::default()
        },
        TurnSettings {
            secret: secret(),
            urls: ListOrString::Text("stun:x:3478".into()),
            ..TurnSettings::default()
        },
        // 0.0.0.0 needs the address peers reach.
        TurnSettings {
            secret: secret(),
            embedded: true,
            ..TurnSettings::default()
        },
        TurnSettings {
            secret: secret(),
            embedded: true,
            relay_address: Some([203, 0, 113, 7].into()),
            relay_port_min: Some(50_000),
            ..TurnSettings::default()
        },
    ] {
        assert!(check(with(bad.clone())).is_err(), "{bad:?}");
    }
    let coturn = check(with(TurnSettings {
        secret: secret(),
        urls: url(),
        ..TurnSettings::default()
    }))
    .unwrap();
    assert!(coturn.turn.as_ref().unwrap().embedded.is_none());
    let servers = coturn.turn_servers(None).unwrap();
    assert_eq!(servers.urls, ["turn:turn.example.org:3478?transport=udp"]);

    let embedded = check(Settings {
        stun_urls: ListOrString::Text("stun:stun.example.org:3478".into()),
        ..with(TurnSettings {
            secret: secret(),
            embedded: true,
            relay_address: Some([203, 0, 113, 7].into()),
            relay_port_min: Some(50_000),
            relay_port_max: Some(50_100),
            ..TurnSettings::default()
        })
    })
    .unwrap();
    let config = embedded.turn.as_ref().unwrap().embedded.clone().unwrap();
    assert_eq!(config.relay_ports, Some((50_000, 50_100)));
    assert!(!config.allow_private_peers);
    assert_eq!(config.max_allocations_per_user, 10);
    let bound = SocketAddr::from(([0, 0, 0, 0], 3478));
    let stun = embedded.static_ice_servers(Some(bound));
    assert_eq!(
        stun[0].urls,
        ["stun:stun.example.org:3478", "stun:203.0.113.7:3478"]
    );
    let turn = embedded.turn_servers(Some(bound)).unwrap();
    assert_eq!(turn.urls, ["turn:203.0.113.7:3478?transport=udp"]);
    // The secret never prints.
    assert!(!format!("{embedded:?}").contains("0123456789abcdef-turn"));
}

#[test]
fn no_secret_prints_in_the_configuration() {
    let c = check(Settings {
        database_url: Secret::new("postgres://bedside:db-password-1@db:5432/bedside"),
        redis_url: Some(Secret::new("redis://:redis-password-1@redis:6379")),
        api_keys: ListOrString::Text("clinic-a:api-secret-0123456789".into()),
        webhooks: ListOrString::Text(
            "clinic-a https://ehr.example/hook webhook-secret-0123456789".into(),
        ),
        ..Settings::default()
    })
    .unwrap();
    let printed = format!("{c:?}");
    for secret in [
        "db-password-1",
        "redis-password-1",
        "api-secret-0123456789",
        "webhook-secret-0123456789",
    ] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
}

#[test]
fn embed_origins_are_exact_origins() {
    let with = |origins: &str| {
        check(Settings {
            embed_origins: ListOrString::Text(origins.into()),
            ..Settings::default()
        })
        .map(|c| c.embed_origins)
    };
    assert!(check(Settings::default()).unwrap().embed_origins.is_empty());
    assert_eq!(
        with("https://Portal.example.org/, http://127.0.0.1:8081").unwrap(),
        ["https://portal.example.org", "http://127.0.0.1:8081"]
    );
    for bad in [
        "portal.example.org",
        "https://*.example.org",
        "https://a.example.org/path",
        "https://a.example.org; script-src *",
        "https://a 'unsafe-inline'",
        "javascript:alert(1)",
        "https://",
    ] {
        assert!(with(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_clinics_settings_are_checked() {
    let c = check(Settings::default()).unwrap();
    assert_eq!(
        c.clinic.desk.model.default, None,
        "no estimate without history"
    );
    assert_eq!(c.clinic.desk.away_after, TimeDelta::seconds(120));
    assert!(c.clinic.consents.is_empty());
    let with = |clinic: raw::ClinicSettings| {
        check(Settings {
            clinic,
            ..Settings::default()
        })
    };
    let c = with(raw::ClinicSettings {
        default_consultation_secs: Some(900),
        consents: vec![raw::ConsentSetting {
            tenant: "clinic-a".into(),
            version: "2026-11".into(),
            text: "I agree.".into(),
        }],
        ..raw::ClinicSettings::default()
    })
    .unwrap();
    assert_eq!(c.clinic.desk.model.default, Some(TimeDelta::minutes(15)));
    let tenant = TenantId::new("clinic-a").unwrap();
    assert_eq!(c.clinic.consents[&tenant].version(), "2026-11");
    for bad in [
        raw::ClinicSettings {
            history: 0,
            ..raw::ClinicSettings::default()
        },
        raw::ClinicSettings {
            default_consultation_secs: Some(0),
            ..raw::ClinicSettings::default()
        },
        raw::ClinicSettings {
            consents: vec![raw::ConsentSetting {
                tenant: "clinic-a".into(),
                version: "v 1".into(),
                text: "x".into(),
            }],
            ..raw::ClinicSettings::default()
        },
    ] {
        assert!(with(bad).is_err());
    }
}

#[test]
fn a_key_may_be_configured_to_verify_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bedside.toml");
    std::fs::write(
        &file,
        r#"
        [[api_keys]]
        id = "north-2026"
        secret = "0123456789abcdef"
        tenant = "north"

        [[api_keys]]
        id = "north-2027"
        secret = "fedcba9876543210"
        tenant = "north"
        sign_links = false
        "#,
    )
    .unwrap();
    let c = Config::load(Some(&file)).unwrap();
    assert!(c.api_keys[0].sign_links, "signs by default");
    assert!(!c.api_keys[1].sign_links);
    let ring = bedside_auth::KeyRing::new(c.api_keys.clone()).unwrap();
    let north = bedside_auth::TenantId::new("north").unwrap();
    assert_eq!(ring.signer_for(&north).unwrap().as_str(), "north-2026");
    // The plain form signs with every key; a misspelled setting stops the start.
    let plain = check(Settings {
        api_keys: ListOrString::Text("clinic-a:0123456789abcdef".into()),
        ..Settings::default()
    })
    .unwrap();
    assert!(plain.api_keys[0].sign_links);
    std::fs::write(
        &file,
        r#"
        [[api_keys]]
        id = "north-2027"
        secret = "fedcba9876543210"
        sign = false
        "#,
    )
    .unwrap();
    assert!(Config::load(Some(&file)).is_err());
}
