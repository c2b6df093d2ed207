//! Deployments over gRPC: the step state machine a run's token reports through, and
//! the event stream (replay, then live, without gaps). On SQLite and PostgreSQL.

use std::time::Duration;

use proto::deploy::v1::{self as pb, DeploymentStatus, event::Payload};
use serde_json::json;
use tests::deploy_rpc::*;
use tests::grpc::bearer;
use tests::{Backend, on_every_backend};
use tonic::Code;

on_every_backend!(
    the_step_state_machine_over_rpc,
    events_replay_then_follow_live_without_gaps,
);

async fn the_step_state_machine_over_rpc(backend: Backend) {
    let f = Fixture::start(backend, |dir| {
        write_service(
            dir,
            "alpha",
            json!({"steps": [{"name": "one"}, {"name": "two"}, {"name": "three"}]}),
            HOLD,
        );
    })
    .await;
    let d = f.start_service("alpha").await;
    let token = f.deployment_token("alpha", d.id).await;
    let steps = |d: pb::Deployment| steps_of(&d);

    // An unknown state is refused and nothing is stored.
    let before = f.get(d.id).await;
    let refused = report(&f, &token, "one", "done", "").await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let refused = report(&f, &token, &"n".repeat(256), "success", "").await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(f.get(d.id).await, before);

    // Out of order: two is done, one still runs; then one hands over to three.
    report(&f, &token, "two", "success", "early").await.unwrap();
    assert_eq!(
        steps(f.get(d.id).await),
        pairs(&[("one", "running"), ("two", "success"), ("three", "pending")])
    );
    let one = report(&f, &token, "one", "success", "").await.unwrap();
    assert_eq!((one.name.as_str(), one.sequence), ("one", 1));
    assert_eq!(
        steps(f.get(d.id).await),
        pairs(&[("one", "success"), ("two", "success"), ("three", "running")])
    );
    // A finished step reported again is a new step (contract 4.10 step 6): a retry
    // shows every attempt; an unknown name is appended.
    let again = report(&f, &token, "one", "failure", "retried").await.unwrap();
    assert_ne!(again.id, one.id);
    assert_eq!(again.sequence, 4);
    let extra = report(&f, &token, "extra", "running", "").await.unwrap();
    assert_eq!(extra.sequence, 5);
    let now = f.get(d.id).await;
    assert_eq!(
        steps_of(&now),
        pairs(&[
            ("one", "success"),
            ("two", "success"),
            ("three", "running"),
            ("one", "failure"),
            ("extra", "running")
        ])
    );
    assert_eq!(now.steps[3].message, "retried");

    // Only its own deployment, only with a deployment token.
    let user = report(&f, &f.admin, "x", "success", "").await.unwrap_err();
    assert_eq!(user.code(), Code::PermissionDenied);
    let mut deploy = f.deploy().await;
    let other = deploy
        .finish_deployment(bearer(pb::FinishDeploymentRequest { id: d.id + 100 }, &token))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);

    // Finish: finished at once (contract 2.13), failed as a step failed, unfinished
    // steps removed; no more reports; the script's later exit changes nothing.
    let finishing = deploy
        .finish_deployment(bearer(pb::FinishDeploymentRequest { id: 0 }, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&finishing), DeploymentStatus::Failed, "step one failed");
    assert!(finishing.finished.is_some());
    assert_eq!(finishing.failure_reason, "step \"one\" failed");
    assert_eq!(
        steps_of(&finishing),
        pairs(&[("one", "success"), ("two", "success"), ("one", "failure")]),
        "unfinished steps are removed at finish"
    );
    let late = report(&f, &token, "three", "success", "").await.unwrap_err();
    assert!(
        matches!(late.code(), Code::FailedPrecondition | Code::Unauthenticated),
        "{late:?}"
    );
    f.release("alpha", d.id);
    let done = f.finished(d.id).await;
    assert_eq!(done, finishing, "the script's exit changes nothing");
    let steps = deploy
        .list_steps(bearer(pb::ListStepsRequest { deployment_id: d.id }, &f.admin))
        .await
        .unwrap()
        .into_inner()
        .steps;
    assert_eq!(steps, done.steps);
    let missing = deploy
        .list_steps(bearer(pb::ListStepsRequest { deployment_id: 999_999 }, &f.admin))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // A user finishing an ended deployment changes nothing.
    let unchanged = deploy
        .finish_deployment(bearer(pb::FinishDeploymentRequest { id: d.id }, &f.admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unchanged, done);
    wait_token_refused(&f, &token).await;
}

/// Reads events until one satisfies `last`.
async fn events_until(stream: &mut tonic::Streaming<pb::Event>, last: impl Fn(&pb::Event) -> bool) -> Vec<pb::Event> {
    let mut events = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("an event within 30 s")
            .unwrap()
            .expect("the stream is open");
        let done = last(&event);
        events.push(event);
        if done {
            return events;
        }
    }
}

fn finished_event(id: i64) -> impl Fn(&pb::Event) -> bool {
    move |e| matches!(&e.payload, Some(Payload::Deployment(d)) if d.id == id && d.finished.is_some())
}

async fn watch(f: &Fixture, token: &str, request: pb::WatchEventsRequest) -> tonic::Streaming<pb::Event> {
    f.deploy()
        .await
        .watch_events(bearer(request, token))
        .await
        .unwrap()
        .into_inner()
}

async fn events_replay_then_follow_live_without_gaps(backend: Backend) {
    let many: String = (0..1500)
        .map(|i| format!("echo '{{\"name\": \"s{i}\", \"state\": \"success\"}}'\n"))
        .collect();
    let f = Fixture::start(backend, |dir| {
        write_service(
            dir,
            "alpha",
            json!({"steps": [{"name": "one"}, {"name": "two"}]}),
            "echo '{\"name\": \"one\", \"state\": \"success\"}'\necho '{\"name\": \"two\", \"state\": \"success\"}'\n",
        );
        write_service(dir, "beta", json!({}), &many);
    })
    .await;
    // A live watcher from before anything happened, and one that never reads until the end.
    let mut live = watch(&f, &f.admin, pb::WatchEventsRequest::default()).await;
    let mut slow = watch(&f, &f.admin, pb::WatchEventsRequest::default()).await;
    let first = f.start_service("alpha").await;
    let seen = events_until(&mut live, finished_event(first.id)).await;
    let kinds: Vec<String> = seen
        .iter()
        .map(|e| match &e.payload {
            Some(Payload::Deployment(d)) => format!("deployment {:?}", DeploymentStatus::try_from(d.status).unwrap()),
            Some(Payload::Step(s)) => format!("step {} {}{}", s.name, s.state, if e.deleted { " deleted" } else { "" }),
            None => "none".into(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            // Started at once: announced once, already running (contract 2.11).
            "deployment Running",
            "step one running",
            "step two pending",
            "step one success",
            "step two running",
            "step two success",
            "deployment Succeeded",
        ]
    );
    assert!(seen.windows(2).all(|w| w[0].sequence < w[1].sequence));

    // Replay from the start, and resume after any event: the same events, in order.
    let mut replay = watch(
        &f,
        &f.admin,
        pb::WatchEventsRequest {
            after_sequence: -1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(events_until(&mut replay, finished_event(first.id)).await, seen);
    let mut resumed = watch(
        &f,
        &f.admin,
        pb::WatchEventsRequest {
            after_sequence: seen[3].sequence,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(events_until(&mut resumed, finished_event(first.id)).await, seen[4..]);

    // A service token sees its own service only, replay then live, across a burst
    // that overruns the broadcast; the slow watcher misses nothing either.
    let beta = f.service_token("beta").await;
    let mut beta_watch = watch(
        &f,
        &beta,
        pb::WatchEventsRequest {
            after_sequence: -1,
            ..Default::default()
        },
    )
    .await;
    let burst = f.start_service("beta").await;
    let beta_events = events_until(&mut beta_watch, finished_event(burst.id)).await;
    assert!(beta_events.len() > 1500, "{}", beta_events.len());
    assert!(beta_events.windows(2).all(|w| w[0].sequence < w[1].sequence));
    for event in &beta_events {
        let deployment_id = match &event.payload {
            Some(Payload::Deployment(d)) => d.id,
            Some(Payload::Step(s)) => s.deployment_id,
            None => 0,
        };
        assert_eq!(deployment_id, burst.id, "only beta's events");
    }
    let everything = events_until(&mut slow, finished_event(burst.id)).await;
    let mut replay_all = watch(
        &f,
        &f.admin,
        pb::WatchEventsRequest {
            after_sequence: -1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        events_until(&mut replay_all, finished_event(burst.id)).await,
        everything
    );
    let done = f.finished(burst.id).await;
    assert_eq!(done.steps.len(), 1500, "the never-reported placeholder is gone");

    let refused = f
        .deploy()
        .await
        .watch_events(bearer(
            pb::WatchEventsRequest {
                service: "alpha".into(),
                ..Default::default()
            },
            &beta,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}
