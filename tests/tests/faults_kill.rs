//! Kill -9 under load (issue 16, item 2): with logins, reads, deployment starts, step
//! reports from running scripts and three watchers (gRPC, NDJSON, WebSocket) going
//! on, each of auth, registry, deploy and gateway is SIGKILLed in turn, kept down,
//! and started again at the same address. While one is down the gateway answers 503
//! (never 500, never a hang); soon after its restart everything answers again; no
//! acknowledged deployment or step report is lost; every deployment ends with a
//! reason; the watchers miss and double nothing; revoked tokens stay refused.
//! `SLIPWAY_FAULTS_LONG=1` runs more rounds with longer outages.

use tests::{Backend, fault_fixture::*, on_every_backend};

on_every_backend!(sigkill_each_service_under_load);

async fn sigkill_each_service_under_load(backend: Backend) {
    let mut stack = builder(backend).start().await;
    let mut faults = Faults::start(&stack).await;
    let rounds = if long() { 3 } else { 1 };
    faults.steady(steady_time()).await;
    for _ in 0..rounds {
        for name in ["auth", "registry", "deploy", "gateway"] {
            faults.kill_and_restart(&mut stack, name).await;
            faults.steady(steady_time()).await;
        }
    }
    let problems = faults.finish(&stack, RECOVERY).await;
    assert!(problems.is_empty(), "{}\n{}", problems.join("\n"), stack.logs());
}
