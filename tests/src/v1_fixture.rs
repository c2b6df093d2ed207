//! Fixture of the `/v1` stream tests: services, an NDJSON line reader, open streams
//! counted from the gateway's metrics.

use crate::support;

use std::path::Path;

use serde_json::json;
use support::*;

pub fn services(root: &Path) {
    let script = reporting_script(
        &[
            json!({"name": "build", "state": "success", "message": "built"}),
            json!({"name": "migrate", "state": "success", "message": "migrated"}),
        ],
        0,
    );
    let config = json!({"description": "test service", "steps": [{"name": "build"}, {"name": "migrate"}]});
    write_service(root, "alpha", config.clone(), &script);
    write_service(root, "beta", config, &script);
    // A folder that does not sync still has a name.
    std::fs::create_dir_all(root.join("broken")).unwrap();
}
