//! Sync: scan the services directory and bring the services table in line with it
//! (fastDeploy contract 4.3, without its all-or-nothing failure): good folders are
//! added or updated, folders that are gone are deleted, folders with a problem are
//! reported and keep their last good row. Each change's event is stored with it and
//! reaches watchers through the store's feed.

use std::collections::HashSet;

use proto::registry::v1 as pb;

use crate::{
    catalog::{Catalog, Problem},
    error::RegistryError,
    storage::{ChangeKind, Store},
};

/// What one sync did, service names sorted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
    pub problems: Vec<Problem>,
    /// Synced services that cannot deploy as they are.
    pub warnings: Vec<Problem>,
}

impl From<SyncReport> for pb::SyncServicesResponse {
    fn from(report: SyncReport) -> Self {
        pb::SyncServicesResponse {
            added: report.added,
            updated: report.updated,
            deleted: report.deleted,
            problems: report.problems.into_iter().map(problem).collect(),
            warnings: report.warnings.into_iter().map(problem).collect(),
        }
    }
}

fn problem(p: Problem) -> pb::SyncProblem {
    pb::SyncProblem {
        service: p.service,
        reason: p.reason,
    }
}

/// Runs one sync. Callers serialise syncs (see `RegistryApi`).
pub async fn sync(store: &Store, catalog: &Catalog) -> Result<SyncReport, RegistryError> {
    let scan = {
        let catalog = catalog.clone();
        tokio::task::spawn_blocking(move || catalog.scan()).await??
    };
    let kept: HashSet<String> = scan.problems.iter().map(|p| p.service.clone()).collect();
    let changes = store.apply_sync(&scan.services, &kept).await?;
    let mut report = SyncReport {
        problems: scan.problems,
        warnings: scan.warnings,
        ..SyncReport::default()
    };
    for change in changes {
        let name = change.service.name.clone();
        match change.kind {
            ChangeKind::Added => report.added.push(name),
            ChangeKind::Updated => report.updated.push(name),
            ChangeKind::Deleted => report.deleted.push(name),
        }
    }
    for list in [&mut report.added, &mut report.updated, &mut report.deleted] {
        list.sort();
    }
    for problem in &report.problems {
        tracing::warn!(service = %problem.service, reason = %problem.reason, "service folder not synced");
    }
    for warning in &report.warnings {
        tracing::warn!(service = %warning.service, reason = %warning.reason, "service synced, but it cannot deploy");
    }
    tracing::info!(
        added = report.added.len(),
        updated = report.updated.len(),
        deleted = report.deleted.len(),
        problems = report.problems.len(),
        warnings = report.warnings.len(),
        "services synced"
    );
    Ok(report)
}
