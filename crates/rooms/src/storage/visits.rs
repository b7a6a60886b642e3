//! Visits and who is in them, in either database: the rows, the reads the API and the
//! registry make, and how a visit's [`Change`] is written.

use super::columns::{
    VisitList, micros, opt_time, parse, role, time, visit_columns, visit_from_row,
};
use super::dialect::{self, Dialect, EventNumbers};
use super::driver::{Arg, Col};
use super::pending::Pending;
use super::rows::{Rows, Value};
use super::sql::{SqlStorage, write};
use super::{ListQuery, StorageError, Visits, WriteOp};
use crate::VisitId;
use crate::audit::AuditEvent;
use crate::event::{EventKind, VisitEvent};
use crate::record::{VisitRecord, VisitStatus};
use crate::visit::{Change, StoredParticipant};
use async_trait::async_trait;
use bedside_auth::TenantId;
use bedside_visit::quality::StoredQuality;
use bedside_visit::{ConsentGiven, ParticipantId, ProviderId};
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Executor;
use std::collections::{BTreeMap, HashMap};

#[async_trait]
impl<D: Dialect> Visits for SqlStorage<D> {
    async fn insert_visit(
        &self,
        v: &VisitRecord,
        created: &AuditEvent,
    ) -> Result<(), StorageError> {
        let _turn = self.creation_turn().await;
        let mut held = Pending::default();
        held.push(
            concat!(
                "INSERT INTO visits (",
                visit_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
            ),
            vec![
                v.id.to_string().into(),
                v.tenant.as_str().into(),
                v.external_ref.as_deref().map(D::text).as_deref().into(),
                v.status.as_str().into(),
                v.ended_reason.map(|r| r.as_str()).into(),
                micros(v.created_at).into(),
                v.not_before.map(micros).into(),
                micros(v.expires_at).into(),
                v.started_at.map(micros).into(),
                v.ended_at.map(micros).into(),
                i64::from(v.max_participants).into(),
                v.metadata.as_ref().map(|m| m.to_string()).into(),
                v.provider
                    .as_ref()
                    .map(|p| D::text(p.as_str()).into_owned())
                    .into(),
                v.consent.as_ref().map(|c| c.version().to_owned()).into(),
                v.consent
                    .as_ref()
                    .map(|c| D::text(c.text()).into_owned())
                    .into(),
            ],
        );
        // No other writer can touch the new visit's chain or events before the visit
        // exists, so no lock is needed beyond the insert's own.
        let created = [
            WriteOp::Audit {
                visit: v.id,
                tenant: v.tenant.clone(),
                event: created.clone(),
            },
            WriteOp::Event {
                visit: v.id,
                tenant: v.tenant.clone(),
                event: VisitEvent::new(EventKind::VisitCreated, v.created_at),
            },
        ];
        let ops: Vec<&WriteOp> = created.iter().collect();
        // Atomic without a transaction only where the visit, its audit row and its event
        // (with its numbering) all go in one statement: held writes combined, and events
        // numbered where they are inserted.
        let one_statement =
            D::COMBINES_WRITES && matches!(D::EVENT_NUMBERS, EventNumbers::Insert(_));
        if one_statement {
            // The audit seq is taken first, then the visit, its audit row and its event go
            // in one statement, which commits as it ends: the tenant's event numbering,
            // which every writer of the tenant's events waits for, is held for no round
            // trip (in a setup burst most waits on it were creations', BENCHMARKS.md).
            let mut conn = self.connection().await?;
            write::<D>(&mut conn, held, &ops).await?;
        } else {
            let mut tx = self.begin(D::BEGIN_WRITE).await?;
            write::<D>(&mut tx, held, &ops).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    async fn visit(&self, id: VisitId) -> Result<Option<VisitRecord>, StorageError> {
        visit_of(self.reads(), id).await
    }

    async fn list_visits(
        &self,
        tenant: &TenantId,
        q: &ListQuery,
    ) -> Result<Vec<VisitRecord>, StorageError> {
        let (after_time, after_id) = match q.after {
            Some((t, id)) => (Some(micros(t)), Some(id.to_string())),
            None => (None, None),
        };
        // The casts give PostgreSQL the type of a parameter that may be NULL.
        let rows = sqlx::query(concat!(
            "SELECT ",
            visit_columns!(),
            " FROM visits WHERE tenant = $1 AND (CAST($2 AS TEXT) IS NULL OR status = $2) \
             AND (CAST($3 AS BIGINT) IS NULL OR created_at < $3 OR (created_at = $3 AND id < $4)) \
             ORDER BY created_at DESC, id DESC LIMIT $5"
        ))
        .arg(tenant.as_str())
        .arg(q.status.map(VisitStatus::as_str))
        .arg(after_time)
        .arg(after_id)
        .arg(i64::from(q.limit))
        .fetch_all(self.db())
        .await?;
        rows.iter().map(visit_from_row).collect()
    }

    async fn participants(&self, id: VisitId) -> Result<Vec<StoredParticipant>, StorageError> {
        participants_from(PARTICIPANTS.read(self.reads(), id).await?)
    }

    async fn quality(&self, id: VisitId) -> Result<Vec<StoredQuality>, StorageError> {
        quality_from(QUALITY.read(self.reads(), id).await?)
    }

    async fn apply(&self, ops: &[WriteOp]) -> Result<Vec<VisitId>, StorageError> {
        self.apply_ops(ops).await
    }

    async fn count_by_status(&self) -> Result<Vec<(VisitStatus, u64)>, StorageError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM visits GROUP BY status")
            .fetch_all(self.db())
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    parse(&r.col::<String>("status")?)?,
                    r.col::<i64>("n")?.max(0) as u64,
                ))
            })
            .collect()
    }

    async fn due_for_expiry(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<VisitId>, StorageError> {
        let rows = sqlx::query(
            "SELECT id FROM visits WHERE status IN ('open', 'active') AND expires_at <= $1 LIMIT $2",
        )
        .arg(micros(now))
        .arg(i64::from(limit))
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| parse(&r.col::<String>("id")?))
            .collect()
    }

    async fn consultations(
        &self,
        tenant: &TenantId,
        provider: &ProviderId,
        limit: u32,
    ) -> Result<Vec<TimeDelta>, StorageError> {
        let rows = sqlx::query(
            "SELECT started_at, ended_at FROM consultations WHERE tenant = $1 AND provider = $2 \
             ORDER BY ended_at DESC LIMIT $3",
        )
        .arg(tenant.as_str())
        .arg(D::text(provider.as_str()).into_owned())
        .arg(i64::from(limit))
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                let (from, to): (i64, i64) = (r.col("started_at")?, r.col("ended_at")?);
                Ok(TimeDelta::microseconds(to.saturating_sub(from).max(0)))
            })
            .collect()
    }
}

/// A visit's record, read on `db` (a pool or one connection).
pub(super) async fn visit_of<'c, D: Dialect>(
    db: impl Executor<'c, Database = D>,
    id: VisitId,
) -> Result<Option<VisitRecord>, StorageError> {
    sqlx::query(concat!(
        "SELECT ",
        visit_columns!(),
        " FROM visits WHERE id = $1"
    ))
    .arg(id.to_string())
    .fetch_optional(db)
    .await?
    .as_ref()
    .map(visit_from_row)
    .transpose()
}

/// A visit's participants, in the order they came.
pub(super) const PARTICIPANTS: VisitList = VisitList {
    table: "participants",
    columns: "participant_id, identity, role, name, state, since, dropped_at, consent_version, consent_at",
    order: "since, participant_id",
};

/// The call quality kept for a visit's participants.
pub(super) const QUALITY: VisitList = VisitList {
    table: "participant_quality",
    columns: "participant_id, identity, role, tracker",
    order: "participant_id",
};

/// A participant's row as [`PARTICIPANTS`] reads it.
type ParticipantRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

/// Participants from [`PARTICIPANTS`]' rows.
pub(super) fn participants_from(
    rows: Vec<ParticipantRow>,
) -> Result<Vec<StoredParticipant>, StorageError> {
    rows.into_iter()
        .map(
            |(
                id,
                identity,
                role_name,
                name,
                state,
                since,
                dropped_at,
                consent_version,
                consent_at,
            )| {
                Ok(StoredParticipant {
                    participant_id: parse(&id)?,
                    identity,
                    role: role(&role_name)?,
                    name,
                    state: parse(&state)?,
                    since: time(since)?,
                    dropped_at: opt_time(dropped_at)?,
                    consent: match (consent_version, opt_time(consent_at)?) {
                        (Some(version), Some(at)) => Some(ConsentGiven { version, at }),
                        _ => None,
                    },
                })
            },
        )
        .collect()
}

/// Call quality from [`QUALITY`]'s rows.
pub(super) fn quality_from(
    rows: Vec<(String, String, String, String)>,
) -> Result<Vec<StoredQuality>, StorageError> {
    rows.into_iter()
        .map(|(id, identity, role_name, tracker)| {
            Ok(StoredQuality {
                participant_id: parse(&id)?,
                identity,
                role: role(&role_name)?,
                tracker: serde_json::from_str(&tracker)
                    .map_err(|e| StorageError::Corrupt(format!("quality tracker: {e}")))?,
            })
        })
        .collect()
}

/// Participants' rows a write batch upserts, in one statement (or a few) instead of one
/// each. A participant changed twice in the batch is written once, as it was last: one
/// statement may not upsert a row twice. Whatever deletes participants must see the rows
/// before it written first ([`ParticipantRows::needed_before`]).
pub(super) struct ParticipantRows {
    rows: Vec<[Value; 10]>,
    at: HashMap<(VisitId, ParticipantId), usize>,
}

impl ParticipantRows {
    pub(super) fn new() -> Self {
        Self {
            rows: Vec::new(),
            at: HashMap::new(),
        }
    }

    /// Whether the rows held must be written before `change` is.
    pub(super) fn needed_before(change: &Change) -> bool {
        matches!(
            change,
            Change::ParticipantGone { .. }
                | Change::Status {
                    status: VisitStatus::Ended,
                    ..
                }
        )
    }

    pub(super) fn push<D: Dialect>(&mut self, visit: VisitId, p: &StoredParticipant) {
        let row: [Value; 10] = [
            visit.to_string().into(),
            p.participant_id.to_string().into(),
            D::text(&p.identity).into_owned().into(),
            p.role.as_str().into(),
            D::text(&p.name).into_owned().into(),
            p.state.as_str().into(),
            micros(p.since).into(),
            p.dropped_at.map(micros).into(),
            p.consent.as_ref().map(|c| c.version.clone()).into(),
            p.consent.as_ref().map(|c| micros(c.at)).into(),
        ];
        match self.at.get(&(visit, p.participant_id)) {
            Some(&i) => self.rows[i] = row,
            None => {
                self.at.insert((visit, p.participant_id), self.rows.len());
                self.rows.push(row);
            }
        }
    }

    /// Holds the upsert of what was pushed (see [`Pending`]) and forgets it.
    pub(super) fn hold<D: Dialect>(&mut self, held: &mut Pending) -> Result<(), StorageError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let mut rows = Rows::new(
            "INSERT INTO participants (visit_id, participant_id, identity, role, name, state, since, dropped_at, \
             consent_version, consent_at)",
            10,
            "ON CONFLICT (visit_id, participant_id) DO UPDATE SET identity = EXCLUDED.identity, \
             role = EXCLUDED.role, name = EXCLUDED.name, state = EXCLUDED.state, \
             since = EXCLUDED.since, dropped_at = EXCLUDED.dropped_at, \
             consent_version = EXCLUDED.consent_version, consent_at = EXCLUDED.consent_at",
        );
        for row in self.rows.drain(..) {
            rows.push(row);
        }
        self.at.clear();
        rows.hold::<D>(held)
    }
}

/// What a write batch changes in the visits' own rows as they go (a visit becoming active,
/// doctor and patient meeting), in one statement instead of one each: in a setup burst
/// those were most of a batch's statements. Kept as applying the changes one by one would
/// leave the row: a status only moves on from open, so the first one that is not open
/// wins, and so does the first start. Written before any other change of a visit is
/// ([`VisitUpdates::takes`] says which go here), so nothing reads or overwrites those
/// columns out of order.
pub(super) struct VisitUpdates {
    rows: BTreeMap<VisitId, (Option<VisitStatus>, Option<i64>)>,
}

impl VisitUpdates {
    pub(super) fn new() -> Self {
        Self {
            rows: BTreeMap::new(),
        }
    }

    /// Whether `change` is held here rather than written at once.
    pub(super) fn takes(change: &Change) -> bool {
        match change {
            Change::Started { .. } => true,
            Change::Status { status, .. } => *status != VisitStatus::Ended,
            _ => false,
        }
    }

    /// Holds a change [`VisitUpdates::takes`].
    pub(super) fn push(&mut self, visit: VisitId, change: &Change) {
        let (status, started) = self.rows.entry(visit).or_default();
        match change {
            Change::Started { at } => {
                started.get_or_insert(micros(*at));
            }
            // Setting an open visit open changes nothing.
            Change::Status {
                status: to @ VisitStatus::Active,
                ..
            } => {
                status.get_or_insert(*to);
            }
            _ => {}
        }
    }

    /// Holds the update of what was pushed (see [`Pending`]) and forgets it.
    pub(super) fn hold<D: Dialect>(&mut self, held: &mut Pending) -> Result<(), StorageError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, Option<&str>, Option<i64>)> = self
            .rows
            .iter()
            .map(|(visit, (status, started))| {
                (visit.to_string(), status.map(VisitStatus::as_str), *started)
            })
            .collect();
        held.push(D::UPDATE_VISITS, vec![dialect::json(&rows)?.into()]);
        self.rows.clear();
        Ok(())
    }
}

/// Writes one change of a live visit.
pub(super) async fn apply_change<D: Dialect>(
    conn: &mut D::Connection,
    visit: VisitId,
    change: &Change,
) -> Result<(), StorageError> {
    let id = visit.to_string();
    match change {
        Change::Status {
            status: VisitStatus::Ended,
            reason,
            at,
        } => {
            sqlx::query("UPDATE visits SET status = 'ended', ended_reason = $1, ended_at = $2 WHERE id = $3 AND status <> 'ended'")
                .arg(reason.map(|r| r.as_str()))
                .arg(micros(*at))
                .arg(id.as_str())
                .execute(D::on(conn))
                .await?;
            sqlx::query("DELETE FROM participants WHERE visit_id = $1")
                .arg(id.as_str())
                .execute(D::on(conn))
                .await?;
        }
        Change::Started { at } => {
            sqlx::query("UPDATE visits SET started_at = COALESCE(started_at, $1) WHERE id = $2")
                .arg(micros(*at))
                .arg(id.as_str())
                .execute(D::on(conn))
                .await?;
        }
        Change::Status { status, .. } => {
            sqlx::query("UPDATE visits SET status = $1 WHERE id = $2 AND status = 'open'")
                .arg(status.as_str())
                .arg(id.as_str())
                .execute(D::on(conn))
                .await?;
        }
        Change::Participant(p) => {
            sqlx::query(
                "INSERT INTO participants (visit_id, participant_id, identity, role, name, state, since, dropped_at, \
                 consent_version, consent_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (visit_id, participant_id) DO UPDATE SET identity = EXCLUDED.identity, \
                 role = EXCLUDED.role, name = EXCLUDED.name, state = EXCLUDED.state, \
                 since = EXCLUDED.since, dropped_at = EXCLUDED.dropped_at, \
                 consent_version = EXCLUDED.consent_version, consent_at = EXCLUDED.consent_at",
            )
            .arg(id.as_str())
            .arg(p.participant_id.to_string())
            .arg(&*D::text(&p.identity))
            .arg(p.role.as_str())
            .arg(&*D::text(&p.name))
            .arg(p.state.as_str())
            .arg(micros(p.since))
            .arg(p.dropped_at.map(micros))
            .arg(p.consent.as_ref().map(|c| c.version.clone()))
            .arg(p.consent.as_ref().map(|c| micros(c.at)))
            .execute(D::on(conn))
            .await?;
        }
        Change::Provider { provider } => {
            sqlx::query("UPDATE visits SET provider = $1 WHERE id = $2")
                .arg(D::text(provider.as_str()).into_owned())
                .arg(id.as_str())
                .execute(D::on(conn))
                .await?;
        }
        Change::Consultation {
            provider,
            started_at,
            ended_at,
        } => {
            sqlx::query(
                "INSERT INTO consultations (tenant, provider, visit_id, started_at, ended_at) \
                 SELECT tenant, $1, id, $2, $3 FROM visits WHERE id = $4",
            )
            .arg(D::text(provider.as_str()).into_owned())
            .arg(micros(*started_at))
            .arg(micros(*ended_at))
            .arg(id.as_str())
            .execute(D::on(conn))
            .await?;
        }
        Change::Quality(q) => {
            let tracker = serde_json::to_string(&q.tracker)
                .map_err(|e| StorageError::Corrupt(format!("quality tracker: {e}")))?;
            sqlx::query(
                "INSERT INTO participant_quality (visit_id, participant_id, identity, role, tracker) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (visit_id, participant_id) DO UPDATE SET tracker = EXCLUDED.tracker",
            )
            .arg(id.as_str())
            .arg(q.participant_id.to_string())
            .arg(&*D::text(&q.identity))
            .arg(q.role.as_str())
            .arg(tracker)
            .execute(D::on(conn))
            .await?;
        }
        Change::Blocked { identity, at } => {
            super::blocks::apply_block::<D>(conn, visit, identity, *at).await?;
        }
        Change::LinkUsed { jti, at } => {
            super::blocks::apply_link_used::<D>(conn, visit, jti, *at).await?;
        }
        Change::ParticipantGone { participant_id } => {
            sqlx::query("DELETE FROM participants WHERE visit_id = $1 AND participant_id = $2")
                .arg(id.as_str())
                .arg(participant_id.to_string())
                .execute(D::on(conn))
                .await?;
        }
    }
    Ok(())
}
