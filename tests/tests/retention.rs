//! Retention (issue 14): finished deployments older than the policy's days go with
//! their steps, events and output, except the newest K of each service and each
//! service's last successful one, and the next run's step plan still comes from that
//! one; token records go a while after they expire and revocations once their token
//! has expired (never the newest). Old rows are made by moving real ones back in time
//! in the services' databases. On SQLite and PostgreSQL.

use std::time::Duration;

use chrono::Utc;
use deploy_service::storage::{deployments, events, log_lines, steps};
use sea_orm::{ColumnTrait, Database, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, sea_query::Expr};
use serde_json::json;
use tests::{
    Backend, Process, Stack,
    deploy_rpc::{Fixture, write_service},
    on_every_backend,
    support::{jti, revoke, service_token},
    wait_until,
};
use tonic::Code;

on_every_backend!(
    old_deployments_go_but_the_newest_and_the_last_success_stay,
    expired_token_records_and_revocations_go,
);

/// Succeeds with three steps and a line of output, or fails when its context says so.
const SCRIPT: &str = r#"if grep -q '"fail"' "$2"; then
  echo '{"name": "build", "state": "failure", "message": "no"}'
  exit 1
fi
echo '{"name": "build", "state": "success"}'
echo '{"name": "migrate", "state": "success"}'
echo '{"name": "extra", "state": "success"}'
echo "output line"
"#;

async fn rows_of(db: &DatabaseConnection, id: i64) -> (u64, u64, u64, u64) {
    (
        deployments::Entity::find_by_id(deploy_service::model::DeploymentId(id))
            .count(db)
            .await
            .unwrap(),
        steps::Entity::find()
            .filter(steps::Column::DeploymentId.eq(id))
            .count(db)
            .await
            .unwrap(),
        events::Entity::find()
            .filter(events::Column::DeploymentId.eq(id))
            .count(db)
            .await
            .unwrap(),
        log_lines::Entity::find()
            .filter(log_lines::Column::DeploymentId.eq(id))
            .count(db)
            .await
            .unwrap(),
    )
}

async fn old_deployments_go_but_the_newest_and_the_last_success_stay(backend: Backend) {
    let stack = Stack::builder(backend)
        .services(|dir| {
            for name in ["alpha", "beta"] {
                write_service(dir, name, json!({"steps": [{"name": "build"}]}), SCRIPT);
            }
        })
        .env(Process::Deploy, "SLIPWAY_RETENTION_KEEP_PER_SERVICE", "2")
        .env(Process::Deploy, "SLIPWAY_RETENTION_INTERVAL_SECS", "1")
        .env(Process::Deploy, "SLIPWAY_RETENTION_BATCH", "1")
        .start()
        .await;
    let admin = stack.admin_token().await;
    let f = Fixture { stack, admin };
    let alpha = f.service_token("alpha").await;
    let beta = f.service_token("beta").await;
    let run = async |token: &str, fail: bool| {
        let context = if fail { json!({"fail": "yes"}) } else { json!({}) };
        let d = f.start_with(token, context).await.unwrap();
        f.finished(d.id).await.id
    };
    // alpha: two successes, then three failures; beta: two successes.
    let mut a = Vec::new();
    for fail in [false, false, true, true, true] {
        a.push(run(&alpha, fail).await);
    }
    let b = [run(&beta, false).await, run(&beta, false).await];
    let db = Database::connect(f.stack.database_url("deploy")).await.unwrap();
    assert_eq!(rows_of(&db, a[0]).await.3, 1, "the output is stored");
    // All but beta's last finished 100 days ago.
    let old = Utc::now() - chrono::Duration::days(100);
    deployments::Entity::update_many()
        .col_expr(deployments::Column::Finished, Expr::value(old))
        .filter(deployments::Column::Id.is_in(a.iter().copied().chain([b[0]])))
        .exec(&db)
        .await
        .unwrap();

    // alpha keeps its newest two (a[3], a[4]) and its last success (a[1]); a[0] and
    // a[2] go with their steps, events and output. beta keeps both: its newest two.
    for gone in [a[0], a[2]] {
        wait_until(Duration::from_secs(30), async || match rows_of(&db, gone).await {
            (0, 0, 0, 0) => Ok(()),
            rows => Err(format!("deployment {gone} still has rows {rows:?}")),
        })
        .await;
        let mut deploy = f.deploy().await;
        let request = tests::grpc::bearer(proto::deploy::v1::GetDeploymentRequest { id: gone }, &f.admin);
        assert_eq!(deploy.get_deployment(request).await.unwrap_err().code(), Code::NotFound);
    }
    for kept in [a[1], a[3], a[4], b[0], b[1]] {
        let (deployment, steps, events, lines) = rows_of(&db, kept).await;
        assert_eq!(deployment, 1, "{kept} kept");
        assert!(steps > 0 && events > 0, "{kept}: its steps and events stay");
        if [a[1], b[0], b[1]].contains(&kept) {
            assert_eq!(lines, 1, "{kept}: its output stays");
        }
        assert!(f.log(&f.admin, kept, 0, 0).await.is_ok());
    }
    // The old ones kept have their events compacted to the last of the deployment
    // and of each step; the recent one (b[1]) keeps every event.
    for old_kept in [a[1], a[3], a[4], b[0]] {
        wait_until(Duration::from_secs(30), async || match rows_of(&db, old_kept).await {
            (1, steps, events, _) if events > 0 && events <= 1 + steps => Ok(()),
            rows => Err(format!("deployment {old_kept} not compacted: {rows:?}")),
        })
        .await;
    }
    let (_, steps, events, _) = rows_of(&db, b[1]).await;
    assert!(
        events > 1 + steps,
        "b[1] keeps all its events: {events} for {steps} steps"
    );

    // The next run of alpha is planned from its last success, which was kept.
    let next = f.start_with(&alpha, json!({})).await.unwrap();
    let names: Vec<&str> = next.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["build", "migrate", "extra"]);
    f.finished(next.id).await;
}

async fn expired_token_records_and_revocations_go(backend: Backend) {
    use auth_service::storage::{revocations, tokens};
    let stack = Stack::builder(backend)
        .services(|dir| write_service(dir, "alpha", json!({}), "true\n"))
        .env(Process::Auth, "SLIPWAY_RETENTION_INTERVAL_SECS", "1")
        .start()
        .await;
    let admin = stack.admin_token().await;
    let mut minted = Vec::new();
    for _ in 0..4 {
        minted.push(service_token(&stack, &admin, "alpha").await);
    }
    let ids: Vec<String> = minted.iter().map(|t| jti(t)).collect();
    revoke(&stack, &admin, &minted[2], "/v1/deployments").await;
    revoke(&stack, &admin, &minted[3], "/v1/deployments").await;
    let db = Database::connect(stack.database_url("auth")).await.unwrap();
    let days_ago = |days: i64| Utc::now() - chrono::Duration::days(days);
    // 0 and 2 expired 40 days ago, 1 ten days ago; 3 (revoked last) expired too.
    for (id, days) in [(&ids[0], 40), (&ids[1], 10), (&ids[2], 40), (&ids[3], 40)] {
        tokens::Entity::update_many()
            .col_expr(tokens::Column::ExpiresAt, Expr::value(days_ago(days)))
            .filter(tokens::Column::Id.eq(id.as_str()))
            .exec(&db)
            .await
            .unwrap();
        revocations::Entity::update_many()
            .col_expr(revocations::Column::ExpiresAt, Expr::value(days_ago(days)))
            .filter(revocations::Column::TokenId.eq(id.as_str()))
            .exec(&db)
            .await
            .unwrap();
    }
    let token_rows = async |id: &str| tokens::Entity::find_by_id(id.to_owned()).count(&db).await.unwrap();
    let revocation_rows = async |id: &str| {
        revocations::Entity::find()
            .filter(revocations::Column::TokenId.eq(id))
            .count(&db)
            .await
            .unwrap()
    };
    wait_until(Duration::from_secs(30), async || {
        let left = (
            token_rows(&ids[0]).await,
            token_rows(&ids[2]).await,
            revocation_rows(&ids[2]).await,
        );
        if left == (0, 0, 0) {
            Ok(())
        } else {
            Err(format!("expired records left: {left:?}"))
        }
    })
    .await;
    // Expired ten days ago: its record stays (30 days); the newest revocation stays
    // even though its token expired, so its sequence number is never reused.
    assert_eq!(token_rows(&ids[1]).await, 1);
    assert_eq!(revocation_rows(&ids[3]).await, 1);
    // The admin's own token is untouched.
    assert_eq!(token_rows(&jti(&admin)).await, 1);
}
