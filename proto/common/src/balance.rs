//! Channels to a backend that may run as several replicas. A backend URL setting takes
//! one URL (a channel exactly as before: one lazily connected HTTP/2 connection) or a
//! comma-separated list (`--registry-url http://a:50052,http://b:50052`): then one
//! channel spreads calls over the replicas (tower's power of two choices, by load) and
//! keeps only the replicas whose gRPC health says serving.
//!
//! Each listed replica's health is followed with a `Watch` stream of its own. A
//! replica that dies (its stream breaks), stops (it says NOT_SERVING as it drains) or
//! is not ready yet (NOT_SERVING until its database and the auth service's feed are
//! there) leaves the set at once, and comes back when its health says serving again
//! (the stream is opened again every [`RETRY`]). Calls already sent to a replica that
//! dies fail as they would with one URL; later calls go to the others. When no replica
//! says serving, every one is kept, so calls fail fast (`UNAVAILABLE`) as with one URL
//! instead of waiting for a replica.

use std::time::Duration;

use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint, channel::Change};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// How soon a replica's health stream is opened again after it ended or failed.
pub const RETRY: Duration = Duration::from_millis(250);

/// The URLs of a backend setting: comma-separated, blanks around them ignored.
pub fn urls(list: &str) -> Vec<&str> {
    list.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
}

/// A channel to the backend at `list` (one URL, or several separated by commas), each
/// endpoint set up by `configure` (timeouts, keep-alive). Connects lazily: the channel
/// exists while the backend is down. Must be called within a Tokio runtime.
pub fn channel(list: &str, configure: impl Fn(Endpoint) -> Endpoint) -> anyhow::Result<Channel> {
    if !list.contains(',') {
        return Ok(configure(Endpoint::from_shared(list.to_owned())?).connect_lazy());
    }
    let endpoints = urls(list)
        .into_iter()
        .map(|url| Ok(configure(Endpoint::from_shared(url.to_owned())?)))
        .collect::<anyhow::Result<Vec<Endpoint>>>()?;
    match endpoints.as_slice() {
        [] => anyhow::bail!("no URL in {list:?}"),
        [one] => Ok(one.connect_lazy()),
        _ => Ok(balanced(endpoints)),
    }
}

/// One channel over every endpoint, with a health follower per endpoint and a task
/// that keeps the balanced set to the serving ones. The tasks end when the last clone
/// of the channel is dropped.
fn balanced(endpoints: Vec<Endpoint>) -> Channel {
    let (channel, changes) = Channel::balance_channel::<usize>(endpoints.len() * 4);
    let (health_tx, health_rx) = mpsc::channel(endpoints.len() * 4);
    for (index, endpoint) in endpoints.iter().enumerate() {
        tokio::spawn(follow_health(index, endpoint.clone(), health_tx.clone()));
    }
    tokio::spawn(keep_serving(endpoints, changes, health_rx));
    channel
}

/// Applies health changes to the balanced set until the channel is gone.
async fn keep_serving(
    endpoints: Vec<Endpoint>,
    changes: mpsc::Sender<Change<usize, Endpoint>>,
    mut health: mpsc::Receiver<(usize, bool)>,
) {
    let mut serving = vec![false; endpoints.len()];
    let mut inserted = vec![false; endpoints.len()];
    loop {
        // Serving replicas only; every replica when none is.
        let any = serving.iter().any(|s| *s);
        for (index, endpoint) in endpoints.iter().enumerate() {
            let want = serving[index] || !any;
            if want == inserted[index] {
                continue;
            }
            let change = match want {
                true => Change::Insert(index, endpoint.clone()),
                false => Change::Remove(index),
            };
            if changes.send(change).await.is_err() {
                return;
            }
            inserted[index] = want;
        }
        tokio::select! {
            () = changes.closed() => return,
            update = health.recv() => match update {
                Some((index, up)) => serving[index] = up,
                None => return,
            },
        }
    }
}

/// Follows one endpoint's health (the server as a whole, service `""`), reporting
/// each change as `(index, serving)`, until the receiver is gone.
async fn follow_health(index: usize, endpoint: Endpoint, report: mpsc::Sender<(usize, bool)>) {
    let mut client = HealthClient::new(endpoint.connect_lazy());
    loop {
        if let Ok(stream) = client.watch(HealthCheckRequest { service: String::new() }).await {
            let mut stream = stream.into_inner();
            loop {
                let message = tokio::select! {
                    () = report.closed() => return,
                    message = stream.message() => message,
                };
                let Ok(Some(status)) = message else { break };
                let up = status.status == ServingStatus::Serving as i32;
                if report.send((index, up)).await.is_err() {
                    return;
                }
            }
        }
        if report.send((index, false)).await.is_err() {
            return;
        }
        tokio::select! {
            () = report.closed() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_split_on_commas_and_trimmed() {
        assert_eq!(urls("http://a:1"), ["http://a:1"]);
        assert_eq!(urls(" http://a:1 , http://b:2,,"), ["http://a:1", "http://b:2"]);
        assert!(urls(" , ").is_empty());
    }

    #[tokio::test]
    async fn bad_and_empty_lists_are_refused() {
        assert!(channel("http://a:1,not a url", |e| e).is_err());
        assert!(channel(",", |e| e).is_err());
        assert!(channel("", |e| e).is_err());
        assert!(channel("http://127.0.0.1:9", |e| e).is_ok());
        assert!(channel("http://127.0.0.1:9,http://127.0.0.1:10", |e| e).is_ok());
    }
}
