//! Typed identifiers. Visit and participant ids are random, so they reveal nothing about
//! how many visits exist or who joined when; they are what logs and the audit trail name.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A visit: a random (v4) UUID, 122 random bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
pub struct VisitId(Uuid);

impl VisitId {
    /// The id of a visit whose UUID the caller drew (`bedside_rooms::RandomId` draws v4
    /// UUIDs); this crate does no IO, randomness included.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl FromStr for VisitId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s).map(Self)
    }
}

impl fmt::Display for VisitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

/// A participant within a visit: 64 random bits, shown as `p_` and 16 hex digits. It is
/// the pseudonym other participants, logs and the audit trail know them by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(u64);

impl ParticipantId {
    /// The id with these 64 bits; the caller draws them at random.
    pub fn from_bits(bits: u64) -> Self {
        Self(bits)
    }
}

impl ParticipantId {
    /// `p_` and 16 lowercase hex digits, as ASCII, without the formatting machinery: ids are
    /// written into every relayed frame.
    pub fn text(self) -> [u8; 18] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = *b"p_0000000000000000";
        for (pair, byte) in out[2..].chunks_exact_mut(2).zip(self.0.to_be_bytes()) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xf)];
        }
        out
    }
}

impl ParticipantId {
    /// Appends the id's text to `out`, without an allocation of its own.
    pub fn push_to(self, out: &mut String) {
        out.push_str(std::str::from_utf8(&self.text()).unwrap_or_default());
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text();
        // Only ASCII hex digits and `p_` are ever written.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

/// Why a string is not a participant id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a participant id")]
pub struct BadParticipantId;

impl FromStr for ParticipantId {
    type Err = BadParticipantId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix("p_")
            .filter(|h| h.len() == 16)
            .ok_or(BadParticipantId)?;
        // By hand, not `u64::from_str_radix`: every relayed signal names its target, and
        // the generic parser (signs, overflow checks, any radix) cost three times as much.
        // Both cases of hex digits are read, as `from_str_radix` does.
        hex.bytes()
            .try_fold(0u64, |bits, c| {
                let digit = match c {
                    b'0'..=b'9' => c - b'0',
                    b'a'..=b'f' => c - b'a' + 10,
                    b'A'..=b'F' => c - b'A' + 10,
                    _ => return None,
                };
                Some(bits << 4 | u64::from(digit))
            })
            .map(Self)
            .ok_or(BadParticipantId)
    }
}

impl Serialize for ParticipantId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.text();
        s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for ParticipantId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ParticipantId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .examples([serde_json::json!("p_3f9c2a7d10b4e865")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ParticipantId {}

/// A provider: the clinic's opaque identity of a clinician, whose queue a visit is in. Scoped
/// to the tenant (a provider of one clinic is unknown to another) and checked like a
/// participant's identity: 1-128 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
pub struct ProviderId(String);

/// Why a string is not a provider id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider {0}")]
pub struct BadProviderId(&'static str);

impl ProviderId {
    pub fn new(id: impl Into<String>) -> Result<Self, BadProviderId> {
        let id = id.into();
        bedside_auth::check_identity(&id).map_err(BadProviderId)?;
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProviderId {
    type Error = BadProviderId;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl From<ProviderId> for String {
    fn from(id: ProviderId) -> Self {
        id.0
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One WebSocket connection on this node. Never leaves the process; numbered by the
/// process (`bedside_rooms::NextConnId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    pub fn from_raw(n: u64) -> Self {
        Self(n)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_ids_round_trip_through_text() {
        assert_eq!(
            ParticipantId(0x0123_4567_89ab_cdef).to_string(),
            "p_0123456789abcdef"
        );
        assert_eq!(ParticipantId(u64::MAX).to_string(), "p_ffffffffffffffff");
        assert_eq!(
            serde_json::to_string(&ParticipantId(255)).unwrap(),
            r#""p_00000000000000ff""#
        );
        let id = ParticipantId(0x5eed_1234_abcd_0042);
        assert_eq!(id.to_string().parse::<ParticipantId>(), Ok(id));
        assert!("p_123".parse::<ParticipantId>().is_err());
        assert!("x_0123456789abcdef".parse::<ParticipantId>().is_err());
        assert!("p_0123456789abcdeg".parse::<ParticipantId>().is_err());
        assert!("p_+123456789abcde".parse::<ParticipantId>().is_err());
        assert!("p_0123456789abcdé".parse::<ParticipantId>().is_err());
        assert_eq!(
            "p_0123456789ABCDEF".parse::<ParticipantId>(),
            "p_0123456789abcdef".parse::<ParticipantId>()
        );
    }

    #[test]
    fn provider_ids_are_identities() {
        assert_eq!(ProviderId::new("dr-lee").unwrap().as_str(), "dr-lee");
        assert!(ProviderId::new("").is_err());
        assert!(ProviderId::new("x".repeat(129)).is_err());
        assert!(serde_json::from_str::<ProviderId>(r#""a\nb""#).is_err());
        assert!(serde_json::from_str::<ProviderId>(r#""dr-lee""#).is_ok());
    }

    #[test]
    fn visit_ids_round_trip_through_text() {
        let a = VisitId::from_uuid(Uuid::new_v4());
        assert_eq!(a.to_string().parse::<VisitId>().ok(), Some(a));
        assert!("not-a-uuid".parse::<VisitId>().is_err());
        assert!(serde_json::from_str::<VisitId>(r#""nope""#).is_err());
    }
}
