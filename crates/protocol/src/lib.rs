//! The frames of the WebSocket protocol (docs/protocol.md), as Rust types.
//!
//! Client frames are decoded in one pass into a flat envelope that borrows from the text,
//! so a signal's `data` is captured as raw JSON and relayed byte for byte without ever
//! being parsed into a tree: it is copied once, straight into the frame its peer will
//! receive (see [`encode`]). Server frames serialize from borrowed views of the visit's
//! notices.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use bedside_auth::Role;
use bedside_visit::quality::{Precheck, Quality, Reason, ReportError, StatsReport};
use bedside_visit::{
    Actor, ConnId, EndReason, Input, LeaveReason, LobbyEntry, MediaState, Notice, ParticipantId,
    ParticipantView, Payload, Presence, QueueEntry, Standing, Target, VisitId, VisitSummary,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::ops::Range;

/// A frame from a client.
#[derive(Debug)]
pub enum ClientMsg {
    Join {
        token: Option<String>,
        resume_token: Option<String>,
    },
    Signal {
        to: ParticipantId,
        /// Valid JSON, held inside the frame it will be relayed in.
        data: Payload,
    },
    Admit {
        participant_id: ParticipantId,
    },
    Deny {
        participant_id: ParticipantId,
        reason: Option<String>,
    },
    /// Doctor only: take a participant out of the visit.
    Remove {
        participant_id: ParticipantId,
    },
    Chat {
        text: String,
    },
    Media(MediaState),
    /// The sender's browser's statistics of its peer connections (docs/quality.md).
    Stats(StatsReport),
    /// The result of the sender's pre-call check.
    Precheck(Precheck),
    Leave,
    EndVisit,
    Ping,
    /// A patient or guest agrees to the consent text of this version.
    Consent {
        version: String,
    },
    /// Provider's dashboard: how they show to their waiting patients.
    Presence {
        status: Presence,
    },
    /// Provider's dashboard: a message to the waiting room of one visit, or of all theirs.
    Notify {
        visit_id: Option<VisitId>,
        text: String,
    },
    /// Provider's dashboard: a doctor token to see a visit's patient.
    Take {
        visit_id: VisitId,
    },
    /// A doctor asks for a guest link from the call.
    Invite {
        role: String,
        name: String,
    },
}

/// Why a client frame was not understood. The connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    #[error("field {0} is missing")]
    MissingField(&'static str),
    #[error("field {0} is invalid")]
    InvalidField(&'static str),
    /// A `stats` or `precheck` frame whose values break a rule; the message names the field.
    #[error("{0}")]
    Report(ReportError),
}

/// The longest client text an `error` frame repeats: serde quotes the offending value
/// whole, and a 60 KB frame must not come back as a 200 KB error.
const MAX_ECHO_CHARS: usize = 120;

/// `text` cut to [`MAX_ECHO_CHARS`] characters, marked when cut.
fn clip(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(MAX_ECHO_CHARS) {
        text.truncate(at);
        text.push('…');
    }
    text
}

impl DecodeError {
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::InvalidJson(_) => "invalid_json",
            DecodeError::UnknownType(_) => "unknown_type",
            DecodeError::MissingField(_) | DecodeError::InvalidField(_) => "invalid_message",
            DecodeError::Report(e) => e.code(),
        }
    }
}

/// Every field any client frame has; unknown fields are ignored.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    token: Option<String>,
    resume_token: Option<String>,
    #[serde(borrow)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    participant_id: Option<Cow<'a, str>>,
    reason: Option<String>,
    text: Option<String>,
    audio: Option<bool>,
    video: Option<bool>,
    screen: Option<bool>,
    version: Option<String>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow)]
    visit_id: Option<Cow<'a, str>>,
    // Read as raw JSON and typed only for `invite`: other frames (a join, a chat...) that
    // happen to carry a `role` or `name` of another type are not refused for it.
    #[serde(borrow)]
    role: Option<&'a RawValue>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
}

/// A string field read from raw JSON; another type is `invalid_message`.
fn string_field(raw: Option<&RawValue>, field: &'static str) -> Result<String, DecodeError> {
    let raw = raw.ok_or(DecodeError::MissingField(field))?;
    serde_json::from_str(raw.get()).map_err(|_| DecodeError::InvalidField(field))
}

/// Deepest nesting a signal's `data` may have. SDP and ICE payloads are two or three
/// levels deep; the limit keeps peers' parsers safe from pathological input we relay.
const MAX_DATA_DEPTH: usize = 32;

/// Whether JSON text (already known to be valid) nests at most `max` arrays/objects deep.
/// Strings, where SDP lives and most of the bytes are, are skipped with a vectorised search.
fn nesting_within(json: &str, max: usize) -> bool {
    let bytes = json.as_bytes();
    // Text with no more than `max` opening brackets, in strings or not, cannot nest deeper:
    // real payloads (SDP, candidates) have a handful, and one vectorised count settles them.
    if memchr::memchr2_iter(b'[', b'{', bytes).nth(max).is_none() {
        return true;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Find the closing quote, stepping over escapes.
                let mut j = i + 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', bytes.get(j..).unwrap_or_default()) {
                        Some(k) if bytes[j + k] == b'\\' => j += k + 2,
                        Some(k) => {
                            j += k;
                            break;
                        }
                        None => return true,
                    }
                }
                i = j;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    true
}

fn participant(
    field: Option<Cow<'_, str>>,
    name: &'static str,
) -> Result<ParticipantId, DecodeError> {
    field
        .ok_or(DecodeError::MissingField(name))?
        .parse()
        .map_err(|_| DecodeError::InvalidField(name))
}

impl ClientMsg {
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        Self::decode_from(text, None)
    }

    /// As [`decode`](Self::decode), for a frame from a known participant: a signal's
    /// `data` is framed for its peer with `from` already written in.
    pub fn decode_from(text: &str, sender: Option<ParticipantId>) -> Result<Self, DecodeError> {
        let e: Envelope<'_> = serde_json::from_str(text)
            .map_err(|e| DecodeError::InvalidJson(clip(e.to_string())))?;
        let kind = e.kind.ok_or(DecodeError::MissingField("type"))?;
        Ok(match &*kind {
            "join" => {
                if e.token.is_none() && e.resume_token.is_none() {
                    return Err(DecodeError::MissingField("token"));
                }
                ClientMsg::Join {
                    token: e.token,
                    resume_token: e.resume_token,
                }
            }
            "signal" => {
                let data = e.data.ok_or(DecodeError::MissingField("data"))?;
                let to = participant(e.to, "to")?;
                if !nesting_within(data.get(), MAX_DATA_DEPTH) {
                    return Err(DecodeError::InvalidField("data"));
                }
                ClientMsg::Signal {
                    to,
                    data: framed(data.get(), sender),
                }
            }
            "admit" => ClientMsg::Admit {
                participant_id: participant(e.participant_id, "participant_id")?,
            },
            "deny" => ClientMsg::Deny {
                participant_id: participant(e.participant_id, "participant_id")?,
                reason: e.reason,
            },
            "remove" => ClientMsg::Remove {
                participant_id: participant(e.participant_id, "participant_id")?,
            },
            "chat" => ClientMsg::Chat {
                text: e.text.ok_or(DecodeError::MissingField("text"))?,
            },
            "media" => ClientMsg::Media(MediaState {
                audio: e.audio.ok_or(DecodeError::MissingField("audio"))?,
                video: e.video.ok_or(DecodeError::MissingField("video"))?,
                screen: e.screen.unwrap_or(false),
            }),
            // Read a second time, whole: rare frames (one per participant every few seconds),
            // kept off the envelope that every signal goes through.
            "stats" => ClientMsg::Stats(StatsReport::parse(text).map_err(DecodeError::Report)?),
            "precheck" => ClientMsg::Precheck(Precheck::parse(text).map_err(DecodeError::Report)?),
            "consent" => ClientMsg::Consent {
                version: e.version.ok_or(DecodeError::MissingField("version"))?,
            },
            "presence" => ClientMsg::Presence {
                status: e
                    .status
                    .ok_or(DecodeError::MissingField("status"))?
                    .parse()
                    .map_err(|_| DecodeError::InvalidField("status"))?,
            },
            "notify" => ClientMsg::Notify {
                visit_id: e
                    .visit_id
                    .map(|v| v.parse().map_err(|_| DecodeError::InvalidField("visit_id")))
                    .transpose()?,
                text: e.text.ok_or(DecodeError::MissingField("text"))?,
            },
            "take" => ClientMsg::Take {
                visit_id: e
                    .visit_id
                    .ok_or(DecodeError::MissingField("visit_id"))?
                    .parse()
                    .map_err(|_| DecodeError::InvalidField("visit_id"))?,
            },
            "invite" => ClientMsg::Invite {
                role: string_field(e.role, "role")?,
                name: string_field(e.name, "name")?,
            },
            "leave" => ClientMsg::Leave,
            "end_visit" => ClientMsg::EndVisit,
            "ping" => ClientMsg::Ping,
            other => return Err(DecodeError::UnknownType(other.chars().take(32).collect())),
        })
    }
}

/// The start of a `signal` frame to a peer, up to its `data`, with a placeholder for `from`.
const SIGNAL_HEAD: &str = r#"{"type":"signal","from":"p_0000000000000000","data":"#;
/// Where the placeholder for `from` is in [`SIGNAL_HEAD`].
const SIGNAL_FROM: Range<usize> = 25..43;

/// `{"type":"signal","from":FROM,"data":DATA}` in a buffer allocated at its final size
/// (for an 18-character `from`, as every participant id is), which lets the socket take it
/// without another allocation (`Bytes` keeps a vector whose length is its capacity).
fn signal_text(from: &str, data: &str) -> String {
    let mut frame = String::with_capacity(SIGNAL_HEAD.len() + data.len() + 1);
    frame.push_str(&SIGNAL_HEAD[..SIGNAL_FROM.start]);
    frame.push_str(from);
    frame.push_str(&SIGNAL_HEAD[SIGNAL_FROM.end..]);
    frame.push_str(data);
    frame.push('}');
    frame
}

/// A signal's `data`, copied into the frame its peer will receive, with the sender's id
/// when known (else the placeholder, which [`encode`] writes over): a relayed payload is
/// copied once, not twice.
fn framed(data: &str, sender: Option<ParticipantId>) -> Payload {
    let id = sender.map(ParticipantId::text);
    let from = id
        .as_ref()
        .and_then(|id| std::str::from_utf8(id).ok())
        .unwrap_or(&SIGNAL_HEAD[SIGNAL_FROM]);
    let json = SIGNAL_HEAD.len()..SIGNAL_HEAD.len() + data.len();
    Payload::within(signal_text(from, data), json).unwrap_or_else(|| Payload::new(data.to_owned()))
}

/// The `signal` frame for a peer: the buffer [`framed`] made, with `from` written in if it
/// is not there yet, or for a payload held some other way, a frame built around it.
fn signal_frame(from: ParticipantId, data: Payload) -> String {
    let id = from.text();
    let id = std::str::from_utf8(&id).unwrap_or_default();
    let (mut buf, json) = data.into_parts();
    let is_framed = json.start == SIGNAL_HEAD.len()
        && json.end + 1 == buf.len()
        && buf.ends_with('}')
        && buf.get(..SIGNAL_FROM.start) == SIGNAL_HEAD.get(..SIGNAL_FROM.start)
        && buf.get(SIGNAL_FROM.end..json.start) == SIGNAL_HEAD.get(SIGNAL_FROM.end..);
    if !is_framed || id.len() != SIGNAL_FROM.len() {
        return signal_text(id, buf.get(json).unwrap_or_default());
    }
    if buf.get(SIGNAL_FROM) != Some(id) {
        buf.replace_range(SIGNAL_FROM, id);
    }
    buf
}

/// A STUN or TURN server as browsers' `RTCIceServer` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A frame to a client. `signal {from, data}` is not here: [`encode`] writes it directly,
/// around the buffer its `data` was copied into.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    Joined {
        participant_id: ParticipantId,
        role: Role,
        visit: &'a VisitSummary,
        ice_servers: &'a [IceServer],
        resume_token: &'a str,
    },
    /// `ice_servers`: STUN and at most a probe credential (docs/nat-traversal.md).
    Waiting {
        #[serde(flatten)]
        standing: &'a Standing,
        ice_servers: &'a [IceServer],
    },
    ConsentRequired {
        version: &'a str,
        text: &'a str,
    },
    ProviderMessage {
        text: &'a str,
        at: DateTime<Utc>,
    },
    /// The first frame of a provider's dashboard.
    #[serde(rename = "joined")]
    DashboardJoined {
        role: &'a str,
        provider: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
    },
    /// A provider's queue, with how they show and what they chose.
    Queue {
        entries: &'a [QueueEntry],
        #[serde(skip_serializing_if = "Option::is_none")]
        presence: Option<Presence>,
        chosen: Presence,
    },
    /// The answer to a doctor's `invite`: a guest link for this visit.
    InviteLink {
        token: &'a str,
        join_url: &'a str,
        expires_at: DateTime<Utc>,
        name: &'a str,
    },
    /// The answer to `take`.
    VisitToken {
        visit_id: VisitId,
        token: &'a str,
        expires_at: DateTime<Utc>,
    },
    Lobby {
        waiting: &'a [LobbyEntry],
    },
    /// `ice_servers`: the call's full list, which replaces the one from `joined`.
    Admitted {
        participants: &'a [ParticipantView],
        ice_servers: &'a [IceServer],
    },
    ParticipantJoined {
        participant: &'a ParticipantView,
    },
    ParticipantLeft {
        participant_id: ParticipantId,
        reason: LeaveReason,
    },
    ParticipantUpdated {
        participant: &'a ParticipantView,
    },
    Chat {
        from: ParticipantId,
        text: &'a str,
        at: DateTime<Utc>,
    },
    Denied {
        reason: &'a str,
    },
    VisitExpiring {
        expires_at: DateTime<Utc>,
    },
    VisitEnded {
        reason: EndReason,
    },
    /// Your own connection's quality class changed.
    Quality {
        quality: Quality,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<Reason>,
    },
    Error {
        code: &'a str,
        message: &'a str,
    },
    Pong {},
}

impl ServerMsg<'_> {
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys, no custom errors.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"encoding failed"}"#.to_owned()
        })
    }
}

/// What the connection adds to a notice: `ice_servers` to `joined`, `waiting` and
/// `admitted`, the resume token to `joined`.
pub struct JoinedExtras<'a> {
    pub ice_servers: &'a [IceServer],
    pub resume_token: &'a str,
}

/// What a joined connection's frame asks of its visit, or the frame to answer it with at
/// once (`pong`, or an `error`). Used where the connection is, and again on the visit's
/// owner node for a participant connected elsewhere.
///
/// `sender`: the participant the frame comes from, when known (see
/// [`ClientMsg::decode_from`]).
pub fn input_of(text: &str, conn: ConnId, sender: Option<ParticipantId>) -> Result<Input, String> {
    Ok(match ClientMsg::decode_from(text, sender) {
        Err(e) => return Err(error_frame(e.code(), &e.to_string())),
        Ok(ClientMsg::Join { .. }) => {
            return Err(error_frame("already_joined", "this connection has joined"));
        }
        Ok(ClientMsg::Ping) => return Err(ServerMsg::Pong {}.to_json()),
        Ok(ClientMsg::Signal { to, data }) => Input::Signal { conn, to, data },
        Ok(ClientMsg::Admit { participant_id }) => Input::Admit {
            conn,
            target: participant_id,
        },
        Ok(ClientMsg::Deny {
            participant_id,
            reason,
        }) => Input::Deny {
            conn,
            target: participant_id,
            reason,
        },
        Ok(ClientMsg::Remove { participant_id }) => Input::Remove {
            by: Actor::Conn(conn),
            target: Target::Id(participant_id),
        },
        Ok(ClientMsg::Chat { text }) => Input::Chat { conn, text },
        Ok(ClientMsg::Media(media)) => Input::Media { conn, media },
        Ok(ClientMsg::Stats(report)) => Input::Stats { conn, report },
        Ok(ClientMsg::Precheck(precheck)) => Input::Precheck { conn, precheck },
        Ok(ClientMsg::Leave) => Input::Leave { conn },
        Ok(ClientMsg::EndVisit) => Input::End {
            by: Actor::Conn(conn),
        },
        Ok(ClientMsg::Consent { version }) => Input::Consent { conn, version },
        Ok(ClientMsg::Invite { role, name }) => Input::Invite { conn, role, name },
        Ok(ClientMsg::Presence { .. } | ClientMsg::Notify { .. } | ClientMsg::Take { .. }) => {
            return Err(error_frame(
                "not_provider",
                "only a provider's dashboard sends this frame",
            ));
        }
    })
}

/// An `error` frame.
pub fn error_frame(code: &str, message: &str) -> String {
    ServerMsg::Error { code, message }.to_json()
}

/// Encodes a visit's notice as a frame.
pub fn encode(notice: Notice, extras: &JoinedExtras<'_>) -> String {
    // The relay's hot path, written directly: the same bytes serde would produce (ids are
    // plain ASCII and `data` is already valid JSON), without its machinery or a copy.
    if let Notice::Signal { from, data } = notice {
        return signal_frame(from, data);
    }
    let msg = match &notice {
        Notice::Joined {
            participant_id,
            role,
            visit,
        } => ServerMsg::Joined {
            participant_id: *participant_id,
            role: *role,
            visit,
            ice_servers: extras.ice_servers,
            resume_token: extras.resume_token,
        },
        Notice::Waiting(standing) => ServerMsg::Waiting {
            standing,
            ice_servers: extras.ice_servers,
        },
        Notice::ConsentRequired { version, text } => ServerMsg::ConsentRequired { version, text },
        Notice::ProviderMessage { text, at } => ServerMsg::ProviderMessage { text, at: *at },
        Notice::Lobby { waiting } => ServerMsg::Lobby { waiting },
        Notice::Admitted { participants } => ServerMsg::Admitted {
            participants,
            ice_servers: extras.ice_servers,
        },
        Notice::ParticipantJoined { participant } => ServerMsg::ParticipantJoined { participant },
        Notice::ParticipantLeft {
            participant_id,
            reason,
        } => ServerMsg::ParticipantLeft {
            participant_id: *participant_id,
            reason: *reason,
        },
        Notice::ParticipantUpdated { participant } => ServerMsg::ParticipantUpdated { participant },
        // Taken above; kept so the match stays exhaustive.
        Notice::Signal { from, data } => return signal_frame(*from, data.clone()),
        Notice::Chat { from, text, at } => ServerMsg::Chat {
            from: *from,
            text,
            at: *at,
        },
        Notice::Denied { reason } => ServerMsg::Denied { reason },
        Notice::VisitExpiring { expires_at } => ServerMsg::VisitExpiring {
            expires_at: *expires_at,
        },
        Notice::VisitEnded { reason } => ServerMsg::VisitEnded { reason: *reason },
        Notice::Quality { quality, reason } => ServerMsg::Quality {
            quality: *quality,
            reason: *reason,
        },
        Notice::InviteLink(link) => ServerMsg::InviteLink {
            token: &link.token,
            join_url: &link.join_url,
            expires_at: link.expires_at,
            name: &link.name,
        },
    };
    msg.to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_data_is_kept_byte_for_byte() {
        let data = r#"{"sdp" : "v=0\r\n",  "n":1.50e0, "é":[{}]}"#;
        let frame = format!(r#"{{"type":"signal","to":"p_00000000000000ff","data":{data}}}"#);
        let ClientMsg::Signal { to, data: raw } = ClientMsg::decode(&frame).unwrap() else {
            panic!()
        };
        assert_eq!(to.to_string(), "p_00000000000000ff");
        assert_eq!(raw.get(), data);
        let extras = JoinedExtras {
            ice_servers: &[],
            resume_token: "",
        };
        let from = ParticipantId::from_bits(0x0123_4567_89ab_cdef);
        let expected = format!(r#"{{"type":"signal","from":"p_0123456789abcdef","data":{data}}}"#);
        // As relayed: the payload was framed by decode, and goes out in that same buffer,
        // at its exact size (the socket keeps it without another allocation).
        let out = encode(Notice::Signal { from, data: raw }, &extras);
        assert_eq!(out, expected);
        assert_eq!(out.capacity(), out.len());
        // Framed for a known sender, the same bytes; framed for another (a participant's
        // place changed hands), `from` is still the one the visit names.
        for sender in [from, ParticipantId::from_bits(7)] {
            let Ok(ClientMsg::Signal { data, .. }) = ClientMsg::decode_from(&frame, Some(sender))
            else {
                panic!()
            };
            assert_eq!(encode(Notice::Signal { from, data }, &extras), expected);
        }
        // Held any other way, the payload is framed when encoded: the same bytes.
        let held = Payload::new(data.to_owned());
        assert_eq!(
            encode(Notice::Signal { from, data: held }, &extras),
            expected
        );
        let inside = Payload::within(format!("xx{data}yy"), 2..2 + data.len()).unwrap();
        assert_eq!(
            encode(Notice::Signal { from, data: inside }, &extras),
            expected
        );
        // And it is what serde makes of the frame.
        let parsed: serde_json::Value = serde_json::from_str(&expected).unwrap();
        assert_eq!(parsed["from"], "p_0123456789abcdef");
        assert_eq!(parsed["data"]["é"], serde_json::json!([{}]));
    }

    #[test]
    fn a_payload_of_many_brackets_is_still_measured_for_depth() {
        // More than MAX_DATA_DEPTH brackets in all, but shallow: accepted.
        let wide = format!(r#"{{"a":[{}]}}"#, vec!["[]"; 100].join(","));
        let frame = format!(r#"{{"type":"signal","to":"p_00000000000000ff","data":{wide}}}"#);
        assert!(ClientMsg::decode(&frame).is_ok());
        // Exactly MAX_DATA_DEPTH deep is allowed, one more is not.
        let nest = |n: usize| {
            format!(
                r#"{{"type":"signal","to":"p_00000000000000ff","data":{}{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(ClientMsg::decode(&nest(MAX_DATA_DEPTH)).is_ok());
        assert_eq!(
            ClientMsg::decode(&nest(MAX_DATA_DEPTH + 1)).unwrap_err(),
            DecodeError::InvalidField("data")
        );
    }

    #[test]
    fn bad_frames_are_named() {
        let cases = [
            ("not json", "invalid_json"),
            ("[1,2]", "invalid_json"),
            (r#"{"to":"x"}"#, "invalid_message"),
            (r#"{"type":"shout"}"#, "unknown_type"),
            (
                r#"{"type":"signal","to":"p_00000000000000ff"}"#,
                "invalid_message",
            ),
            (
                r#"{"type":"signal","to":"nobody","data":{}}"#,
                "invalid_message",
            ),
            (r#"{"type":"admit"}"#, "invalid_message"),
            (r#"{"type":"chat","text":5}"#, "invalid_json"),
            (r#"{"type":"join"}"#, "invalid_message"),
            (r#"{"type":"media","audio":true}"#, "invalid_message"),
        ];
        for (frame, code) in cases {
            assert_eq!(
                ClientMsg::decode(frame).unwrap_err().code(),
                code,
                "{frame}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!(
            r#"{{"type":"signal","to":"p_00000000000000ff","data":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(matches!(
            ClientMsg::decode(&deep),
            Err(DecodeError::InvalidJson(_) | DecodeError::InvalidField("data"))
        ));
        let brackets_in_strings = r#"{"type":"signal","to":"p_00000000000000ff","data":{"sdp":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{"}}"#;
        assert!(ClientMsg::decode(brackets_in_strings).is_ok());
        let deep_object = format!(
            r#"{{"type":"signal","to":"p_00000000000000ff","data":{}1{}}}"#,
            r#"{"a":"#.repeat(40),
            "}".repeat(40)
        );
        assert_eq!(
            ClientMsg::decode(&deep_object).unwrap_err(),
            DecodeError::InvalidField("data")
        );
    }
    #[test]
    fn an_error_repeats_at_most_a_short_piece_of_the_frame() {
        // serde quotes a wrongly typed string whole: this 40 KB frame would come back as a
        // 120 KB error, each U+0085 escaped to six characters.
        let frame = format!(
            r#"{{"type":"media","audio":"{}","video":true}}"#,
            "\u{85}".repeat(20_000)
        );
        let e = ClientMsg::decode(&frame).unwrap_err();
        assert_eq!(e.code(), "invalid_json");
        let text = e.to_string();
        assert!(
            text.chars().count() <= 160,
            "{} chars",
            text.chars().count()
        );
        assert!(text.ends_with('…'));
        // Short messages are kept whole.
        let short = ClientMsg::decode("not json").unwrap_err().to_string();
        assert!(!short.ends_with('…'), "{short}");
    }
}
