use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    common::telemetry::init("auth-service");
    let config = auth_service::Config::parse();
    let shutdown = common::shutdown::on_signal();
    let listener = match common::server::bind(config.listen, config.addr_file.as_deref()).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, listen = %config.listen, "cannot bind");
            return ExitCode::FAILURE;
        }
    };
    match auth_service::run(config, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "auth-service failed");
            ExitCode::FAILURE
        }
    }
}
