//! The route table itself: one entry per route, grouped as the API is. Each entry is
//! the method and path with the handler, then who may call it and what the layers must
//! know, then its OpenAPI summary and bodies. The builders are in `routes`.

use axum::routing::{any, on};
use common::{
    scope::{
        DEPLOYED_SERVICES_READ, DEPLOYMENTS_FINISH, DEPLOYMENTS_READ, DEPLOYMENTS_START, SERVICES_DELETE,
        SERVICES_READ, SERVICES_SYNC, STEPS_REPORT, TOKENS_MINT,
    },
    token::TokenType::{Config, Deployment, Service, User},
};

use super::{
    Body::{Contract, None as NoBody, Proto, ProtoStream, Text},
    Route, delete, get, post, put, websocket,
};
use crate::{
    console,
    fastdeploy::{deployments, service_token, services, users, websocket as ws},
    metrics, openapi, server, v1,
};

/// Every HTTP route of the gateway. A new route is one entry here (and its handler).
#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    // built-ins
    get("/healthz", |m| on(m, server::healthz)).open()
        .doc("Liveness of the gateway", NoBody, NoBody),
    get("/readyz", |m| on(m, server::readyz)).open()
        .doc("Readiness: every backend and the revocation feed", NoBody, Contract("Detail")),
    get("/.well-known/jwks.json", |m| on(m, server::jwks)).rpc("/slipway.auth.v1.AuthService/GetJwks")
        .doc("Public keys that verify Slipway tokens", NoBody, Proto("slipway.auth.v1.Jwks")),
    get("/metrics", |m| on(m, metrics::render)).open()
        .doc("Prometheus metrics", NoBody, NoBody),
    get("/openapi.json", |m| on(m, openapi::serve)).open()
        .doc("This document", NoBody, NoBody),

    // the console (web/, embedded in the binary): open, as the page holds no data (its
    // grpc-web calls carry the session's token)
    get("/", |m| on(m, console::redirect)).open()
        .doc("Redirect to the console at /ui/", NoBody, NoBody),
    get("/ui/", |m| on(m, console::index)).open()
        .doc("The console: the browser UI over grpc-web", NoBody, NoBody),
    get("/ui/{*path}", |m| on(m, console::file)).open()
        .doc("The console's assets (immutable) and its app paths (the page)", NoBody, NoBody),

    // fastDeploy (reference/fastdeploy-contract.md section 2), with its own rules
    post("/token", |m| on(m, users::login)).open()
        .doc("Log in with a form (username, password)", Contract("LoginForm"), Contract("AccessToken")),
    get("/users/me", |m| on(m, users::me)).user()
        .doc("The user behind a user token", NoBody, Contract("User")),
    post("/service-token", |m| on(m, service_token::mint)).token(&[User], TOKENS_MINT).json_before_scope()
        .doc("Mint a service token for an existing service", Contract("ServiceTokenRequest"), Contract("ServiceToken")),
    get("/services/", |m| on(m, services::list)).token(&[User], SERVICES_READ)
        .doc("Every synced service", NoBody, Contract("Services")),
    get("/services/names/", |m| on(m, services::names)).token(&[User], SERVICES_READ)
        .doc("Folder names in the services directory", NoBody, Contract("Names")),
    post("/services/sync", |m| on(m, services::sync)).token(&[User], SERVICES_SYNC).writes_services()
        .doc("Sync services from the services directory", NoBody, Contract("Detail")),
    delete("/services/{service_id}", |m| on(m, services::delete)).token(&[User], SERVICES_DELETE).writes_services()
        .doc("Delete a service", NoBody, Contract("Detail")),
    get("/deployments/", |m| on(m, deployments::list)).token(&[User], DEPLOYMENTS_READ)
        .doc("Every deployment", NoBody, Contract("Deployments")),
    post("/deployments/", |m| on(m, deployments::start)).token(&[Service], DEPLOYMENTS_START).json_before_scope()
        .doc("Start a deployment of the service token's service",
            Contract("StartDeploymentBody"), Contract("StartedDeployment")),
    get("/deployments/{deployment_id}", |m| on(m, deployments::get)).token(&[Service], DEPLOYMENTS_READ)
        .doc("A deployment with its steps (service token of its service)", NoBody, Contract("DeploymentWithSteps")),
    put("/deployments/finish/", |m| on(m, deployments::finish)).token(&[Deployment], DEPLOYMENTS_FINISH)
        .doc("Finish the deployment token's deployment", NoBody, Contract("Detail")),
    post("/steps/", |m| on(m, deployments::report_step)).token(&[Deployment], STEPS_REPORT).json_before_scope()
        .doc("Report a step of the deployment token's deployment", Contract("StepReport"), Contract("Detail")),
    get("/steps/", |m| on(m, deployments::list_steps)).token(&[User], DEPLOYMENTS_READ)
        .doc("Steps of a deployment (?deployment_id=)", NoBody, Contract("Steps")),
    // The user token comes as the socket's first message; each frame then needs the
    // permission of what it carries (services:read, deployments:read).
    websocket(ws::PATH, |_| any(ws::upgrade)).user()
        .doc("WebSocket live feed (authenticate with a first message)", NoBody, NoBody),
    get("/deployed-services/", |m| on(m, services::deployed)).token(&[Config], DEPLOYED_SERVICES_READ)
        .doc("Deployed-service configs (config token)", NoBody, Contract("DeployedServices")),

    // /v1: tokens, users, keys. Each serves an RPC and takes the RPC's rule.
    get("/v1/tokens", |m| on(m, v1::tokens::list)).rpc("/slipway.auth.v1.AuthService/ListTokens")
        .doc("List tokens, newest first (?service=&type=&created_by=&include_revoked=&page_size=&page_token=)",
            NoBody, Proto("slipway.auth.v1.ListTokensResponse")),
    post("/v1/tokens", |m| on(m, v1::tokens::mint_config)).rpc("/slipway.auth.v1.AuthService/MintConfigToken")
        .doc("Mint a config token",
            Proto("slipway.auth.v1.MintConfigTokenRequest"), Proto("slipway.auth.v1.MintedToken")),
    post("/v1/tokens/service", |m| on(m, v1::tokens::mint_service)).rpc("/slipway.auth.v1.AuthService/MintServiceToken")
        .doc("Mint a service token",
            Proto("slipway.auth.v1.MintServiceTokenRequest"), Proto("slipway.auth.v1.MintedToken")),
    post("/v1/tokens/attenuate", |m| on(m, v1::tokens::attenuate)).rpc("/slipway.auth.v1.AuthService/AttenuateToken")
        .doc("Derive a narrower token from the presented one",
            Proto("slipway.auth.v1.AttenuateTokenRequest"), Proto("slipway.auth.v1.MintedToken")),
    post("/v1/tokens/debug", |m| on(m, v1::tokens::debug)).rpc("/slipway.auth.v1.AuthService/DebugToken")
        .doc("Decode a token and say whether it is valid now",
            Proto("slipway.auth.v1.DebugTokenRequest"), Proto("slipway.auth.v1.DebugTokenResponse")),
    post("/v1/tokens/exchange", |m| on(m, v1::tokens::exchange_legacy))
        .rpc("/slipway.auth.v1.AuthService/ExchangeLegacyToken")
        .doc("Exchange a fastDeploy user token for a short-lived Slipway token (when legacy tokens are on)",
            Proto("slipway.auth.v1.ExchangeLegacyTokenRequest"), Proto("slipway.auth.v1.MintedToken")),
    delete("/v1/tokens/{id}", |m| on(m, v1::tokens::revoke)).rpc("/slipway.auth.v1.AuthService/RevokeTokens")
        .doc("Revoke a token and every token derived from it", NoBody, Proto("slipway.auth.v1.RevokeTokensResponse")),
    post("/v1/users/me/password", |m| on(m, v1::users::change_password))
        .rpc("/slipway.auth.v1.AuthService/ChangePassword")
        .doc("Change the caller's password; revokes their tokens",
            Proto("slipway.auth.v1.ChangePasswordRequest"), Proto("slipway.auth.v1.ChangePasswordResponse")),
    post("/v1/login", |m| on(m, v1::users::login)).rpc("/slipway.auth.v1.AuthService/Login")
        .doc("Log in with JSON; answers a user token",
            Proto("slipway.auth.v1.LoginRequest"), Proto("slipway.auth.v1.LoginResponse")),
    get("/v1/users/me", |m| on(m, v1::users::who_am_i)).rpc("/slipway.auth.v1.AuthService/WhoAmI")
        .doc("The user behind a user token", NoBody, Proto("slipway.auth.v1.User")),
    get("/v1/users", |m| on(m, v1::users::list)).rpc("/slipway.auth.v1.AuthService/ListUsers")
        .doc("List users by name (?page_size=&page_token=)", NoBody, Proto("slipway.auth.v1.ListUsersResponse")),
    post("/v1/users", |m| on(m, v1::users::create)).rpc("/slipway.auth.v1.AuthService/CreateUser")
        .doc("Create a user", Proto("slipway.auth.v1.CreateUserRequest"), Proto("slipway.auth.v1.User")),
    post("/v1/users/{name}/disable", |m| on(m, v1::users::disable)).rpc("/slipway.auth.v1.AuthService/DisableUser")
        .doc("Disable a user (not yourself): logins refused, every token they hold or minted revoked",
            NoBody, Proto("slipway.auth.v1.DisableUserResponse")),
    post("/v1/users/{name}/enable", |m| on(m, v1::users::enable)).rpc("/slipway.auth.v1.AuthService/EnableUser")
        .doc("Let a disabled user log in again", NoBody, Proto("slipway.auth.v1.User")),
    delete("/v1/users/{name}", |m| on(m, v1::users::delete)).rpc("/slipway.auth.v1.AuthService/DeleteUser")
        .doc("Delete a user (not yourself) and revoke every token they hold or minted",
            NoBody, Proto("slipway.auth.v1.DeleteUserResponse")),
    post("/v1/keys/rotate", |m| on(m, v1::tokens::rotate_keys)).rpc("/slipway.auth.v1.AuthService/RotateKeys")
        .doc("Start signing with a new key", NoBody, Proto("slipway.auth.v1.RotateKeysResponse")),

    // /v1: services
    get("/v1/services", |m| on(m, v1::services::list)).rpc("/slipway.registry.v1.RegistryService/ListServices")
        .doc("List services (?page_size=&page_token=)", NoBody, Proto("slipway.registry.v1.ListServicesResponse")),
    post("/v1/services/sync", |m| on(m, v1::services::sync))
        .rpc("/slipway.registry.v1.RegistryService/SyncServices").writes_services()
        .doc("Sync services; problems reported per service",
            NoBody, Proto("slipway.registry.v1.SyncServicesResponse")),
    get("/v1/services/{id}", |m| on(m, v1::services::get_by_id)).rpc("/slipway.registry.v1.RegistryService/GetService")
        .doc("A synced service by id", NoBody, Proto("slipway.registry.v1.Service")),
    delete("/v1/services/{id}", |m| on(m, v1::services::delete))
        .rpc("/slipway.registry.v1.RegistryService/DeleteService").writes_services()
        .doc("Delete a service", NoBody, Proto("slipway.registry.v1.DeleteServiceResponse")),
    get("/v1/services/by-name/{name}", |m| on(m, v1::services::get_by_name))
        .rpc("/slipway.registry.v1.RegistryService/GetService")
        .doc("A synced service by name", NoBody, Proto("slipway.registry.v1.Service")),
    get("/v1/service-names", |m| on(m, v1::services::names))
        .rpc("/slipway.registry.v1.RegistryService/ListServiceNames")
        .doc("Folder names in the services directory, synced or not",
            NoBody, Proto("slipway.registry.v1.ListServiceNamesResponse")),
    get("/v1/services/watch", |m| on(m, v1::streams::watch_services))
        .rpc("/slipway.registry.v1.RegistryService/WatchServices")
        .doc("Stream of service changes (NDJSON, one ServiceEvent per line)",
            NoBody, ProtoStream("slipway.registry.v1.ServiceEvent")),
    get("/v1/deployed-services", |m| on(m, v1::services::deployed))
        .rpc("/slipway.registry.v1.RegistryService/ListDeployedServices")
        .doc("Deployed-service configs the token may read",
            NoBody, Proto("slipway.registry.v1.ListDeployedServicesResponse")),

    // /v1: deployments and steps
    get("/v1/deployments", |m| on(m, v1::deployments::list)).rpc("/slipway.deploy.v1.DeployService/ListDeployments")
        .doc("List deployments, oldest first unless newest_first \
              (?service=&status=&origin=&user=&newest_first=&page_size=&page_token=&include_removed_services=)",
            NoBody, Proto("slipway.deploy.v1.ListDeploymentsResponse")),
    post("/v1/deployments", |m| on(m, v1::deployments::start)).rpc("/slipway.deploy.v1.DeployService/StartDeployment")
        .doc("Start a deployment",
            Proto("slipway.deploy.v1.StartDeploymentRequest"), Proto("slipway.deploy.v1.Deployment")),
    get("/v1/deployments/{id}", |m| on(m, v1::deployments::get)).rpc("/slipway.deploy.v1.DeployService/GetDeployment")
        .doc("A deployment with its steps and status", NoBody, Proto("slipway.deploy.v1.Deployment")),
    get("/v1/deployments/{id}/steps", |m| on(m, v1::deployments::list_steps))
        .rpc("/slipway.deploy.v1.DeployService/ListSteps")
        .doc("Steps of a deployment", NoBody, Proto("slipway.deploy.v1.ListStepsResponse")),
    post("/v1/deployments/{id}/finish", |m| on(m, v1::deployments::finish))
        .rpc("/slipway.deploy.v1.DeployService/FinishDeployment")
        .doc("Finish a deployment", NoBody, Proto("slipway.deploy.v1.Deployment")),
    post("/v1/deployments/{id}/cancel", |m| on(m, v1::deployments::cancel))
        .rpc("/slipway.deploy.v1.DeployService/CancelDeployment")
        .doc("Cancel a deployment (kills its script)", NoBody, Proto("slipway.deploy.v1.Deployment")),
    post("/v1/steps", |m| on(m, v1::deployments::report_step)).rpc("/slipway.deploy.v1.DeployService/ReportStep")
        .doc("Report a step (deployment token)",
            Proto("slipway.deploy.v1.ReportStepRequest"), Proto("slipway.deploy.v1.Step")),
    get("/v1/deployments/{id}/log", |m| on(m, v1::logs::get))
        .rpc("/slipway.deploy.v1.DeployService/GetDeploymentLog")
        .doc("The output of a deployment's script, one line per line (text/plain; ?after_line=&limit=). \
              With ?follow=true: as /log/watch, NDJSON, until the run ends",
            NoBody, Text("slipway.deploy.v1.GetDeploymentLogResponse")),
    get("/v1/deployments/{id}/log/watch", |m| on(m, v1::streams::watch_log))
        .rpc("/slipway.deploy.v1.DeployService/WatchDeploymentLog")
        .doc("Stored output lines, then live ones until the run ends (NDJSON, one LogLine per line; \
              ?after_line= resumes)",
            NoBody, ProtoStream("slipway.deploy.v1.LogLine")),
    get("/v1/deployments/watch", |m| on(m, v1::streams::watch_deployments))
        .rpc("/slipway.deploy.v1.DeployService/WatchEvents")
        .doc("Stream of deployment and step events (NDJSON, one Event per line; \
              ?service=&deployment_id=&after_sequence=)",
            NoBody, ProtoStream("slipway.deploy.v1.Event")),

    // /v1: the revocation feed
    get("/v1/revocations/watch", |m| on(m, v1::streams::watch_revocations))
        .rpc("/slipway.auth.v1.AuthService/WatchRevocations")
        .doc("Stream of revoked token ids (NDJSON, one RevocationEvent per line; ?after_sequence=); \
              429 past the auth service's caps on open feeds",
            NoBody, ProtoStream("slipway.auth.v1.RevocationEvent")),
];
