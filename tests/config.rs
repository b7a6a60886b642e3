//! Configuration mistakes stop the real binary, at start and in `check-config`, with a
//! message naming the key and the nearest valid one: a misspelled `[[api_keys]]` section must
//! not leave a server running on a generated key. A generated development key is only used
//! on a loopback address.

use bedside_tests::binary;
use std::process::{Command, Output};

/// Runs `bedside ARGS` with only `env` (and PATH), for at most a few seconds when it serves.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("5")
        .arg(binary())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run bedside")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const KEYS: (&str, &str) = ("BEDSIDE_API_KEYS", "clinic-a:clinic-a-secret-0123456789");

/// A run that must fail: its arguments, its environment, the unknown key as the error names
/// it, and the nearest valid one it suggests.
type Mistake<'a> = (&'a [&'a str], Vec<(&'a str, &'a str)>, &'a str, &'a str);

#[test]
fn unknown_keys_in_the_file_and_the_environment_are_errors_naming_the_nearest() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("b.db").display());
    let file = dir.path().join("bedside.toml");
    std::fs::write(
        &file,
        "[[api_key]]\nid = \"clinic-a\"\nsecret = \"clinic-a-secret-0123456789\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let listen = ("BEDSIDE_LISTEN", "127.0.0.1:0");
    let database = ("BEDSIDE_DATABASE_URL", db.as_str());
    let cases: [Mistake; 4] = [
        (
            &["--config", file, "check-config"],
            vec![database],
            "`api_key`",
            "`api_keys`",
        ),
        // Started for real: it stops before serving, on the same error.
        (
            &["--config", file],
            vec![listen, database],
            "`api_key`",
            "`api_keys`",
        ),
        (
            &["check-config"],
            vec![KEYS, database, ("BEDSIDE_GRACE_SECOND", "5")],
            "BEDSIDE_GRACE_SECOND ",
            "BEDSIDE_GRACE_SECONDS",
        ),
        (
            &[],
            vec![
                KEYS,
                listen,
                database,
                ("BEDSIDE_WS__RATE_PER_SECONDS", "5"),
            ],
            "BEDSIDE_WS__RATE_PER_SECONDS",
            "BEDSIDE_WS__RATE_PER_SECOND?",
        ),
    ];
    for (args, env, unknown, nearest) in cases {
        let out = run(args, &env);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {said}");
        assert!(said.contains(unknown) && said.contains(nearest), "{said}");
        assert!(!said.contains("listening"), "{said}");
    }
    // The service links Kubernetes injects for a Service named `bedside` are not settings.
    let out = run(
        &["check-config"],
        &[
            KEYS,
            database,
            ("BEDSIDE_SERVICE_HOST", "10.0.0.7"),
            ("BEDSIDE_SERVICE_PORT", "8080"),
            ("BEDSIDE_PORT", "tcp://10.0.0.7:8080"),
            ("BEDSIDE_PORT_8080_TCP_ADDR", "10.0.0.7"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_generated_development_key_only_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("b.db").display());
    let database = ("BEDSIDE_DATABASE_URL", db.as_str());
    for listen in ["0.0.0.0:0", "[::]:0"] {
        for args in [&["check-config"][..], &[][..]] {
            let out = run(args, &[database, ("BEDSIDE_LISTEN", listen)]);
            let said = text(&out);
            assert_eq!(out.status.code(), Some(2), "{listen} {args:?}: {said}");
            assert!(said.contains("BEDSIDE_API_KEYS"), "{said}");
            assert!(!said.contains("API key:"), "no key printed: {said}");
        }
    }
    // On loopback the development key is generated and printed, as the README says.
    let out = run(&[], &[database, ("BEDSIDE_LISTEN", "127.0.0.1:0")]);
    let said = text(&out);
    assert!(said.contains("development API key"), "{said}");
}
