//! `run_queue`: the hot table of live runs (issue 15). A row per deployment that is
//! queued or whose script may still run, inserted at acceptance and deleted when the
//! run ends, so a claim never scans finished runs. A running row names the replica
//! that owns it, its lease and fence, and the slots it holds: `(service, slot)` and
//! `global_slot` are unique, so the database itself refuses a run over the
//! per-service or the global limit, whichever replica claims it. Queued rows hold no
//! slot (NULL, which a unique index lets repeat).
//!
//! Deployments queued or running when this migration runs are copied in; running ones
//! are owned by nobody with an expired lease: the first replica to start adopts them
//! (stopping their scripts where they still run) or any replica sweeps them.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RunQueue::Table)
                    .if_not_exists()
                    .col(big_integer(RunQueue::DeploymentId).primary_key())
                    .col(string(RunQueue::Service))
                    .col(string(RunQueue::State))
                    .col(string_null(RunQueue::Owner))
                    .col(big_integer(RunQueue::LeaseExpires).default(0))
                    .col(big_integer(RunQueue::Fence).default(0))
                    .col(integer_null(RunQueue::Slot))
                    .col(integer_null(RunQueue::GlobalSlot))
                    .col(string_null(RunQueue::CancelBy))
                    .to_owned(),
            )
            .await?;
        // The proof of the limits.
        manager
            .create_index(
                Index::create()
                    .name("ux_run_queue_service_slot")
                    .table(RunQueue::Table)
                    .col(RunQueue::Service)
                    .col(RunQueue::Slot)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_run_queue_global_slot")
                    .table(RunQueue::Table)
                    .col(RunQueue::GlobalSlot)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Claims read the queue in order of acceptance; heartbeats and sweeps read
        // running rows by owner and by lease.
        for (name, columns) in [
            ("idx_run_queue_state_id", [RunQueue::State, RunQueue::DeploymentId]),
            ("idx_run_queue_owner_state", [RunQueue::Owner, RunQueue::State]),
            ("idx_run_queue_state_lease", [RunQueue::State, RunQueue::LeaseExpires]),
        ] {
            let mut index = Index::create();
            index.name(name).table(RunQueue::Table);
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        let db = manager.get_connection();
        db.execute_unprepared(
            "INSERT INTO run_queue (deployment_id, service, state, owner, lease_expires, fence, slot, global_slot) \
             SELECT id, service, 'queued', NULL, 0, 0, NULL, NULL FROM deployments WHERE status = 'queued'",
        )
        .await?;
        db.execute_unprepared(
            "INSERT INTO run_queue (deployment_id, service, state, owner, lease_expires, fence, slot, global_slot) \
             SELECT id, service, 'running', NULL, 0, 1, \
                    CAST(ROW_NUMBER() OVER (PARTITION BY service ORDER BY id) - 1 AS INTEGER), \
                    CAST(ROW_NUMBER() OVER (ORDER BY id) - 1 AS INTEGER) \
             FROM deployments WHERE status = 'running'",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RunQueue::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum RunQueue {
    Table,
    DeploymentId,
    Service,
    State,
    Owner,
    LeaseExpires,
    Fence,
    Slot,
    GlobalSlot,
    CancelBy,
}
