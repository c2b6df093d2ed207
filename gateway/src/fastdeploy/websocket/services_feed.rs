//! The services side of the live feed: the last known services list, kept by the
//! registry's events, so that a reopened `WatchServices` (after a registry replica
//! died, say) can be followed by a fresh read of the list and a `service` frame for
//! each difference: nothing changed while the watch was down goes unseen. A frame may
//! come twice (in the difference and again as its event); frames carry the state, so
//! a client that applies both ends in the same place.

use std::collections::BTreeMap;

use proto::registry::v1::{Service, ServiceEvent};
use serde_json::{Map, Value};

use crate::fastdeploy::objects;

/// The services list as last known, by id; `None` before the first read.
#[derive(Debug, Default)]
pub struct Snapshot(Option<BTreeMap<i64, Service>>);

impl Snapshot {
    /// Takes a fresh read of the whole list; returns the frames of every difference
    /// from the last known list (none on the first read: nobody was told anything yet).
    pub fn relisted(&mut self, list: Vec<Service>) -> Vec<Map<String, Value>> {
        let fresh: BTreeMap<i64, Service> = list.into_iter().map(|s| (s.id, s)).collect();
        let mut frames = Vec::new();
        if let Some(known) = &self.0 {
            for (id, service) in &fresh {
                if known.get(id) != Some(service) {
                    frames.push(service_frame(service, false));
                }
            }
            for (id, service) in known {
                if !fresh.contains_key(id) {
                    frames.push(service_frame(service, true));
                }
            }
        }
        self.0 = Some(fresh);
        frames
    }

    /// Applies one of the registry's events.
    pub fn apply(&mut self, event: &ServiceEvent) {
        let (Some(known), Some(service)) = (&mut self.0, &event.service) else {
            return;
        };
        if event.deleted {
            known.remove(&service.id);
        } else {
            known.insert(service.id, service.clone());
        }
    }
}

/// `{"type": "service", id, name, data, deleted}` (contract 5.4).
pub fn service_frame(service: &Service, deleted: bool) -> Map<String, Value> {
    let mut frame = objects::service(service);
    frame.insert("type".into(), "service".into());
    frame.insert("deleted".into(), deleted.into());
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(id: i64, name: &str) -> Service {
        Service {
            id,
            name: name.into(),
            ..Default::default()
        }
    }

    fn described(frames: &[Map<String, Value>]) -> Vec<(i64, bool)> {
        frames
            .iter()
            .map(|f| (f["id"].as_i64().unwrap(), f["deleted"].as_bool().unwrap()))
            .collect()
    }

    #[test]
    fn a_reread_list_yields_what_changed_while_the_watch_was_down() {
        let mut snapshot = Snapshot::default();
        assert!(snapshot.relisted(vec![service(1, "a"), service(2, "b")]).is_empty());
        // Seen on the stream: no frame owed for it after a reconnect.
        snapshot.apply(&ServiceEvent {
            service: Some(service(3, "c")),
            deleted: false,
            sequence: 1,
        });
        // Down, then: b renamed, a deleted, d added.
        let frames = snapshot.relisted(vec![service(2, "b2"), service(3, "c"), service(4, "d")]);
        assert_eq!(described(&frames), [(2, false), (4, false), (1, true)]);
        assert!(
            snapshot
                .relisted(vec![service(2, "b2"), service(3, "c"), service(4, "d")])
                .is_empty()
        );
    }
}
