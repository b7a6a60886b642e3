//! The image built from deploy/Dockerfile, run the way deploy/k8s runs it (the image's own
//! user, a read-only root file system, no capabilities, /tmp and a volume for the SQLite
//! database as the only writable places) and driven through its published port: a whole
//! visit, `podman stop`, and a new container on the same volume carrying on with the visit.
//!
//! It needs rootful podman and an image: `scripts/test-container` builds one and runs this
//! test with `BEDSIDE_IMAGE` set (and podman's settings for this machine in
//! `CONTAINERS_CONF`), so a plain `cargo test` leaves it out (ignored).

use bedside_tests::pg::free_port;
use bedside_tests::{Api, CLINIC_A, Client, Pair};
use serde_json::json;
use std::process::Output;
use std::time::{Duration, Instant};
use tokio::process::Command;

/// The user deploy/Dockerfile runs as, which deploy/k8s's `runAsUser`/`runAsGroup` name.
const USER: &str = "10001:10001";

/// Where deploy/Dockerfile keeps the SQLite database (its WORKDIR).
const DATA_DIR: &str = "/var/lib/bedside";

/// How long deploy/k8s gives a pod to drain (`terminationGracePeriodSeconds`).
const STOP_TIMEOUT_SECS: &str = "40";

/// How long a visit may take to carry on after its node is killed: it takes about 3 s
/// (the owner's lease lapsing, a survivor taking over, both resuming).
const CARRY_ON: Duration = Duration::from_secs(60);

async fn podman_output(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .await
        .expect("run podman")
}

/// `podman ARGS`: what it printed on stdout, trimmed; panics with its stderr if it fails.
async fn podman(args: &[&str]) -> String {
    let out = podman_output(args).await;
    assert!(
        out.status.success(),
        "podman {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Containers of one image, one after another, on one volume for the database. Dropping it
/// removes them and the volume.
struct Deployment {
    image: String,
    volume: String,
    containers: Vec<String>,
}

/// A started container and where its port is published on the host.
struct Started {
    name: String,
    base: String,
}

impl Started {
    fn ws_url(&self) -> String {
        format!("{}/ws", self.base.replacen("http://", "ws://", 1))
    }
}

/// Everything a container printed (stdout and stderr).
async fn logs(name: &str) -> String {
    let out = podman_output(&["logs", name]).await;
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `podman stop`: SIGTERM, as Kubernetes and compose stop a container (SIGKILL only after
/// the stop timeout); the container's exit code.
async fn stop(name: String) -> String {
    podman(&["stop", &name]).await;
    podman(&["inspect", "--format", "{{.State.ExitCode}}", &name]).await
}

impl Deployment {
    async fn new(image: &str) -> Self {
        let volume = format!("bedside-test-{}-{}", std::process::id(), free_port());
        podman(&["volume", "create", &volume]).await;
        Self {
            image: image.to_owned(),
            volume,
            containers: Vec::new(),
        }
    }

    /// Starts a container and waits until the image's HEALTHCHECK reports it healthy.
    async fn start(&mut self) -> Started {
        let name = format!("{}-{}", self.volume, self.containers.len() + 1);
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let keys = format!("BEDSIDE_API_KEYS={}:{}", CLINIC_A.0, CLINIC_A.1);
        let public_url = format!("BEDSIDE_PUBLIC_URL={base}");
        let volume = format!("{}:{DATA_DIR}", self.volume);
        let publish = format!("127.0.0.1:{port}:8080");
        self.containers.push(name.clone());
        #[rustfmt::skip]
        podman(&[
            "run", "--detach", "--name", &name,
            // deploy/k8s/deployment.yaml's securityContext and volumes.
            "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,size=64m",
            "--cap-drop", "all", "--security-opt", "no-new-privileges",
            "--volume", &volume,
            "--stop-timeout", STOP_TIMEOUT_SECS,
            "--publish", &publish,
            "--env", &keys, "--env", &public_url,
            // No health-check timer: nothing runs it where systemd does not; this test does.
            "--health-interval", "disable",
            &self.image,
        ])
        .await;
        // What a timer would do: run the image's check until it passes.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !podman_output(&["healthcheck", "run", &name])
            .await
            .status
            .success()
        {
            let state = podman(&["inspect", "--format", "{{.State.Status}}", &name]).await;
            if state != "running" || Instant::now() > deadline {
                panic!(
                    "{name} did not turn healthy ({state}); its output:\n{}",
                    logs(&name).await
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let health = podman(&["inspect", "--format", "{{.State.Health.Status}}", &name]).await;
        assert_eq!(health, "healthy");
        Started { name, base }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // Drop cannot await: the blocking std::process, best effort.
        let mut rm = std::process::Command::new("podman");
        rm.args(["rm", "--force", "--time", "0"])
            .args(&self.containers);
        let _ = rm.output();
        let _ = std::process::Command::new("podman")
            .args(["volume", "rm", "--force", &self.volume])
            .output();
    }
}

#[tokio::test]
#[ignore = "needs rootful podman and an image: scripts/test-container builds one and runs this"]
async fn the_image_runs_a_visit_stops_gracefully_and_a_new_container_carries_it_on() {
    let image = std::env::var("BEDSIDE_IMAGE")
        .expect("BEDSIDE_IMAGE names the image to test (scripts/test-container sets it)");

    // What Kubernetes' runAsNonRoot reads: a numeric, non-root user in the image config.
    let config_user = podman(&["image", "inspect", "--format", "{{.Config.User}}", &image]).await;
    assert_eq!(config_user, USER);
    // The HEALTHCHECK survived the build (the OCI image format has no field for it).
    let check = podman(&[
        "image",
        "inspect",
        "--format",
        "{{json .HealthCheck}}",
        &image,
    ])
    .await;
    assert!(
        check.contains("/healthz"),
        "no HEALTHCHECK in {image}: {check}"
    );

    let mut deployment = Deployment::new(&image).await;
    let first = deployment.start().await;

    // The server runs as that user, on a read-only root with the volume and /tmp writable.
    let status = podman(&["exec", &first.name, "cat", "/proc/1/status"]).await;
    let uids = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>());
    assert_eq!(uids, Some(vec!["10001"; 4]), "{status}");
    let mounts = podman(&["exec", &first.name, "cat", "/proc/1/mounts"]).await;
    let writable = |dir: &str| {
        let options = mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(1) == Some(&dir))
            .and_then(|f| f.get(3).map(|o| o.split(',').next() == Some("rw")));
        options.unwrap_or_else(|| panic!("{dir} is not a mount point:\n{mounts}"))
    };
    assert!(
        !writable("/"),
        "the root file system is writable:\n{mounts}"
    );
    assert!(writable(DATA_DIR) && writable("/tmp"), "{mounts}");

    // A whole visit through the published port: API, both WebSockets, admission, relay.
    let api = Api::at(&first.base, CLINIC_A);
    let Pair {
        visit,
        mut doctor,
        mut patient,
    } = Pair::admitted_at(&first.ws_url(), &api).await;
    let offer = json!({"sdp": "v=0 offer through the container"});
    doctor
        .send(json!({"type": "signal", "to": patient.participant_id, "data": offer}))
        .await;
    let relayed = patient.until("signal").await;
    assert_eq!(
        (&relayed["from"], &relayed["data"]),
        (&json!(doctor.participant_id), &offer)
    );
    let answer = json!({"sdp": "v=0 answer"});
    patient
        .send(json!({"type": "signal", "to": doctor.participant_id, "data": answer}))
        .await;
    assert_eq!(doctor.until("signal").await["data"], answer);
    assert_eq!(api.get_visit(&visit).await["status"], "active");

    // SIGTERM: every client is told to reconnect (1001), and the process exits 0.
    let stopping = tokio::spawn(stop(first.name.clone()));
    assert_eq!(doctor.closed().await, 1001);
    assert_eq!(patient.closed().await, 1001);
    assert_eq!(
        stopping.await.expect("stop"),
        "0",
        "exit code after podman stop"
    );
    let logs = logs(&first.name).await;
    assert!(logs.contains("stopped"), "{logs}");
    for private in [
        CLINIC_A.1,
        patient.resume_token.as_str(),
        "Dr One",
        "Pat One",
        "dr-1",
        "pt-1",
    ] {
        assert!(
            !logs.contains(private),
            "the logs show {private:?}:\n{logs}"
        );
    }

    // A new container on the same volume: the visit is there and its people keep their
    // places (the patient resumes admitted, no new admission).
    let second = deployment.start().await;
    let api = Api::at(&second.base, CLINIC_A);
    assert_eq!(api.get_visit(&visit).await["status"], "active");
    let mut patient = Client::resume(&second.ws_url(), &patient).await;
    let token = api.mint(&visit, "doctor", "dr-1", "Dr One").await;
    let (mut doctor, _) = Client::join_url(&second.ws_url(), &token).await;
    doctor.until("admitted").await;
    let after = json!({"candidate": "after the restart"});
    patient
        .send(json!({"type": "signal", "to": doctor.participant_id, "data": after}))
        .await;
    assert_eq!(doctor.until("signal").await["data"], after);

    // The doctor ends it; that too is on the volume.
    doctor.send(json!({"type": "end_visit"})).await;
    assert_eq!(
        patient.until("visit_ended").await["reason"],
        "ended_by_doctor"
    );
    assert_eq!(patient.closed().await, 4004);
    let ended = api.get_visit(&visit).await;
    assert_eq!(
        (ended["status"].as_str(), ended["ended_reason"].as_str()),
        (Some("ended"), Some("ended_by_doctor"))
    );
    let kinds: Vec<String> = api
        .events(&visit)
        .await
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_owned))
        .collect();
    for kind in ["created", "admitted", "ended"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing: {kinds:?}");
    }
    assert_eq!(stop(second.name).await, "0", "exit code after podman stop");
}

/// The node containers of a compose project, as podman-compose names them.
fn compose_nodes(project: &str) -> Vec<String> {
    (1..=3).map(|i| format!("{project}_bedside{i}_1")).collect()
}

/// The leases a node holds (`bedside_cluster_leases` on its `/metrics`), asked from inside
/// its container: the nodes are reachable through the load balancer only.
async fn leases(node: &str) -> Option<u64> {
    let scrape = "exec 3<>/dev/tcp/127.0.0.1/8080 && \
        printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3";
    let out = podman_output(&["exec", node, "bash", "-c", scrape]).await;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("bedside_cluster_leases "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .map(|n| n as u64)
}

/// deploy/compose.yaml brought up with stand-ins of its images (scripts/test-container
/// --compose): a visit through HAProxy, the node running it killed, and the visit carrying
/// on through the load balancer on the two others.
#[tokio::test]
#[ignore = "needs the compose stack up: scripts/test-container --compose starts it and runs this"]
async fn the_compose_stack_keeps_a_visit_when_its_node_is_killed() {
    let lb = std::env::var("BEDSIDE_COMPOSE_URL")
        .expect("BEDSIDE_COMPOSE_URL: HAProxy's address (scripts/test-container sets it)");
    let project = std::env::var("BEDSIDE_COMPOSE_PROJECT").unwrap_or_else(|_| "bedside".into());
    let ws = format!("{}/ws", lb.replacen("http://", "ws://", 1));
    let api = Api::at(&lb, CLINIC_A);
    let Pair {
        visit,
        mut doctor,
        mut patient,
    } = Pair::admitted_at(&ws, &api).await;
    doctor
        .send(json!({"type": "signal", "to": patient.participant_id, "data": {"n": 1}}))
        .await;
    assert_eq!(patient.until("signal").await["data"], json!({"n": 1}));

    let mut owner = None;
    for node in compose_nodes(&project) {
        if leases(&node).await == Some(1) {
            assert!(owner.is_none(), "two nodes hold the one visit");
            owner = Some(node);
        }
    }
    let owner = owner.expect("one node holds the visit's lease");
    podman(&["kill", &owner]).await;
    let killed = Instant::now();

    // Whoever was connected to the dead node is cut off; whoever was on another node is
    // sent away when that node sees the owner gone. Both come back through HAProxy with
    // their resume tokens, admitted, once a surviving node has taken the visit over.
    // Bounded as a whole: the server's pings keep each wait for a frame alive, so a signal
    // that never arrives would otherwise hold the test (and CI) forever.
    let carried_on = async {
        let (doctor_close, patient_close) = tokio::join!(doctor.closed(), patient.closed());
        for code in [doctor_close, patient_close] {
            assert!(code == 1006 || code == 1001, "close {code}");
        }
        let (mut doctor, mut patient) =
            tokio::join!(Client::resume(&ws, &doctor), Client::resume(&ws, &patient));
        patient
            .send(json!({"type": "signal", "to": doctor.participant_id, "data": {"n": 2}}))
            .await;
        assert_eq!(doctor.until("signal").await["data"], json!({"n": 2}));
        (doctor, patient)
    };
    let (mut doctor, mut patient) = tokio::time::timeout(CARRY_ON, carried_on)
        .await
        .expect("signaling carried on through the surviving nodes within CARRY_ON");
    eprintln!(
        "owner {owner} killed: signaling back through HAProxy after {} ms",
        killed.elapsed().as_millis()
    );
    let seen = api.get_visit(&visit).await;
    assert_eq!(seen["status"], "active", "{seen}");
    assert_eq!(seen["waiting"], json!([]), "{seen}");

    let (status, ended) = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/visits/{visit}/end"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(doctor.until("visit_ended").await["reason"], "ended_by_api");
    assert_eq!(patient.until("visit_ended").await["reason"], "ended_by_api");
}
