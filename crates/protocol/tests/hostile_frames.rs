//! Hostile client frames against the decoder (`ClientMsg::decode`) and the signal round
//! trip through `protocol::encode`.
//!
//! Property tests (proptest, default case count, so CI stays fast) for what
//! docs/protocol.md promises whatever a client sends: no panic; every refusal is an
//! `error` with a documented code; a signal's `data` is relayed byte for byte; nesting past
//! 32 levels is refused. Then a replay of every committed fuzz input (fuzz/corpus and the
//! crash reproducers in fuzz/regressions) through the fuzzer's own oracle, which this file
//! includes by path so both check exactly the same things.

#[path = "../../../fuzz/src/corpus.rs"]
mod corpus;
#[path = "../../../fuzz/src/frames.rs"]
mod oracle;

use bedside_protocol::{ClientMsg, DecodeError};
use oracle::{DECODE_ERROR_CODES, MAX_DATA_DEPTH, check_bytes, check_text, json_depth};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::path::PathBuf;

const TO: &str = "p_00000000000000ff";

/// The frame types of docs/protocol.md, and a few that are not.
const TYPES: [&str; 14] = [
    "join",
    "signal",
    "admit",
    "deny",
    "remove",
    "chat",
    "media",
    "leave",
    "end_visit",
    "ping",
    "",
    "JOIN",
    "pong",
    "signal\n",
];

/// Every field any client frame has.
const FIELDS: [&str; 12] = [
    "type",
    "token",
    "resume_token",
    "to",
    "data",
    "participant_id",
    "reason",
    "text",
    "audio",
    "video",
    "screen",
    "unknown",
];

/// Any JSON value, as a tree.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        Just(Value::String(TO.into())),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Frames shaped like the protocol's, with fields of any JSON type, sometimes cut short or
/// with a stray character inserted.
fn json_shaped() -> impl Strategy<Value = String> {
    let field = (prop::sample::select(&FIELDS[..]), any_json());
    (
        prop::sample::select(&TYPES[..]),
        prop::collection::vec(field, 0..6),
        any::<u8>(),
        any::<prop::sample::Index>(),
        any::<char>(),
    )
        .prop_map(|(kind, fields, damage, at, stray)| {
            let mut frame = Map::new();
            frame.insert("type".into(), Value::String(kind.into()));
            for (name, value) in fields {
                frame.insert(name.into(), value);
            }
            let text = Value::Object(frame).to_string();
            let chars: Vec<char> = text.chars().collect();
            let at = at.index(chars.len());
            match damage % 4 {
                0 => chars[..at].iter().collect(),
                1 => chars[..at]
                    .iter()
                    .chain(Some(&stray))
                    .chain(&chars[at..])
                    .collect(),
                _ => text,
            }
        })
}

/// Optional JSON whitespace.
fn ws() -> impl Strategy<Value = String> {
    "[ \t\r\n]{0,2}"
}

/// A JSON string literal as a client might write it: raw Unicode, short escapes, `\u`
/// escapes and surrogate pairs.
fn json_string() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        any::<char>()
            .prop_filter("raw control characters are not JSON", |c| {
                !matches!(c, '\u{0}'..='\u{1f}' | '"' | '\\')
            })
            .prop_map(String::from),
        prop::sample::select(&["\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"][..])
            .prop_map(String::from),
        any::<char>().prop_map(|c| {
            let mut units = [0u16; 2];
            c.encode_utf16(&mut units)
                .iter()
                .map(|u| format!("\\u{u:04X}"))
                .collect()
        }),
    ];
    prop::collection::vec(part, 0..8).prop_map(|parts| format!("\"{}\"", parts.concat()))
}

/// JSON text in any of the ways it may be written (whitespace, number forms, escapes),
/// nested at most 5 deep.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,8})?([eE][+-]?[0-9]{1,3})?",
        json_string(),
    ];
    leaf.prop_recursive(5, 48, 4, |inner| {
        let member = (ws(), json_string(), ws(), ws(), inner.clone(), ws())
            .prop_map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"));
        prop_oneof![
            (prop::collection::vec((ws(), inner, ws()), 0..4), ws()).prop_map(|(items, pad)| {
                let items: Vec<String> = items
                    .into_iter()
                    .map(|(a, v, b)| format!("{a}{v}{b}"))
                    .collect();
                if items.is_empty() {
                    format!("[{pad}]")
                } else {
                    format!("[{}]", items.join(","))
                }
            }),
            (prop::collection::vec(member, 0..4), ws()).prop_map(|(members, pad)| {
                if members.is_empty() {
                    format!("{{{pad}}}")
                } else {
                    format!("{{{}}}", members.join(","))
                }
            }),
        ]
    })
}

/// `data` nested `depth` levels deep, mixing arrays and objects as `shape` says.
fn nested(depth: usize, shape: u64) -> String {
    let mut open = String::new();
    let mut close = Vec::new();
    for level in 0..depth {
        if shape.rotate_left(level as u32) & 1 == 0 {
            open.push('[');
            close.push(']');
        } else {
            open.push_str(r#"{"k":"#);
            close.push('}');
        }
    }
    let close: String = close.into_iter().rev().collect();
    format!("{open}1{close}")
}

fn signal(data: &str) -> String {
    format!(r#"{{"type":"signal","to":"{TO}","data":{data}}}"#)
}

fn code_of(frame: &str) -> Option<&'static str> {
    ClientMsg::decode(frame).err().map(|e| e.code())
}

proptest! {
    #[test]
    fn decode_never_panics_on_arbitrary_strings(text in any::<String>()) {
        check_text(&text);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_bytes(&bytes);
    }

    #[test]
    fn decode_never_panics_on_json_shaped_frames(frame in json_shaped()) {
        // check_text asserts that every refusal carries a documented code.
        check_text(&frame);
        if let Err(e) = ClientMsg::decode(&frame) {
            prop_assert!(DECODE_ERROR_CODES.contains(&e.code()));
        }
    }

    #[test]
    fn well_formed_frames_of_every_type_decode(
        pick in 0usize..10,
        text in any::<String>(),
        flags in any::<(bool, bool, bool)>(),
        extra in any_json(),
    ) {
        let (a, b, c) = flags;
        let frame = match pick {
            0 => json!({"type": "join", "token": text}),
            1 => json!({"type": "join", "resume_token": text}),
            // A `null` data counts as missing (see below).
            2 => json!({"type": "signal", "to": TO, "data": if extra.is_null() { json!({}) } else { extra }}),
            3 => json!({"type": "admit", "participant_id": TO}),
            4 => json!({"type": "deny", "participant_id": TO, "reason": text}),
            5 => json!({"type": "remove", "participant_id": TO}),
            6 => json!({"type": "chat", "text": text}),
            7 => json!({"type": "media", "audio": a, "video": b, "screen": c}),
            8 => json!({"type": "leave", "unknown": extra}),
            _ => json!({"type": "ping"}),
        };
        let frame = frame.to_string();
        let decoded = ClientMsg::decode(&frame);
        prop_assert!(decoded.is_ok(), "{frame} refused: {decoded:?}");
        check_text(&frame);
    }

    #[test]
    fn signal_data_survives_decode_and_encode_byte_for_byte(
        data in json_text().prop_filter("a null data counts as missing", |d| d != "null"),
        (a, b, c) in (ws(), ws(), ws()),
    ) {
        let frame = format!(r#"{{"type":"signal",{a}"to":"{TO}",{b}"data":{c}{data}{a}}}"#);
        match ClientMsg::decode(&frame) {
            Ok(ClientMsg::Signal { data: raw, .. }) => prop_assert_eq!(raw.get(), data.as_str()),
            other => prop_assert!(false, "{frame} decoded to {other:?}"),
        }
        // Same bytes out of `encode`, and a relayed frame the peer can parse.
        check_text(&frame);
    }

    #[test]
    fn nesting_within_the_limit_is_relayed(depth in 1..=MAX_DATA_DEPTH, shape in any::<u64>()) {
        let data = nested(depth, shape);
        prop_assert_eq!(json_depth(&data), depth);
        prop_assert!(ClientMsg::decode(&signal(&data)).is_ok());
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused(
        depth in MAX_DATA_DEPTH + 1..=12_000,
        shape in any::<u64>(),
    ) {
        let code = code_of(&signal(&nested(depth, shape)));
        prop_assert!(
            matches!(code, Some("invalid_message" | "invalid_json")),
            "{depth} deep: {code:?}"
        );
    }
}

#[test]
fn json_nested_ten_thousand_deep_is_refused_in_every_field() {
    for deep in [
        nested(10_000, 0),
        nested(10_000, u64::MAX),
        nested(10_000, 0xAAAA),
    ] {
        assert!(
            matches!(
                ClientMsg::decode(&signal(&deep)),
                Err(DecodeError::InvalidJson(_) | DecodeError::InvalidField("data"))
            ),
            "a signal's data"
        );
        for frame in [
            format!(r#"{{"type":"chat","text":{deep}}}"#),
            format!(r#"{{"type":{deep}}}"#),
            deep.clone(),
        ] {
            let code = code_of(&frame);
            assert!(
                matches!(code, Some("invalid_json" | "invalid_message")),
                "{}: {code:?}",
                &frame[..40]
            );
        }
        // Unknown fields are skipped without recursing, so depth there costs nothing.
        let ping = format!(r#"{{"type":"ping","unknown":{deep}}}"#);
        assert!(matches!(ClientMsg::decode(&ping), Ok(ClientMsg::Ping)));
    }
}

#[test]
fn a_null_data_is_refused_as_missing() {
    // Every JSON value is relayed as is except a bare `null`, which serde reads as an
    // absent field. Browsers' end-of-candidates is a `null` candidate; the web client
    // wraps candidates in an object, so it never sends one bare.
    assert_eq!(
        ClientMsg::decode(&signal("null")).unwrap_err(),
        DecodeError::MissingField("data")
    );
    assert!(ClientMsg::decode(&signal(r#"{"candidate":null}"#)).is_ok());
    assert!(ClientMsg::decode(&signal("[null]")).is_ok());
}

#[test]
fn a_one_mib_sdp_decodes_in_one_pass() {
    // The socket refuses anything over 64 KiB before the decoder sees it; the decoder
    // itself must still handle a megabyte linearly and keep it byte for byte.
    let line = "a=candidate:1 1 udp 2122260223 192.0.2.1 5000 typ host\\r\\n";
    let sdp = line.repeat((1 << 20) / line.len() + 1);
    assert!(sdp.len() > 1024 * 1024);
    let data = format!(r#"{{"type":"offer","sdp":"{sdp}"}}"#);
    let started = std::time::Instant::now();
    match ClientMsg::decode(&signal(&data)) {
        Ok(ClientMsg::Signal { data: raw, .. }) => assert_eq!(raw.get(), data),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    check_text(&signal(&data));
}

#[test]
fn control_characters_and_newlines_stay_inside_json_strings() {
    let frame = json!({"type": "chat", "text": "hi\nINFO bedside: forged\r\u{1b}[31m\u{7}\u{0}"})
        .to_string();
    match ClientMsg::decode(&frame) {
        Ok(ClientMsg::Chat { text }) => assert!(text.contains('\n')),
        other => panic!("{other:?}"),
    }
    // An unknown type with a newline is refused, and the message names it escaped.
    let refused = ClientMsg::decode(r#"{"type":"x\nINFO bedside: forged"}"#).unwrap_err();
    assert_eq!(refused.code(), "unknown_type");
    assert!(!refused.to_string().contains('\n'), "{refused}");
}

/// Every committed input of `target` (fuzz/corpus and fuzz/regressions), with its path.
fn committed_inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    corpus::committed_inputs(&fuzz, target)
}

#[test]
fn every_committed_fuzz_input_replays_cleanly() {
    let inputs = committed_inputs("decode_client_frame");
    assert!(
        inputs.len() >= 10,
        "the committed corpus is missing: fuzz/corpus/decode_client_frame"
    );
    for (path, bytes) in inputs {
        let outcome = std::panic::catch_unwind(|| check_bytes(&bytes));
        assert!(outcome.is_ok(), "{} fails the oracle", path.display());
    }
}
