//! The OpenAPI document as served at `/v1/openapi.json`: what utoipa generates from the
//! handlers' annotations, finished with what every operation shares. Each operation lists
//! every status it can answer (the errors that come from what it takes: credentials, a
//! JSON body, query parameters, storage), every response has a description and an example,
//! and the operations are linked (create → mint → get → end) so generators and
//! schemathesis can follow a visit's life. `scripts/test` validates the document and runs
//! schemathesis against the live binary.

use serde_json::{Map, Value, json};

/// The error responses an operation may give, by what it takes.
const UNAUTHORIZED: (&str, &str, &str) = (
    "401",
    "unauthorized",
    "No API key, or a wrong one (HTTP Basic: key id and secret); `WWW-Authenticate: Basic` says so",
);
const BODY_ERRORS: &[(&str, &str, &str)] = &[
    ("400", "invalid_json", "The body is not JSON"),
    ("413", "payload_too_large", "The body is over 64 KiB"),
    (
        "415",
        "unsupported_media_type",
        "The body is not sent as `content-type: application/json`",
    ),
    (
        "422",
        "validation_failed",
        "A field is missing, unknown, of the wrong type or out of range; the message names it",
    ),
];
const INPUT_ERROR: (&str, &str, &str) = (
    "422",
    "validation_failed",
    "A parameter is malformed or out of range; the message names it",
);
const SERVER_ERRORS: &[(&str, &str, &str)] = &[
    (
        "500",
        "internal",
        "An unexpected error; nothing was changed that the answer does not say",
    ),
    (
        "503",
        "unavailable",
        "Storage is unreachable or busy (or, in a cluster, the visit is moving between nodes); retry after `Retry-After`",
    ),
];

fn error_example(code: &str) -> Value {
    let message = match code {
        "unauthorized" => "authentication required: HTTP Basic with an API key id and secret",
        "invalid_json" => {
            "Failed to parse the request body as JSON: expected value at line 1 column 1"
        }
        "payload_too_large" => "request body too large",
        "unsupported_media_type" => "expected a JSON body (content-type: application/json)",
        "validation_failed" => "max_participants: must be 2 to 8",
        "visit_not_found" => "visit not found",
        "visit_ended" => "the visit has ended",
        "rate_limited" => "too many requests; retry later",
        "unavailable" => "temporarily unavailable; retry later",
        "event_not_found" => "no event with that id",
        "bad_request" => "invalid cursor: not a next_cursor this API gave",
        _ => "internal error",
    };
    json!({"error": {"code": code, "message": message}})
}

const VISIT_ID: &str = "6f1c0d4e-8a2b-4c1d-9e3f-5a6b7c8d9e0f";

fn visit_example() -> Value {
    json!({
        "id": VISIT_ID,
        "status": "open",
        "ended_reason": null,
        "external_ref": "appt-1042",
        "created_at": "2026-11-22T09:58:00.000000Z",
        "not_before": "2026-11-22T10:00:00Z",
        "expires_at": "2026-11-22T22:00:00Z",
        "started_at": null,
        "ended_at": null,
        "max_participants": 2,
        "metadata": {"room": "3B"},
        "provider": "dr-lee",
        "consent": null
    })
}

/// An example of each operation's success answer, by operation id.
fn success_example(operation: &str) -> Option<Value> {
    Some(match operation {
        "create_visit" => visit_example(),
        "get_visit" => {
            let mut v = visit_example();
            v["status"] = json!("active");
            v["connected"] = json!([{
                "participant_id": "p_3fa2c1d0e9b8a7f6", "identity": "dr-lee", "role": "doctor",
                "name": "Dr Lee", "state": "admitted", "connected": true,
                "media": {"audio": true, "video": true, "screen": false}
            }]);
            v["waiting"] = json!([{
                "participant_id": "p_9c8b7a6f5e4d3c2b", "identity": "patient-7731", "role": "patient",
                "name": "Sam", "state": "waiting", "connected": true,
                "media": {"audio": true, "video": true, "screen": false}
            }]);
            v
        }
        "end_visit" => {
            let mut v = visit_example();
            v["status"] = json!("ended");
            v["ended_reason"] = json!("ended_by_api");
            v["ended_at"] = json!("2026-11-22T10:31:07.412000Z");
            v
        }
        "list_visits" => json!({
            "visits": [visit_example()],
            "next_cursor": format!("1763805480000000.{VISIT_ID}")
        }),
        "mint_token" => json!({
            "token": "eyJhbGciOiJIUzI1NiIsImtpZCI6ImNsaW5pYy1hIiwidHlwIjoiSldUIn0.eyJpc3MiOiJjbGluaWMtYSJ9.c2lnbmF0dXJl",
            "expires_at": "2026-11-22T22:00:00Z",
            "join_url": "https://visits.example-clinic.org/#token=eyJhbGciOiJIUzI1NiIsImtpZCI6ImNsaW5pYy1hIiwidHlwIjoiSldUIn0.eyJpc3MiOiJjbGluaWMtYSJ9.c2lnbmF0dXJl"
        }),
        "visit_events" => json!({"events": [
            {"seq": 1, "at": "2026-11-22T09:58:00.000000Z", "kind": "created", "participant_id": null,
             "identity": null, "role": null, "actor": "api:clinic-a", "detail": null},
            {"seq": 2, "at": "2026-11-22T09:58:01.000000Z", "kind": "token_issued", "participant_id": null,
             "identity": "patient-7731", "role": "patient", "actor": "api:clinic-a",
             "detail": "0b1f7c1e-4f1a-4a8e-9d7e-2c3b4a5d6e7f"}
        ]}),
        "verify_events" => {
            json!({"intact": true, "chained_rows": 7, "unchained_rows": 0, "broken": null})
        }
        "list_events" => json!({
            "events": [{
                "seq": 42, "id": "1b4e28ba-2fa1-41d2-883f-0016d3cca427", "type": "participant.admitted",
                "created_at": "2026-11-22T10:01:12.000000Z", "visit_id": VISIT_ID, "sequence": 4,
                "data": {"participant_id": "p_9c8b7a6f5e4d3c2b", "identity": "patient-7731", "role": "patient"}
            }],
            "next_after": 42
        }),
        "visit_quality" => json!({
            "visit_id": VISIT_ID,
            "participants": [{
                "participant_id": "p_9c8b7a6f5e4d3c2b", "identity": "patient-7731", "role": "patient",
                "quality": "good", "quality_reason": null, "worst_quality": "poor",
                "samples": 180, "first_sample_at": "2026-11-22T10:01:20.000000Z",
                "last_sample_at": "2026-11-22T10:16:15.000000Z", "measured_seconds": 900,
                "seconds_by_quality": {"good": 840, "fair": 25, "poor": 35},
                "relay_seconds": 0,
                "rtt_ms": {"p50": 50.0, "p95": 150.0},
                "jitter_ms": {"p50": 5.0, "p95": 20.0},
                "packet_loss": {"mean": 0.0042, "p95": 0.02, "max": 0.1834},
                "bitrate_kbps": {"inbound": 1210.5, "outbound": 1130.0},
                "worst_window": {"start": "2026-11-22T10:09:40.000000Z", "end": "2026-11-22T10:10:10.000000Z",
                    "quality": "poor", "reason": "packet_loss", "packet_loss": 0.1412, "rtt_ms": 88.0, "jitter_ms": 31.5},
                "precheck": {"camera": true, "microphone": true, "network": "direct",
                    "turn": {"udp": true}, "at": "2026-11-22T10:00:41.000000Z"}
            }]
        }),
        "transfer_visit" => {
            let mut v = visit_example();
            v["status"] = json!("active");
            v["provider"] = json!("dr-kim");
            v
        }
        "provider_queue" => json!({"entries": [{
            "visit_id": VISIT_ID, "external_ref": "appt-1042", "position": 1,
            "participant": {"participant_id": "p_9c8b7a6f5e4d3c2b", "name": "Sam",
                            "role": "patient", "since": "2026-11-22T10:01:12.000000Z"},
            "consent": {"version": "2026-11", "at": "2026-11-22T10:01:12.000000Z"},
            "precheck": {"camera": true, "microphone": true, "network": "relay",
                         "turn": {"udp": false, "tls": true}, "at": "2026-11-22T10:01:30.000000Z"}
        }]}),
        "mint_provider_token" => json!({
            "token": "eyJhbGciOiJIUzI1NiIsImtpZCI6ImNsaW5pYy1hIiwidHlwIjoiSldUIn0.eyJpc3MiOiJjbGluaWMtYSJ9.c2lnbmF0dXJl",
            "expires_at": "2026-11-23T08:00:00Z",
            "join_url": "https://visits.example-clinic.org/#token=eyJhbGciOiJIUzI1NiIsImtpZCI6ImNsaW5pYy1hIiwidHlwIjoiSldUIn0.eyJpc3MiOiJjbGluaWMtYSJ9.c2lnbmF0dXJl"
        }),
        "healthz" => json!({"status": "ok"}),
        "readyz" => json!({"status": "ready"}),
        _ => return None,
    })
}

/// Request body examples, by operation id.
fn request_example(operation: &str) -> Option<Value> {
    Some(match operation {
        "create_visit" => json!({
            "external_ref": "appt-1042",
            "not_before": "2026-11-22T10:00:00Z",
            "expires_at": "2026-11-22T22:00:00Z",
            "max_participants": 2,
            "metadata": {"room": "3B"},
            "provider": "dr-lee",
            "consent": {"version": "2026-11", "text": "I agree to be seen by video."}
        }),
        "transfer_visit" => json!({"provider": "dr-kim"}),
        "mint_provider_token" => json!({"name": "Dr Lee", "ttl_seconds": 28800}),
        "mint_token" => json!({
            "role": "patient",
            "identity": "patient-7731",
            "name": "Sam",
            "ttl_seconds": 3600
        }),
        _ => return None,
    })
}

/// Where a response leads: (link name, operation id, parameters).
fn links(operation: &str) -> Vec<(&'static str, &'static str, Value)> {
    let by_body = || json!({"id": "$response.body#/id"});
    let by_path = || json!({"id": "$request.path.id"});
    match operation {
        "create_visit" => vec![
            ("MintToken", "mint_token", by_body()),
            ("GetVisit", "get_visit", by_body()),
            ("VisitEvents", "visit_events", by_body()),
            ("VisitQuality", "visit_quality", by_body()),
            ("EndVisit", "end_visit", by_body()),
        ],
        "mint_token" => vec![
            ("GetVisit", "get_visit", by_path()),
            ("VisitEvents", "visit_events", by_path()),
            (
                "RemoveParticipant",
                "remove_participant",
                json!({"id": "$request.path.id", "identity": "$request.body#/identity"}),
            ),
        ],
        "get_visit" => vec![
            ("EndVisit", "end_visit", by_body()),
            ("VerifyEvents", "verify_events", by_body()),
        ],
        "end_visit" => vec![
            ("GetVisit", "get_visit", by_body()),
            ("VisitEvents", "visit_events", by_body()),
            ("VisitQuality", "visit_quality", by_body()),
        ],
        _ => Vec::new(),
    }
}

fn error_response(description: &str, code: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ErrorBody"},
            "example": error_example(code)
        }}
    })
}

/// Adds `status` unless the operation describes it itself.
fn add(responses: &mut Map<String, Value>, (status, code, description): (&str, &str, &str)) {
    responses
        .entry(status)
        .or_insert_with(|| error_response(description, code));
}

/// The code an operation's own error response carries, for its example.
fn own_error_code(operation: &str, status: &str) -> &'static str {
    match (operation, status) {
        ("list_events", "404") => "event_not_found",
        ("remove_participant", "404") => "participant_not_found",
        (_, "404") => "visit_not_found",
        (_, "409") => "visit_ended",
        (_, "400") => "bad_request",
        (_, "429") => "rate_limited",
        (_, "503") => "unavailable",
        _ => "internal",
    }
}

fn header(description: &str) -> Value {
    json!({"description": description, "schema": {"type": "string"}})
}

/// Finishes the generated document (see the module comment).
pub fn finish(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(doc).expect("an OpenAPI document serializes");
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (_, op) in item.iter_mut() {
            finish_operation(path, op);
        }
    }
    doc
}

fn finish_operation(path: &str, op: &mut Value) {
    let id = op["operationId"].as_str().unwrap_or_default().to_owned();
    let secured = op.get("security").is_some();
    let has_body = op.get("requestBody").is_some();
    let validated_params = op["parameters"].as_array().is_some_and(|params| {
        params.iter().any(|p| {
            p["in"] == "query"
                || p["schema"].get("pattern").is_some()
                || p["schema"].get("maxLength").is_some()
        })
    });
    if let (Some(example), Some(content)) = (
        request_example(&id),
        op.pointer_mut("/requestBody/content/application~1json"),
    ) {
        content["example"] = example;
    }
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    if secured {
        add(responses, UNAUTHORIZED);
        responses["401"]["headers"] =
            json!({"WWW-Authenticate": header("`Basic realm=\"bedside\"`")});
    }
    if has_body {
        for error in BODY_ERRORS {
            add(responses, *error);
        }
    } else if validated_params {
        add(responses, INPUT_ERROR);
    }
    if path.starts_with("/v1/") {
        for error in SERVER_ERRORS {
            add(responses, *error);
        }
        responses["503"]["headers"] =
            json!({"Retry-After": header("Seconds to wait before retrying")});
    }
    for (status, response) in responses.iter_mut() {
        let success = status.starts_with('2');
        if let Some(content) = response.pointer_mut("/content/application~1json")
            && content.get("example").is_none()
        {
            let example = if success {
                success_example(&id)
            } else if id == "readyz" {
                Some(json!({"status": "not_ready", "reason": "storage_unavailable"}))
            } else {
                Some(error_example(own_error_code(&id, status)))
            };
            if let Some(example) = example {
                content["example"] = example;
            }
        }
        if let Some(content) = response.pointer_mut("/content/text~1plain") {
            content["example"] = json!(
                "# HELP bedside_connections Open WebSockets on this node.\n# TYPE bedside_connections gauge\nbedside_connections 12\n"
            );
        }
        if success {
            let links: Map<String, Value> = links(&id)
                .into_iter()
                .map(|(name, target, parameters)| {
                    (
                        name.to_owned(),
                        json!({"operationId": target, "parameters": parameters}),
                    )
                })
                .collect();
            if !links.is_empty() {
                response["links"] = Value::Object(links);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Value {
        super::super::router().1
    }

    #[test]
    fn every_response_has_a_description_and_every_json_one_an_example() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    let at = format!("{method} {path} {status}");
                    assert!(
                        response["description"]
                            .as_str()
                            .is_some_and(|d| !d.is_empty()),
                        "{at}: no description"
                    );
                    if let Some(content) = response["content"].as_object() {
                        for (media, body) in content {
                            assert!(body.get("example").is_some(), "{at} {media}: no example");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_api_operation_lists_the_errors_it_can_answer() {
        let doc = document();
        let statuses = |method: &str, path: &str| -> Vec<String> {
            doc["paths"][path][method]["responses"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        assert_eq!(
            statuses("post", "/v1/visits"),
            [
                "201", "400", "401", "413", "415", "422", "429", "500", "503"
            ]
        );
        assert_eq!(
            statuses("get", "/v1/visits"),
            ["200", "400", "401", "422", "500", "503"]
        );
        assert_eq!(
            statuses("get", "/v1/visits/{id}"),
            ["200", "401", "404", "500", "503"]
        );
        assert_eq!(
            statuses("delete", "/v1/visits/{id}/participants/{identity}"),
            ["204", "401", "404", "422", "500", "503"]
        );
        assert_eq!(statuses("get", "/healthz"), ["200"]);
        assert_eq!(statuses("get", "/readyz"), ["200", "503"]);
    }

    #[test]
    fn a_created_visit_links_to_minting_reading_and_ending_it() {
        let doc = document();
        let links = &doc["paths"]["/v1/visits"]["post"]["responses"]["201"]["links"];
        for (name, target) in [
            ("MintToken", "mint_token"),
            ("GetVisit", "get_visit"),
            ("EndVisit", "end_visit"),
        ] {
            assert_eq!(links[name]["operationId"], target);
            assert_eq!(links[name]["parameters"]["id"], "$response.body#/id");
        }
        let minted = &doc["paths"]["/v1/visits/{id}/tokens"]["post"]["responses"]["201"]["links"];
        assert_eq!(minted["GetVisit"]["parameters"]["id"], "$request.path.id");
        let got = &doc["paths"]["/v1/visits/{id}"]["get"]["responses"]["200"]["links"];
        assert_eq!(got["EndVisit"]["operationId"], "end_visit");
    }
}
