//! Group commit for `ReportStep`: reports that arrive while the previous ones are
//! being written are stored together, one transaction per deployment, instead of one
//! transaction each. Callers still get their own step back, or their refusal.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use crate::model::DeploymentId;
use crate::{
    model::Report,
    storage::{ReportRefused, Store, steps},
};

/// Most reports written in one round.
const ROUND: usize = 512;

/// Why a report was not applied (a copy for each caller of a round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    NotStarted,
    Finished,
    /// The database cannot be reached for now (`common::db::is_unavailable`).
    Unavailable,
    /// The disk is full or read-only ([`common::error::storage_problem`]'s message).
    Storage(&'static str),
    Internal,
}

type Reply = oneshot::Sender<Result<steps::Model, Refusal>>;

#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::Sender<(DeploymentId, Report, Reply)>,
}

impl Batcher {
    /// Starts the writer task; it ends when every `Batcher` is dropped.
    pub fn start(store: Store) -> Batcher {
        let (queue, incoming) = mpsc::channel(4 * ROUND);
        tokio::spawn(write_rounds(store, incoming));
        Batcher { queue }
    }

    /// Applies one report to deployment `id`, together with whatever else is waiting.
    pub async fn report(&self, id: DeploymentId, report: Report) -> Result<steps::Model, Refusal> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((id, report, reply))
            .await
            .map_err(|_| Refusal::Internal)?;
        answer.await.map_err(|_| Refusal::Internal)?
    }
}

async fn write_rounds(store: Store, mut incoming: mpsc::Receiver<(DeploymentId, Report, Reply)>) {
    while let Some(first) = incoming.recv().await {
        let mut round = vec![first];
        while round.len() < ROUND {
            match incoming.try_recv() {
                Ok(next) => round.push(next),
                Err(_) => break,
            }
        }
        // Per deployment, in arrival order.
        let mut order: Vec<DeploymentId> = Vec::new();
        let mut groups: HashMap<DeploymentId, Vec<(Report, Reply)>> = HashMap::new();
        for (id, report, reply) in round {
            if !groups.contains_key(&id) {
                order.push(id);
            }
            groups.entry(id).or_default().push((report, reply));
        }
        for id in order {
            let Some(group) = groups.remove(&id) else { continue };
            let (reports, replies): (Vec<Report>, Vec<Reply>) = group.into_iter().unzip();
            match store.apply_reports(id, &reports, None).await {
                Ok(applied) => {
                    for (reply, step) in replies.into_iter().zip(applied) {
                        let _ = reply.send(Ok(step));
                    }
                }
                Err(refused) => {
                    let refusal = match refused {
                        ReportRefused::NotFound => Refusal::NotFound,
                        ReportRefused::NotStarted => Refusal::NotStarted,
                        ReportRefused::Finished | ReportRefused::Lost => Refusal::Finished,
                        ReportRefused::Db(error) if common::db::is_unavailable(&error) => {
                            tracing::warn!(%error, %id, "step reports not stored: the database is unavailable");
                            Refusal::Unavailable
                        }
                        ReportRefused::Db(error) => {
                            tracing::error!(%error, %id, "step reports not stored");
                            common::error::storage_problem(&error).map_or(Refusal::Internal, Refusal::Storage)
                        }
                    };
                    for reply in replies {
                        let _ = reply.send(Err(refusal));
                    }
                }
            }
        }
    }
}
