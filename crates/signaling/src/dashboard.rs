//! A provider's dashboard: the connection a provider token opens (docs/protocol.md, "The
//! provider's dashboard"). It is no participant of any visit: it watches the provider's
//! board on the node's desk (`queue`: in a cluster the desk shares it with the other
//! nodes), sets their presence, sends their messages to waiting rooms (`notify`, passed on
//! to the nodes that run the visits) and hands out doctor tokens for their visits (`take`).
//!
//! A child of `connection`: it borrows the connection's socket, limits and writers.

use super::{Connection, Exit, Inbound};
use bedside_auth::{KeyId, Role, VerifiedProvider};
use bedside_protocol::{ClientMsg, ServerMsg, error_frame};
use bedside_rooms::{Board, LinkRequest, ProviderKey};
use bedside_visit::{
    AuditEvent, AuditKind, CloseCode, Input, ProviderId, Refusal, VisitId, VisitStatus,
};
use chrono::{TimeDelta, Utc};
use tokio::time::interval;

/// How long the doctor token of a `take` is valid (never past the visit's end).
const TAKE_TOKEN_HOURS: i64 = 12;

impl Connection {
    /// Serves a provider's dashboard until it closes; returns how.
    pub(super) async fn dashboard(&mut self, v: VerifiedProvider) -> Exit {
        let Some(clinic) = self.sig.clinic.clone() else {
            let _ = self
                .send_error("unavailable", "provider dashboards are not served here")
                .await;
            return Exit::Close(CloseCode::GoingAway, "unavailable");
        };
        let Ok(provider) = ProviderId::new(v.claims.provider.clone()) else {
            let _ = self.send_error("invalid_token", "bad provider").await;
            return Exit::Close(CloseCode::BadToken, "invalid token");
        };
        let key: ProviderKey = (v.tenant.clone(), provider);
        let name = Some(v.claims.name.clone()).filter(|n| !n.is_empty());
        let (session, mut board) = clinic.desk.connect(&key, name.clone(), Utc::now());
        tracing::info!(conn = %self.conn, "provider dashboard opened");
        let exit = async {
            let joined = ServerMsg::DashboardJoined {
                role: "provider",
                provider: key.1.as_str(),
                name: name.as_deref(),
            }
            .to_json();
            self.write(joined).await?;
            let first = queue_frame(&board.borrow_and_update());
            self.write(first).await?;
            let mut beat = interval(self.sig.config().ping_interval);
            loop {
                tokio::select! {
                    () = self.sig.shutdown.cancelled() => {
                        return Err(Exit::Close(CloseCode::GoingAway, "server restarting"));
                    }
                    changed = board.changed() => {
                        if changed.is_err() {
                            return Err(Exit::Close(CloseCode::GoingAway, "server restarting"));
                        }
                        let frame = {
                            let b = board.borrow_and_update();
                            if b.session != session {
                                None
                            } else {
                                Some(queue_frame(&b))
                            }
                        };
                        match frame {
                            Some(frame) => self.write(frame).await?,
                            // A newer dashboard of the same provider took over.
                            None => return Err(Exit::Close(CloseCode::Replaced, CloseCode::Replaced.reason())),
                        }
                    }
                    _ = beat.tick() => {
                        if self.last_seen.elapsed() >= self.sig.config().idle_timeout {
                            return Err(Exit::Gone);
                        }
                        self.send(axum::extract::ws::Message::Ping(Default::default())).await?;
                    }
                    msg = self.socket.recv() => {
                        let text = match self.inbound(msg)? {
                            Inbound::Text(text) => text,
                            Inbound::Reply(reply) => {
                                self.write(reply).await?;
                                continue;
                            }
                            Inbound::Nothing => continue,
                        };
                        if let Some(reply) = self.dashboard_frame(&clinic, &key, session, &v, text.as_str()).await? {
                            self.write(reply).await?;
                        }
                    }
                }
            }
        }
        .await;
        clinic.desk.disconnect(&key, session, Utc::now());
        match exit {
            Ok(()) => Exit::Gone,
            Err(exit) => exit,
        }
    }

    /// One frame from the dashboard: the reply to write, if any.
    async fn dashboard_frame(
        &mut self,
        clinic: &crate::Clinic,
        key: &ProviderKey,
        session: u64,
        v: &VerifiedProvider,
        text: &str,
    ) -> Result<Option<String>, Exit> {
        let msg = match ClientMsg::decode(text) {
            Ok(msg) => msg,
            Err(e) => return Ok(Some(error_frame(e.code(), &e.to_string()))),
        };
        Ok(Some(match msg {
            ClientMsg::Ping => ServerMsg::Pong {}.to_json(),
            ClientMsg::Leave => return Err(Exit::Close(CloseCode::Normal, "left")),
            ClientMsg::Join { .. } => error_frame("already_joined", "this connection has joined"),
            ClientMsg::Presence { status } => {
                clinic.desk.choose(key, session, status);
                return Ok(None);
            }
            ClientMsg::Notify { visit_id, text } => {
                let trimmed = text.trim();
                if trimmed.is_empty()
                    || trimmed.chars().count() > bedside_visit::visit::MAX_MESSAGE_CHARS
                {
                    return Ok(Some(refusal(Refusal::InvalidText)));
                }
                let visits = match visit_id {
                    Some(id) => match own_visit(clinic, key, id).await {
                        Ok(_) => vec![id],
                        Err(reply) => return Ok(Some(reply)),
                    },
                    None => clinic.desk.visits_of(&key.0, &key.1),
                };
                let now = Utc::now();
                for visit in &visits {
                    let input = Input::ProviderMessage {
                        text: trimmed.to_owned(),
                    };
                    if let Err(e) = clinic.registry.feed_live(*visit, input, now) {
                        tracing::debug!(visit = %visit, error = %e, "provider message not delivered");
                    }
                }
                // In a cluster, the nodes that run the others tell their waiting rooms.
                clinic.desk.notify_elsewhere(key, &visits, trimmed);
                return Ok(None);
            }
            ClientMsg::Take { visit_id } => match take(clinic, key, v, visit_id).await {
                Ok(frame) | Err(frame) => frame,
            },
            _ => error_frame(
                "not_in_visit",
                "a provider's dashboard is in no visit: take one first",
            ),
        }))
    }
}

/// The visit, if it is one of this provider's live visits; else the refusal to send.
async fn own_visit(
    clinic: &crate::Clinic,
    key: &ProviderKey,
    id: VisitId,
) -> Result<bedside_visit::VisitRecord, String> {
    let record = match clinic.registry.storage().visit(id).await {
        Ok(Some(r)) if r.tenant == key.0 => r,
        // Another clinic's visit does not exist, as far as this provider can tell.
        Ok(_) => return Err(refusal(Refusal::VisitNotFound)),
        Err(_) => return Err(error_frame("unavailable", "try again")),
    };
    if record.provider.as_ref() != Some(&key.1) {
        return Err(refusal(Refusal::NotYourVisit));
    }
    if record.effective_status(Utc::now()).0 == VisitStatus::Ended {
        return Err(refusal(Refusal::VisitEnded));
    }
    Ok(record)
}

/// A doctor token for one of the provider's visits, in the provider's name; recorded as
/// `taken`.
async fn take(
    clinic: &crate::Clinic,
    key: &ProviderKey,
    v: &VerifiedProvider,
    id: VisitId,
) -> Result<String, String> {
    let record = own_visit(clinic, key, id).await?;
    // A provider removed or denied in this visit does not let themselves back in: the token
    // minted here would be issued after the block and so pass it. Only the clinic lets a
    // blocked identity back (a link it mints).
    match clinic
        .registry
        .storage()
        .blocked_at(id, key.1.as_str())
        .await
    {
        Ok(None) => {}
        Ok(Some(_)) => return Err(refusal(Refusal::AccessRevoked)),
        Err(_) => return Err(error_frame("unavailable", "try again")),
    }
    let now = Utc::now();
    let expires_at = (now + TimeDelta::hours(TAKE_TOKEN_HOURS)).min(record.expires_at);
    let signer = KeyId::new(v.claims.iss.clone()).map_err(|_| refusal_internal())?;
    // The same minting path as the API's visit links and a doctor's guest links.
    let link = clinic
        .registry
        .links()
        .ok_or_else(refusal_internal)?
        .mint(
            &signer,
            LinkRequest {
                visit: id,
                identity: key.1.as_str().to_owned(),
                role: Role::Doctor,
                name: v.claims.name.clone(),
                issued_at: now.timestamp(),
                now,
                expires_at,
                single_use: false,
            },
        )
        .map_err(|_| refusal_internal())?;
    let taken = AuditEvent {
        identity: Some(key.1.as_str().to_owned()),
        role: Some(Role::Doctor),
        ..AuditEvent::new(AuditKind::Taken, now).detail(link.jti)
    };
    if clinic
        .registry
        .storage()
        .audit(id, &key.0, &taken)
        .await
        .is_err()
    {
        return Err(error_frame("unavailable", "try again"));
    }
    Ok(ServerMsg::VisitToken {
        visit_id: id,
        token: &link.token,
        expires_at,
    }
    .to_json())
}

fn queue_frame(board: &Board) -> String {
    ServerMsg::Queue {
        entries: &board.entries,
        presence: board.presence,
        chosen: board.chosen,
    }
    .to_json()
}

fn refusal(r: Refusal) -> String {
    error_frame(r.code(), &r.to_string())
}

fn refusal_internal() -> String {
    error_frame("internal", "could not mint the token")
}
