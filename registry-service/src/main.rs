use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    common::telemetry::init("registry-service");
    let config = registry_service::Config::parse();
    let (listen, addr_file) = (config.listen, config.addr_file.clone());
    common::server::run_main(
        "registry-service",
        listen,
        addr_file.as_deref(),
        |listener, shutdown| registry_service::run(config, listener, shutdown),
    )
    .await
}
