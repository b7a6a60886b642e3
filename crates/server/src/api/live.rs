//! API actions on live visits, done where the visit runs: on this node, or in a cluster on
//! the node that owns it (asked over Redis). A visit nobody runs is loaded here.

use super::tenant::Tenant;
use crate::error::ApiError;
use crate::state::AppState;
use bedside_cluster::{ApiDone, ApiOp};
use bedside_rooms::{Actor, ParticipantView, RoomError, VisitId, VisitRecord, VisitStatus};
use chrono::Utc;
use std::time::Duration;

/// Ends a visit for the tenant's backend; the visit as it now stands.
pub(crate) async fn end(
    state: &AppState,
    tenant: &Tenant,
    id: VisitId,
) -> Result<VisitRecord, ApiError> {
    let op = ApiOp::End {
        tenant: tenant.id.as_str().to_owned(),
        visit: id,
        key: tenant.key.as_str().to_owned(),
    };
    let here = || {
        state
            .registry
            .end(&tenant.id, id, Actor::api(tenant.key.as_str()), Utc::now())
    };
    let ended_here = on_owner(state, op, here).await?;
    if state.cluster.is_none()
        && let Some(record) = ended_here
    {
        return Ok(record);
    }
    // In a cluster, what counts is what storage holds: a node that lost the visit a moment
    // ago has its end refused there (the epoch moved), and the caller should retry.
    super::caught_up(state).await?;
    match state.registry.storage().visit(id).await? {
        Some(record) if record.tenant == tenant.id => {
            if record.status == VisitStatus::Ended {
                Ok(record)
            } else {
                Err(ApiError::Unavailable)
            }
        }
        _ => Err(ApiError::VisitNotFound),
    }
}

/// Removes a participant (by identity) for the tenant's backend.
pub(crate) async fn remove(
    state: &AppState,
    tenant: &Tenant,
    id: VisitId,
    identity: &str,
) -> Result<(), ApiError> {
    let op = ApiOp::Remove {
        tenant: tenant.id.as_str().to_owned(),
        visit: id,
        identity: identity.to_owned(),
        key: tenant.key.as_str().to_owned(),
    };
    let here = || {
        state.registry.remove(
            &tenant.id,
            id,
            identity,
            Actor::api(tenant.key.as_str()),
            Utc::now(),
        )
    };
    on_owner(state, op, here).await.map(drop)
}

/// Who is in the visit now, wherever it runs; nobody if it runs nowhere.
pub(crate) async fn participants(state: &AppState, id: VisitId) -> Vec<ParticipantView> {
    if let Some(here) = state.registry.participants(id) {
        return here;
    }
    let Some(cluster) = &state.cluster else {
        return Vec::new();
    };
    match cluster.ask_owner(ApiOp::Participants { visit: id }).await {
        Ok(ApiDone::Participants { participants }) => participants,
        _ => Vec::new(),
    }
}

/// Runs `here` unless another node owns the visit, in which case the owner does `op`
/// (`Ok(None)`). A visit whose owner just died waits for its lease to lapse.
async fn on_owner<T, F, Fut>(state: &AppState, op: ApiOp, here: F) -> Result<Option<T>, ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, RoomError>>,
{
    let Some(cluster) = &state.cluster else {
        return Ok(Some(here().await?));
    };
    let deadline = tokio::time::Instant::now() + cluster.owner_wait();
    loop {
        match here().await {
            Err(RoomError::Elsewhere) => {}
            other => return Ok(Some(other?)),
        }
        match cluster.ask_owner(op.clone()).await {
            Ok(_) => return Ok(None),
            Err(RoomError::Elsewhere | RoomError::Unavailable)
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
