//! A provider's queue under load, beside the relay of `visits` (`--queue-patients N`): `N`
//! patients of one provider wait, each in a visit of their own, the provider's dashboard is
//! open, and every `every` the queue changes: the patient who has waited longest leaves,
//! and a new one knocks in the visit they left. Measured: from the change (the frame sent)
//! to the dashboard's `queue` frame that shows it, and how many `waiting` frames the
//! patients got (each change moves everyone behind it up one place).

use super::{Phase, join};
use crate::client::{Incoming, Ws};
use crate::report::Stats;
use crate::target::{Sources, Target};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const PROVIDER: &str = "loadtest-provider";

/// A waiting patient: a task reads their socket (their `waiting` frames) until told to leave.
struct Waiting {
    visit: String,
    identity: String,
    leave: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

pub struct QueueLoad {
    target: Target,
    dashboard: Ws,
    waiting: VecDeque<Waiting>,
    sources: Sources,
    knocks: usize,
    /// `waiting` frames the patients received while measuring.
    standings: Arc<AtomicU64>,
    measuring: Arc<AtomicBool>,
}

/// Sets up `patients` waiting patients of one provider and the provider's dashboard;
/// `waiting` frames are counted while `measuring`.
pub async fn set_up(
    target: &Target,
    patients: usize,
    sources: &Sources,
    measuring: Arc<AtomicBool>,
) -> anyhow::Result<QueueLoad> {
    let url = target.ws_url("");
    let mut dashboard = Ws::connect(&url, sources.pick(0)).await?;
    let token = target.provider_token(PROVIDER)?;
    dashboard
        .send(json!({"type": "join", "token": token}).to_string())
        .await?;
    dashboard.until("joined").await?;
    let mut load = QueueLoad {
        target: target.clone(),
        dashboard,
        waiting: VecDeque::new(),
        sources: sources.clone(),
        knocks: 0,
        standings: Arc::new(AtomicU64::new(0)),
        measuring,
    };
    for _ in 0..patients {
        let visit = target
            .create_visit_with(json!({"provider": PROVIDER, "external_ref": "loadtest-queue"}))
            .await?;
        let who = load.knock(visit).await?;
        load.shows(|e| e.iter().any(|p| p["participant"]["name"] == who.as_str()))
            .await?;
    }
    Ok(load)
}

impl QueueLoad {
    /// A new patient knocks in `visit`; their identity (also their name).
    async fn knock(&mut self, visit: String) -> anyhow::Result<String> {
        self.knocks += 1;
        let identity = format!("queue-pt-{}", self.knocks);
        let token = self.target.token(&visit, "patient", &identity)?;
        let (mut ws, _, placed) =
            join(&self.target, &token, self.sources.pick(self.knocks)).await?;
        if placed != "waiting" {
            bail!("patient placed in {placed}");
        }
        let (leave, mut told) = oneshot::channel();
        let standings = self.standings.clone();
        let measuring = self.measuring.clone();
        let done = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut told => {
                        let _ = ws.send(json!({"type": "leave"}).to_string()).await;
                        ws.close().await;
                        return;
                    }
                    frame = ws.next() => match frame {
                        Ok(Incoming::Text(t)) => {
                            if t.contains("\"type\":\"waiting\"")
                                && measuring.load(Ordering::Relaxed)
                            {
                                standings.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => return,
                    },
                }
            }
        });
        self.waiting.push_back(Waiting {
            visit,
            identity: identity.clone(),
            leave,
            done,
        });
        Ok(identity)
    }

    /// Reads the dashboard until a `queue` frame whose entries satisfy `pred`.
    async fn shows(&mut self, pred: impl Fn(&[Value]) -> bool) -> anyhow::Result<()> {
        loop {
            let q = self.dashboard.until("queue").await?;
            let entries = q["entries"].as_array().context("queue entries")?;
            if pred(entries) {
                return Ok(());
            }
        }
    }

    /// Changes the queue every `every` until the phase stops; records each change's time to
    /// the dashboard.
    pub async fn churn(mut self, every: Duration, phase: Phase) -> Stats {
        let mut stats = Stats::default();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !*phase.stop.borrow() {
            tick.tick().await;
            if let Err(e) = self.change(&phase, &mut stats).await {
                stats.error(format!("queue: {e}"));
                break;
            }
        }
        stats.count(
            "waiting frames to patients",
            self.standings.load(Ordering::Relaxed),
        );
        for w in self.waiting.drain(..) {
            let _ = w.leave.send(());
            let _ = w.done.await;
        }
        self.dashboard.close().await;
        stats
    }

    async fn change(&mut self, phase: &Phase, stats: &mut Stats) -> anyhow::Result<()> {
        let oldest = self.waiting.pop_front().context("nobody waiting")?;
        let measuring = phase.measuring.load(Ordering::Relaxed);
        let t = Instant::now();
        let _ = oldest.leave.send(());
        let gone = oldest.identity.clone();
        self.shows(|e| e.iter().all(|p| p["participant"]["name"] != gone.as_str()))
            .await?;
        if measuring {
            stats.record("queue update after a leave", t.elapsed());
        }
        let _ = oldest.done.await;
        let t = Instant::now();
        let who = self.knock(oldest.visit).await?;
        self.shows(|e| e.iter().any(|p| p["participant"]["name"] == who.as_str()))
            .await?;
        if measuring {
            stats.record("queue update after a knock", t.elapsed());
            stats.count("queue changes", 2);
        }
        Ok(())
    }
}
