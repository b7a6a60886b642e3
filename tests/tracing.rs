//! Traces over OTLP: the real binary exports to an in-process OTLP/HTTP receiver on loopback
//! (protobuf, decoded with the OpenTelemetry project's own message types). One trace follows
//! the patient from the REST call that minted their link, through their join and their
//! admission, to the webhook deliveries about them; and nothing personal is in any span:
//! no identity, display name, token, SDP or chat text.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use bedside_tests::{CLINIC_A, Client, TestServer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One exported span, as the receiver decoded it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    attributes: Vec<(String, String)>,
}

#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    /// Every export request's raw body, to search for what must not be there.
    raw: Arc<Mutex<Vec<u8>>>,
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

async fn export(State(got): State<Received>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body.as_ref()) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    got.raw.lock().expect("lock").extend_from_slice(&body);
    let mut spans = got.spans.lock().expect("lock");
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            for s in scope.spans {
                spans.push(Span {
                    name: s.name,
                    trace: s.trace_id,
                    id: s.span_id,
                    parent: s.parent_span_id,
                    attributes: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse.
    (StatusCode::OK, Vec::new())
}

/// An OTLP/HTTP receiver on a loopback port: its base URL and what it receives.
async fn collector() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got = Received::default();
    let app = Router::new()
        .route("/v1/traces", post(export))
        .with_state(got.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("collector") });
    (format!("http://{addr}"), got)
}

async fn webhook_receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/hook", post(|| async { StatusCode::NO_CONTENT }));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    format!("http://{addr}/hook")
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn one_trace_from_minting_a_link_to_the_webhook_delivery_with_nothing_personal() {
    let (otlp, got) = collector().await;
    let hooks = format!(
        "clinic-a {} whsec_clinic_a_0123456789",
        webhook_receiver().await
    );
    let server = TestServer::start_with(&[
        ("BEDSIDE_OTLP_ENDPOINT", otlp.as_str()),
        ("BEDSIDE_WEBHOOKS", hooks.as_str()),
        ("BEDSIDE_WEBHOOK_DELIVERY__POLL_MS", "50"),
        // The SDK's batch exporter: send every 100 ms rather than every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let doctor_token = api.mint(&visit, "doctor", "dr-trace-1", "Dr Tracy").await;
    let patient_token = api
        .mint(&visit, "patient", "pt-trace-7", "Patty Private")
        .await;
    let (mut doctor, _) = Client::join(&server, &doctor_token).await;
    doctor.expect("admitted").await;
    let (mut patient, _) = Client::join(&server, &patient_token).await;
    patient.expect("waiting").await;
    doctor.until("lobby").await;
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    patient.expect("admitted").await;
    doctor
        .send(json!({"type": "signal", "to": patient.participant_id,
                     "data": {"type": "offer", "sdp": "v=0 sdp-marker-3f9a"}}))
        .await;
    patient.until("signal").await;
    doctor
        .send(json!({"type": "chat", "text": "chat-marker-77"}))
        .await;
    patient.until("chat").await;

    // The patient's trace: the admission's, which must reach the deliveries of all three
    // of the patient's events. They are sent, and so exported, in separate batches: wait
    // for every one before reading the trace.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (trace, spans) = loop {
        let spans = got.spans.lock().expect("lock").clone();
        let admit = spans.iter().find(|s| s.name == "admit");
        let delivered = |a: &Span, kind: &str| {
            spans.iter().any(|s| {
                s.trace == a.trace
                    && s.name == "webhook delivery"
                    && attr(s, "event_type") == Some(kind)
            })
        };
        if let Some(admit) = admit.filter(|a| {
            [
                "participant.waiting",
                "participant.admitted",
                "participant.joined",
            ]
            .iter()
            .all(|kind| delivered(a, kind))
        }) {
            break (admit.trace.clone(), spans);
        }
        assert!(
            Instant::now() < deadline,
            "no admission trace reaching a webhook delivery; spans: {:#?}",
            spans
                .iter()
                .map(|s| (&s.name, &s.attributes))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let in_trace: Vec<&Span> = spans.iter().filter(|s| s.trace == trace).collect();
    let one = |name: &str| -> &Span {
        let found: Vec<&&Span> = in_trace.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "{name} in {in_trace:#?}");
        found[0]
    };
    // mint (the HTTP request) -> join -> admit -> deliveries, parent to child.
    let mint = one("POST /v1/visits/{id}/tokens");
    assert!(mint.parent.is_empty(), "the mint starts the trace");
    let join = one("join");
    assert_eq!(join.parent, mint.id, "the join continues the mint");
    assert_eq!(attr(join, "role"), Some("patient"));
    assert_eq!(
        attr(join, "participant"),
        Some(patient.participant_id.as_str())
    );
    assert_eq!(attr(join, "visit"), Some(visit.as_str()));
    let admit = one("admit");
    assert_eq!(admit.parent, join.id, "the admission continues the join");
    let deliveries: Vec<&&Span> = in_trace
        .iter()
        .filter(|s| s.name == "webhook delivery")
        .collect();
    let of = |kind: &str| {
        deliveries
            .iter()
            .find(|s| attr(s, "event_type") == Some(kind))
            .unwrap_or_else(|| panic!("no delivery of {kind} in {deliveries:#?}"))
    };
    // A delivery continues the participant's latest step when it is sent: the waiting
    // event's may go out before or after the admission.
    let waiting = &of("participant.waiting").parent;
    assert!(*waiting == join.id || *waiting == admit.id);
    assert_eq!(of("participant.admitted").parent, admit.id);
    assert_eq!(of("participant.joined").parent, admit.id);
    // The doctor's own trace is another one.
    assert!(
        spans
            .iter()
            .any(|s| s.name == "join" && s.trace != trace && attr(s, "role") == Some("doctor"))
    );

    // Nothing personal anywhere in what was exported.
    let raw = String::from_utf8_lossy(&got.raw.lock().expect("lock")).into_owned();
    for personal in [
        "dr-trace-1",
        "pt-trace-7",
        "Dr Tracy",
        "Patty Private",
        "sdp-marker-3f9a",
        "chat-marker-77",
        CLINIC_A.1,
        &doctor_token,
        &patient_token,
    ] {
        assert!(!raw.contains(personal), "{personal} was exported");
    }
    // Nor a piece of a token (its signature part).
    let signature = patient_token.rsplit('.').next().expect("JWT");
    assert!(!raw.contains(signature));
}
