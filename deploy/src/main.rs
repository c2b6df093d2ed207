//! `slipway`: start the whole system locally (`up`), manage users, tokens and keys,
//! sync and list services, start deployments, and run one service (`serve`).

mod client;
mod deploy_cmd;
mod logs_cmd;
mod services;
mod tokens;
mod up;
mod users;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "slipway",
    version,
    about = "Slipway: deployments with narrowly scoped tokens"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the three services and the gateway locally on SQLite.
    Up(up::UpArgs),
    /// Manage users.
    Users {
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// Mint, list, revoke, attenuate and inspect tokens (through the gateway).
    Tokens {
        #[command(subcommand)]
        command: tokens::TokensCommand,
    },
    /// Signing keys.
    Keys {
        #[command(subcommand)]
        command: tokens::KeysCommand,
    },
    /// Start a deployment with a service token (SLIPWAY_TOKEN); --wait follows it and
    /// exits 0 if it succeeded, 1 if it failed, 2 on a usage or connection problem.
    Deploy(deploy_cmd::DeployArgs),
    /// Print a deployment's output (what its deploy script printed); --follow keeps
    /// printing until the run ends.
    Logs(logs_cmd::LogsArgs),
    /// Sync and list the services of a running system (through its gateway).
    Services {
        #[command(subcommand)]
        command: services::ServicesCommand,
    },
    /// Run one service in this process (what `up` starts, one process each).
    #[command(hide = true)]
    Serve {
        #[command(subcommand)]
        service: Service,
    },
}

#[derive(Debug, Subcommand)]
enum Service {
    // Boxed: the auth and deploy services have the most settings by far.
    Auth(Box<auth_service::Config>),
    Registry(registry_service::Config),
    Deploy(Box<deploy_service::Config>),
    Gateway(gateway::Config),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => {
            common::telemetry::init("slipway");
            report(up::up(args).await)
        }
        Command::Users { command } => report(users::run(command).await),
        Command::Tokens { command } => report(tokens::run(command).await),
        Command::Keys { command } => report(tokens::keys(command).await),
        Command::Deploy(args) => deploy_cmd::run(args).await,
        Command::Logs(args) => report(logs_cmd::run(args).await),
        Command::Services { command } => report(services::run(command).await),
        Command::Serve { service } => serve(service).await,
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(service: Service) -> ExitCode {
    use common::server::run_main;
    match service {
        Service::Auth(c) => {
            common::telemetry::init("auth-service");
            let (listen, file) = (c.listen, c.addr_file.clone());
            run_main("auth-service", listen, file.as_deref(), |l, s| {
                auth_service::run(*c, l, s)
            })
            .await
        }
        Service::Registry(c) => {
            common::telemetry::init("registry-service");
            let (listen, file) = (c.listen, c.addr_file.clone());
            run_main("registry-service", listen, file.as_deref(), |l, s| {
                registry_service::run(c, l, s)
            })
            .await
        }
        Service::Deploy(c) => {
            common::telemetry::init("deploy-service");
            let (listen, file) = (c.listen, c.addr_file.clone());
            run_main("deploy-service", listen, file.as_deref(), |l, s| {
                deploy_service::run(*c, l, s)
            })
            .await
        }
        Service::Gateway(c) => {
            common::telemetry::init("gateway");
            let (listen, file) = (c.listen, c.addr_file.clone());
            run_main("gateway", listen, file.as_deref(), |l, s| gateway::run(c, l, s)).await
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
