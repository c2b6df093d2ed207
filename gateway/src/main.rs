use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    common::telemetry::init("gateway");
    let config = gateway::Config::parse();
    let (listen, addr_file) = (config.listen, config.addr_file.clone());
    common::server::run_main("gateway", listen, addr_file.as_deref(), |listener, shutdown| {
        gateway::run(config, listener, shutdown)
    })
    .await
}
