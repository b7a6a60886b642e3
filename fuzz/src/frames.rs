//! Oracle for the client-frame decoder, shared by the fuzz target `decode_client_frame`
//! and the regression test that replays the committed corpus
//! (crates/protocol/tests/hostile_frames.rs includes this file by path).
//!
//! It panics, which is what a fuzzer and a test both report, when the decoder breaks a
//! promise of docs/protocol.md: every refusal carries one of the documented codes, and a
//! signal's `data` is relayed byte for byte, nested at most 32 levels deep.

use bedside_protocol::{ClientMsg, JoinedExtras, encode};
use bedside_visit::{Notice, Payload};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The `error` codes docs/protocol.md gives for frames the decoder refuses.
pub const DECODE_ERROR_CODES: [&str; 3] = ["invalid_json", "unknown_type", "invalid_message"];

/// Deepest nesting docs/protocol.md allows in a signal's `data`.
pub const MAX_DATA_DEPTH: usize = 32;

/// Checks the decoder on raw frame bytes. Bytes that are not UTF-8 never reach the decoder
/// (the socket closes with 1007 first), so they are checked as the lossy text instead: the
/// decoder must not care what the text holds.
pub fn check_bytes(bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => check_text(text),
        Err(_) => check_text(&String::from_utf8_lossy(bytes)),
    }
}

/// Checks the decoder on one text frame.
pub fn check_text(text: &str) {
    match ClientMsg::decode(text) {
        Err(e) => {
            assert!(
                DECODE_ERROR_CODES.contains(&e.code()),
                "undocumented code {:?} for {text:?}",
                e.code()
            );
            // The message goes back to the client in the `error` frame; formatting it
            // must not panic either.
            let _ = e.to_string();
        }
        Ok(ClientMsg::Signal { to, data }) => check_signal(text, to, data),
        Ok(_) => {}
    }
}

/// The relayed frame, as the receiving peer parses it.
#[derive(Deserialize)]
struct Relayed<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    from: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
}

fn check_signal(text: &str, to: bedside_visit::ParticipantId, data: Payload) {
    let raw = data.get().to_owned();
    assert!(
        text.contains(&raw),
        "data {raw:?} is not a slice of the frame"
    );
    let depth = json_depth(&raw);
    assert!(
        depth <= MAX_DATA_DEPTH,
        "data nested {depth} deep was accepted"
    );
    let frame = encode(
        Notice::Signal { from: to, data },
        &JoinedExtras {
            ice_servers: &[],
            resume_token: "",
        },
    );
    assert_eq!(
        frame,
        format!(r#"{{"type":"signal","from":"{to}","data":{raw}}}"#)
    );
    let relayed: Relayed<'_> = serde_json::from_str(&frame).expect("the relayed frame is JSON");
    assert_eq!(relayed.kind, "signal");
    assert_eq!(relayed.from, to.to_string());
    assert_eq!(relayed.data.get(), raw, "data changed on the way through");
}

/// How deep arrays and objects nest in JSON text, counted independently of the decoder's
/// own (vectorised) scan: one character at a time, minding strings and escapes.
pub fn json_depth(json: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}
