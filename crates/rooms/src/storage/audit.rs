//! The audit trail in either database: rows appended onto each visit's hash chain (the
//! hashing is [`crate::audit_chain`]'s), read back, and verified.

use super::columns::{audit_kind, micros, parse, role, stored_fields, time};
use super::dialect::{self, Dialect};
use super::driver::{Arg, Col};
use super::pending::Pending;
use super::rows::Rows;
use super::sql::SqlStorage;
use super::{AuditRecord, AuditTrail, StorageError, WriteOp};
use crate::VisitId;
use crate::audit::AuditEvent;
use crate::audit_chain::{self, ChainReport, Entry, Hash, Head, StoredRow, VisitCheck};
use async_trait::async_trait;
use bedside_auth::{Role, TenantId};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Appends audit rows to visits' hash chains within one write transaction.
///
/// [`ChainWriter::start`] reads the heads of every chain the batch extends and takes the
/// seqs for all its rows, in one statement, once the transaction excludes other writers of
/// those visits. The ends are then kept in memory while the batch appends, and the rows
/// and the new ends are held to be written with the batch's other writes
/// ([`ChainWriter::finish`]) before commit, however many visits and rows the batch holds.
/// A rolled-back transaction drops the writer with it, so nothing stale outlives it.
pub(super) struct ChainWriter {
    /// Seqs taken for this transaction's rows, ascending.
    seqs: VecDeque<i64>,
    /// Per visit: the hash its next row chains from, and the seq of its last row if this
    /// transaction appended one (only those heads are written back).
    ends: HashMap<VisitId, (Hash, Option<i64>)>,
    /// The rows appended, inserted together by [`ChainWriter::finish`].
    rows: Rows,
}

impl Default for ChainWriter {
    fn default() -> Self {
        Self {
            seqs: VecDeque::new(),
            ends: HashMap::new(),
            rows: Rows::new(
                "INSERT INTO audit_events (seq, visit_id, tenant, at, kind, participant_id, identity, role, actor, detail, prev_hash, hash)",
                12,
                "",
            ),
        }
    }
}

impl ChainWriter {
    pub(super) async fn start<D: Dialect>(
        conn: &mut D::Connection,
        ops: &[&WriteOp],
    ) -> Result<Self, StorageError> {
        let mut chain = Self::default();
        // The visit of each row to number, and the set of them.
        let numbered: Vec<&VisitId> = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::Audit { visit, .. } => Some(visit),
                _ => None,
            })
            .collect();
        if numbered.is_empty() {
            return Ok(chain);
        }
        let visits: BTreeSet<&VisitId> = numbered.iter().copied().collect();
        let rows = sqlx::query(D::AUDIT_HEADS_AND_SEQS)
            .arg(dialect::json(&visits)?)
            .arg(dialect::json(&numbered)?)
            .fetch_all(D::on(conn))
            .await?;
        let mut seqs = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(seq) = row.col::<Option<i64>>("seq")? {
                seqs.push(seq);
                continue;
            }
            // Decoded leniently: a head someone mangled must not fail the batch.
            let Some(visit) = row
                .col::<Option<String>>("visit_id")
                .ok()
                .flatten()
                .and_then(|id| id.parse::<VisitId>().ok())
            else {
                continue;
            };
            let hash = row.col::<Option<String>>("hash").ok().flatten();
            match hash.as_deref().and_then(audit_chain::from_hex) {
                Some(hash) => {
                    chain.ends.insert(visit, (hash, None));
                }
                // Refusing to write would drop the writer's whole batch (other visits'
                // changes too); chaining from genesis instead keeps the trail going and
                // leaves a break that verification reports.
                None => tracing::error!(
                    visit = %visit,
                    "audit chain head is not a hash; restarting the chain"
                ),
            }
        }
        seqs.sort_unstable();
        chain.seqs = seqs.into();
        Ok(chain)
    }

    /// Chains a row onto `visit`'s trail; it is inserted by [`ChainWriter::finish`].
    pub(super) fn append<D: Dialect>(
        &mut self,
        visit: VisitId,
        tenant: &TenantId,
        e: &AuditEvent,
    ) -> Result<(), StorageError> {
        let seq = self
            .seqs
            .pop_front()
            .ok_or_else(|| StorageError::Corrupt("no audit seq taken for a row".into()))?;
        let visit_id = visit.to_string();
        let prev = self
            .ends
            .get(&visit)
            .map_or_else(|| audit_chain::genesis(&visit_id), |&(hash, _)| hash);
        let participant_id = e.participant_id.map(|p| p.to_string());
        let identity = e.identity.as_deref().map(D::text);
        let actor = e.actor.as_ref().map(ToString::to_string);
        let actor = actor.as_deref().map(D::text);
        let detail = e.detail.as_deref().map(D::text);
        let tenant = D::text(tenant.as_str());
        let entry = Entry {
            visit_id: &visit_id,
            tenant: &tenant,
            seq,
            at: micros(e.at),
            kind: e.kind.as_str(),
            participant_id: participant_id.as_deref(),
            identity: identity.as_deref(),
            role: e.role.map(Role::as_str),
            actor: actor.as_deref(),
            detail: detail.as_deref(),
        };
        let hash = audit_chain::link_hash(&entry, &prev);
        self.rows.push([
            seq.into(),
            entry.visit_id.into(),
            entry.tenant.into(),
            entry.at.into(),
            entry.kind.into(),
            entry.participant_id.into(),
            entry.identity.into(),
            entry.role.into(),
            entry.actor.into(),
            entry.detail.into(),
            audit_chain::to_hex(&prev).into(),
            audit_chain::to_hex(&hash).into(),
        ]);
        self.ends.insert(visit, (hash, Some(seq)));
        Ok(())
    }

    /// Holds the insert of the rows appended and the record of the new end of every chain
    /// this transaction extended (see [`Pending`]).
    pub(super) fn finish<D: Dialect>(mut self, held: &mut Pending) -> Result<(), StorageError> {
        self.rows.hold::<D>(held)?;
        let heads: Vec<(VisitId, i64, String)> = self
            .ends
            .into_iter()
            .filter_map(|(visit, (hash, seq))| {
                seq.map(|seq| (visit, seq, audit_chain::to_hex(&hash)))
            })
            .collect();
        if !heads.is_empty() {
            held.push(D::WRITE_AUDIT_HEADS, vec![dialect::json(&heads)?.into()]);
        }
        Ok(())
    }
}

#[async_trait]
impl<D: Dialect> AuditTrail for SqlStorage<D> {
    async fn audit(
        &self,
        visit: VisitId,
        tenant: &TenantId,
        event: &AuditEvent,
    ) -> Result<(), StorageError> {
        self.apply_ops(&[WriteOp::Audit {
            visit,
            tenant: tenant.clone(),
            event: event.clone(),
        }])
        .await
        .map(drop)
    }

    async fn audit_trail(&self, id: VisitId) -> Result<Vec<AuditRecord>, StorageError> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, participant_id, identity, role, actor, detail FROM audit_events \
             WHERE visit_id = $1 ORDER BY seq",
        )
        .arg(id.to_string())
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    seq: r.col("seq")?,
                    visit_id: id,
                    event: AuditEvent {
                        at: time(r.col("at")?)?,
                        kind: audit_kind(&r.col::<String>("kind")?)?,
                        participant_id: r
                            .col::<Option<String>>("participant_id")?
                            .as_deref()
                            .map(parse)
                            .transpose()?,
                        identity: r.col("identity")?,
                        role: r
                            .col::<Option<String>>("role")?
                            .as_deref()
                            .map(role)
                            .transpose()?,
                        actor: r
                            .col::<Option<String>>("actor")?
                            .as_deref()
                            .map(parse)
                            .transpose()?,
                        detail: r.col("detail")?,
                    },
                })
            })
            .collect()
    }

    async fn verify_audit(&self, visit: Option<VisitId>) -> Result<ChainReport, StorageError> {
        let legacy_max_seq: i64 = sqlx::query(D::LEGACY_MAX_SEQ)
            .fetch_one(self.db())
            .await?
            .col("seq")?;
        let ids: Vec<String> = match visit {
            Some(v) => vec![v.to_string()],
            // Every visit that has, or had, a trail: rows whose visit row is gone still count.
            None => sqlx::query(
                "SELECT id FROM visits UNION SELECT visit_id FROM audit_events \
                 UNION SELECT visit_id FROM audit_heads ORDER BY 1",
            )
            .fetch_all(self.db())
            .await?
            .iter()
            .map(|r| r.col("id"))
            .collect::<Result<_, _>>()?,
        };
        let mut report = ChainReport::default();
        for id in &ids {
            if let Some(check) = self.verify_visit(id, legacy_max_seq).await? {
                report.add(id, check);
            }
        }
        Ok(report)
    }
}

impl<D: Dialect> SqlStorage<D> {
    /// Checks one visit's chain, reading its rows and head in one snapshot so a write
    /// committed meanwhile cannot make them disagree. `None` when the visit has neither.
    async fn verify_visit(
        &self,
        visit_id: &str,
        legacy_max_seq: i64,
    ) -> Result<Option<VisitCheck>, StorageError> {
        let mut tx = self.begin(D::BEGIN_SNAPSHOT).await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_heads WHERE visit_id = $1")
            .arg(visit_id)
            .fetch_optional(D::on(&mut tx))
            .await?
            .map(|r| -> Result<Head, sqlx::Error> {
                Ok(Head {
                    seq: r.col("seq")?,
                    // A head whose hash is not text compares unequal to every row.
                    hash: r.col("hash").unwrap_or_default(),
                })
            })
            .transpose()?;
        let rows = sqlx::query(
            "SELECT seq, tenant, at, kind, participant_id, identity, role, actor, detail, prev_hash, hash \
             FROM audit_events WHERE visit_id = $1 ORDER BY seq",
        )
        .arg(visit_id)
        .fetch_all(D::on(&mut tx))
        .await?;
        tx.rollback().await?;
        if rows.is_empty() && head.is_none() {
            return Ok(None);
        }
        let rows = rows
            .iter()
            .map(|r| {
                Ok(StoredRow {
                    seq: r.col("seq")?,
                    fields: stored_fields(r).ok(),
                    prev_hash: r.col("prev_hash").ok().flatten(),
                    hash: r.col("hash").ok().flatten(),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(audit_chain::verify(
            visit_id,
            legacy_max_seq,
            &rows,
            head.as_ref(),
        )))
    }
}
