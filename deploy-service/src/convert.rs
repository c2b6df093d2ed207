//! Rows to proto messages, event rows to `Event`s, and JSON to and from
//! `google.protobuf.Struct`.

use proto::{deploy::v1 as pb, wkt};
use serde_json::Value;

use crate::{
    model::Status,
    storage::{deployments, events, log_lines, steps},
};

pub use proto::json::{from_struct, to_struct};

pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> wkt::Timestamp {
    at.into()
}

/// A proto timestamp as UTC, if it is a valid one.
pub fn from_timestamp(at: &wkt::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::try_from(*at).ok()
}

pub fn status(status: Status) -> pb::DeploymentStatus {
    match status {
        Status::Queued => pb::DeploymentStatus::Queued,
        Status::Running => pb::DeploymentStatus::Running,
        Status::Succeeded => pb::DeploymentStatus::Succeeded,
        Status::Failed => pb::DeploymentStatus::Failed,
        Status::Cancelled => pb::DeploymentStatus::Cancelled,
    }
}

pub fn log_line(row: &log_lines::Model) -> pb::LogLine {
    let stream = match row.stream {
        1 => pb::LogStream::Stdout,
        2 => pb::LogStream::Stderr,
        3 => pb::LogStream::Marker,
        _ => pb::LogStream::Unspecified,
    };
    pb::LogLine {
        line: row.line,
        time: Some(timestamp(row.time)),
        stream: stream.into(),
        text: row.text.clone(),
    }
}

pub fn step(row: &steps::Model) -> pb::Step {
    pb::Step {
        id: row.id,
        deployment_id: row.deployment_id.0,
        name: row.name.clone(),
        state: row.state.clone(),
        started: row.started.map(timestamp),
        finished: row.finished.map(timestamp),
        message: row.message.clone(),
        sequence: row.sequence,
    }
}

/// A deployment with the given (visible) steps.
pub fn deployment(row: &deployments::Model, steps: &[steps::Model]) -> pb::Deployment {
    pb::Deployment {
        id: row.id.0,
        service_id: row.service_id.0,
        service: row.service.clone(),
        origin: row.origin.clone(),
        user: row.user.clone(),
        started: row.started.map(timestamp),
        finished: row.finished.map(timestamp),
        context: Some(to_struct(&row.context).unwrap_or_default()),
        status: status(row.status) as i32,
        steps: steps.iter().map(step).collect(),
        failure_reason: row.failure_reason.clone().unwrap_or_default(),
        run_started: row.run_started.map(timestamp),
        service_removed: false,
    }
}

/// The payload an event row stores: the message in proto3 JSON.
pub fn deployment_payload(row: &deployments::Model) -> Value {
    serde_json::to_value(deployment(row, &[])).unwrap_or(Value::Null)
}

pub fn step_payload(row: &steps::Model) -> Value {
    serde_json::to_value(step(row)).unwrap_or(Value::Null)
}

/// An event row as an `Event`; None if its payload cannot be read back.
pub fn event(row: &events::Model) -> Option<pb::Event> {
    let payload = match row.kind.as_str() {
        "deployment" => pb::event::Payload::Deployment(serde_json::from_value(row.payload.clone()).ok()?),
        "step" => pb::event::Payload::Step(serde_json::from_value(row.payload.clone()).ok()?),
        _ => return None,
    };
    Some(pb::Event {
        sequence: row.sequence,
        payload: Some(payload),
        deleted: row.deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeploymentId;

    #[test]
    fn events_round_trip_through_their_payload() {
        let at = crate::model::now();
        let row = steps::Model {
            id: 3,
            deployment_id: DeploymentId(2),
            sequence: 1,
            name: "build".into(),
            state: "success".into(),
            started: Some(at),
            finished: Some(at),
            message: "ok".into(),
            removed: false,
        };
        let event = event(&events::Model {
            sequence: 7,
            deployment_id: DeploymentId(2),
            service: "alpha".into(),
            kind: "step".into(),
            deleted: true,
            payload: step_payload(&row),
            created_at: at,
        })
        .unwrap();
        assert_eq!(event.sequence, 7);
        assert!(event.deleted);
        assert_eq!(event.payload, Some(pb::event::Payload::Step(step(&row))));
    }
}
