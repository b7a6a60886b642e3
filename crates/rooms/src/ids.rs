//! Fresh ids, drawn where IO is allowed: the visit core only defines them.

use bedside_visit::{ConnId, ParticipantId, VisitId};
use std::sync::atomic::{AtomicU64, Ordering};

/// Ids drawn at random: visit ids are v4 UUIDs, participant ids 64 random bits.
pub trait RandomId {
    fn random() -> Self;
}

impl RandomId for VisitId {
    fn random() -> Self {
        VisitId::from_uuid(uuid::Uuid::new_v4())
    }
}

impl RandomId for ParticipantId {
    fn random() -> Self {
        ParticipantId::from_bits(rand::random())
    }
}

/// Connection numbers, unique within this process.
pub trait NextConnId {
    fn next() -> Self;
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

impl NextConnId for ConnId {
    fn next() -> Self {
        ConnId::from_raw(NEXT_CONN.fetch_add(1, Ordering::Relaxed))
    }
}
