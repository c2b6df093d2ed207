use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    common::telemetry::init("auth-service");
    let config = auth_service::Config::parse();
    let (listen, addr_file) = (config.listen, config.addr_file.clone());
    common::server::run_main("auth-service", listen, addr_file.as_deref(), |listener, shutdown| {
        auth_service::run(config, listener, shutdown)
    })
    .await
}
