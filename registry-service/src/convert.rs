//! Rows to proto messages, and JSON to and from `google.protobuf.Struct`.

use proto::{registry::v1 as pb, wkt};

use crate::storage::{deployed_services, service_events, services};

pub use proto::json::{from_struct, to_struct};

pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> wkt::Timestamp {
    at.into()
}

pub fn service(row: &services::Model) -> pb::Service {
    pb::Service {
        id: row.id,
        name: row.name.clone(),
        data: Some(to_struct(&row.data).unwrap_or_default()),
    }
}

pub fn deployed(row: &deployed_services::Model) -> pb::DeployedService {
    pb::DeployedService {
        id: row.id,
        deployment_id: row.deployment_id,
        service: row.service.clone(),
        config: Some(to_struct(&row.config).unwrap_or_default()),
        published_at: Some(timestamp(row.published_at)),
    }
}

/// A stored service event as sent to watchers; None when its payload is unreadable.
pub fn service_event(row: &service_events::Model) -> Option<pb::ServiceEvent> {
    let payload = row.payload.as_object()?;
    let service = pb::Service {
        id: payload.get("id")?.as_i64()?,
        name: payload.get("name")?.as_str()?.to_owned(),
        data: Some(to_struct(payload.get("data")?).unwrap_or_default()),
    };
    Some(pb::ServiceEvent {
        service: Some(service),
        deleted: row.deleted,
        sequence: row.sequence,
    })
}
