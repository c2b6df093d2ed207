use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    common::telemetry::init("deploy-service");
    let config = deploy_service::Config::parse();
    let (listen, addr_file) = (config.listen, config.addr_file.clone());
    common::server::run_main("deploy-service", listen, addr_file.as_deref(), |listener, shutdown| {
        deploy_service::run(config, listener, shutdown)
    })
    .await
}
