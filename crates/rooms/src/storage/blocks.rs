//! Access blocks in either database: which identities were removed or denied in a visit,
//! and when (crates/visit/src/access.rs has the rules); and which single-use links were
//! used. Written by live visits through the
//! writer ([`apply_block`], in the same transaction as the removal and its audit row), read
//! with the visit, by the API when it mints a token, and by the embedded TURN server.

use super::columns::{VisitList, micros, time};
use super::dialect::Dialect;
use super::driver::{Arg, Col};
use super::sql::SqlStorage;
use super::{AccessBlocks, StorageError};
use crate::VisitId;
use async_trait::async_trait;
use bedside_visit::Block;
use chrono::{DateTime, Utc};

/// A visit's blocks, one per identity.
pub(super) const BLOCKS: VisitList = VisitList {
    table: "access_blocks",
    columns: "identity, blocked_at",
    order: "identity",
};

/// The `jti`s of a visit's used single-use links.
pub(super) const USED_LINKS: VisitList = VisitList {
    table: "used_links",
    columns: "jti",
    order: "used_at",
};

/// Blocks from [`BLOCKS`]' rows.
pub(super) fn blocks_from(rows: Vec<(String, i64)>) -> Result<Vec<Block>, StorageError> {
    rows.into_iter()
        .map(|(identity, at)| {
            Ok(Block {
                identity,
                at: time(at)?,
            })
        })
        .collect()
}

/// `jti`s from [`USED_LINKS`]' rows.
pub(super) fn used_links_from(rows: Vec<(String,)>) -> Vec<String> {
    rows.into_iter().map(|(jti,)| jti).collect()
}

#[async_trait]
impl<D: Dialect> AccessBlocks for SqlStorage<D> {
    async fn blocks(&self, visit: VisitId) -> Result<Vec<Block>, StorageError> {
        blocks_from(BLOCKS.read(self.reads(), visit).await?)
    }

    async fn blocked_at(
        &self,
        visit: VisitId,
        identity: &str,
    ) -> Result<Option<DateTime<Utc>>, StorageError> {
        sqlx::query("SELECT blocked_at FROM access_blocks WHERE visit_id = $1 AND identity = $2")
            .arg(visit.to_string())
            .arg(&*D::text(identity))
            .fetch_optional(self.db())
            .await?
            .map(|r| time(r.col("blocked_at")?))
            .transpose()
    }

    async fn blocks_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(VisitId, Block)>, StorageError> {
        let rows = sqlx::query(
            "SELECT visit_id, identity, blocked_at FROM access_blocks WHERE blocked_at >= $1",
        )
        .arg(micros(since))
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    super::columns::parse(&r.col::<String>("visit_id")?)?,
                    Block {
                        identity: r.col("identity")?,
                        at: time(r.col("blocked_at")?)?,
                    },
                ))
            })
            .collect()
    }

    async fn used_links(&self, visit: VisitId) -> Result<Vec<String>, StorageError> {
        Ok(used_links_from(USED_LINKS.read(self.reads(), visit).await?))
    }
}

/// Records that a single-use link let someone in. Once: a second use was refused by the
/// visit, and a write repeated after a failed batch finds the row there.
pub(super) async fn apply_link_used<D: Dialect>(
    conn: &mut D::Connection,
    visit: VisitId,
    jti: &str,
    at: DateTime<Utc>,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO used_links (jti, visit_id, used_at) VALUES ($1, $2, $3) \
         ON CONFLICT (jti) DO NOTHING",
    )
    .arg(&*D::text(jti))
    .arg(visit.to_string())
    .arg(micros(at))
    .execute(D::on(conn))
    .await?;
    Ok(())
}

/// Stores a block, keeping the later one if the identity was blocked before.
pub(super) async fn apply_block<D: Dialect>(
    conn: &mut D::Connection,
    visit: VisitId,
    identity: &str,
    at: DateTime<Utc>,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO access_blocks (visit_id, identity, blocked_at) VALUES ($1, $2, $3) \
         ON CONFLICT (visit_id, identity) DO UPDATE SET blocked_at = EXCLUDED.blocked_at \
         WHERE access_blocks.blocked_at < EXCLUDED.blocked_at",
    )
    .arg(visit.to_string())
    .arg(&*D::text(identity))
    .arg(micros(at))
    .execute(D::on(conn))
    .await?;
    Ok(())
}
