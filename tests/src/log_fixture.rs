//! The deployment-log tests' helpers: reading a run's output over gRPC
//! (`GetDeploymentLog`, `WatchDeploymentLog`) and the scripts that print it.

use std::time::Duration;

use proto::deploy::v1::{self as pb, LogStream};
use tonic::Status;

use crate::{deploy_rpc::Fixture, grpc::bearer, wait_until};

/// Reads the config file's deployment token into `$token` and the deployment id into `$id`.
pub const READ_CONFIG: &str = r#"here=$(cd "$(dirname "$0")" && pwd)
id=$(sed -n 's/^  "deployment_id": "\([0-9]*\)",$/\1/p' "$2")
token=$(sed -n 's/^  "access_token": "\(.*\)",$/\1/p' "$2")
cp "$2" "$here/config-$id"
"#;

/// Waits for `release-$id` next to the script.
pub const WAIT_RELEASE: &str = r#"while [ ! -e "$here/release-$id" ]; do sleep 0.05; done
"#;

impl Fixture {
    pub async fn log(
        &self,
        token: &str,
        id: i64,
        after: i64,
        limit: u32,
    ) -> Result<pb::GetDeploymentLogResponse, Status> {
        let request = pb::GetDeploymentLogRequest {
            deployment_id: id,
            after_line: after,
            limit,
        };
        self.deploy()
            .await
            .get_deployment_log(bearer(request, token))
            .await
            .map(|r| r.into_inner())
    }

    /// The whole stored log (admin), once the run is over.
    pub async fn whole_log(&self, id: i64) -> pb::GetDeploymentLogResponse {
        wait_until(Duration::from_secs(30), async || {
            let page = self.log(&self.admin, id, 0, 5000).await.map_err(|e| e.to_string())?;
            if page.complete {
                Ok(page)
            } else {
                Err(format!("log of {id} not complete"))
            }
        })
        .await
    }

    pub async fn watch_log(&self, token: &str, id: i64, after: i64) -> Result<tonic::Streaming<pb::LogLine>, Status> {
        let request = pb::WatchDeploymentLogRequest {
            deployment_id: id,
            after_line: after,
        };
        self.deploy()
            .await
            .watch_deployment_log(bearer(request, token))
            .await
            .map(|r| r.into_inner())
    }
}

/// Receives the next `n` lines of a follow.
pub async fn next_lines(stream: &mut tonic::Streaming<pb::LogLine>, n: usize) -> Vec<pb::LogLine> {
    let mut lines = Vec::new();
    while lines.len() < n {
        let line = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a log line within 30 s")
            .expect("the follow failed")
            .expect("the follow ended early");
        lines.push(line);
    }
    lines
}

/// Receives every line until the follow ends.
pub async fn rest(stream: &mut tonic::Streaming<pb::LogLine>) -> Vec<pb::LogLine> {
    let mut lines = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("the follow to go on or end within 30 s")
            .expect("the follow failed");
        match next {
            Some(line) => lines.push(line),
            None => return lines,
        }
    }
}

/// The texts of the lines of one stream.
pub fn texts(lines: &[pb::LogLine], stream: LogStream) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.stream == stream as i32)
        .map(|l| l.text.clone())
        .collect()
}

pub fn numbers(lines: &[pb::LogLine]) -> Vec<i64> {
    lines.iter().map(|l| l.line).collect()
}
