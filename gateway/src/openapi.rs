//! `GET /openapi.json`: an OpenAPI 3.0 document of every route the gateway serves.
//! `/v1` bodies are the proto messages in proto3 JSON; their schemas are generated from
//! the descriptor set, so they cannot drift from what pbjson writes. fastDeploy's
//! routes are described with the contract's objects. A test keeps the operations equal
//! to the scope table's routes (and so to the router).

use std::{collections::BTreeMap, sync::OnceLock};

use axum::{Json, response::IntoResponse};
use common::scope_table::{Access, ROUTES};
use prost::Message;
use proto::wkt::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};
use serde_json::{Map, Value, json};

/// What a request or response body is.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    None,
    /// A proto message (full name without the leading dot), in proto3 JSON.
    Proto(&'static str),
    /// A schema of fastDeploy's contract, by component name.
    Contract(&'static str),
    /// A stream of proto messages, one proto3 JSON object per line
    /// (`application/x-ndjson`, see `v1_streams`).
    ProtoStream(&'static str),
}

/// One operation: method, path (axum template), summary, request and response.
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub request: Body,
    pub response: Body,
}

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    request: Body,
    response: Body,
) -> Operation {
    Operation {
        method,
        path,
        summary,
        request,
        response,
    }
}

use Body::{Contract, None as NoBody, Proto, ProtoStream};

pub const OPERATIONS: &[Operation] = &[
    op("GET", "/healthz", "Liveness of the gateway", NoBody, NoBody),
    op(
        "GET",
        "/readyz",
        "Readiness: every backend and the revocation feed",
        NoBody,
        Contract("Detail"),
    ),
    op("GET", "/metrics", "Prometheus metrics", NoBody, NoBody),
    op("GET", "/openapi.json", "This document", NoBody, NoBody),
    op(
        "GET",
        "/.well-known/jwks.json",
        "Public keys that verify Slipway tokens",
        NoBody,
        Proto("slipway.auth.v1.Jwks"),
    ),
    // fastDeploy (reference/fastdeploy-contract.md section 2)
    op(
        "POST",
        "/token",
        "Log in with a form (username, password)",
        Contract("LoginForm"),
        Contract("AccessToken"),
    ),
    op(
        "GET",
        "/users/me",
        "The user behind a user token",
        NoBody,
        Contract("User"),
    ),
    op(
        "POST",
        "/service-token",
        "Mint a service token for an existing service",
        Contract("ServiceTokenRequest"),
        Contract("ServiceToken"),
    ),
    op(
        "GET",
        "/services/",
        "Every synced service",
        NoBody,
        Contract("Services"),
    ),
    op(
        "GET",
        "/services/names/",
        "Folder names in the services directory",
        NoBody,
        Contract("Names"),
    ),
    op(
        "POST",
        "/services/sync",
        "Sync services from the services directory",
        NoBody,
        Contract("Detail"),
    ),
    op(
        "DELETE",
        "/services/{service_id}",
        "Delete a service",
        NoBody,
        Contract("Detail"),
    ),
    op(
        "GET",
        "/deployments/",
        "Every deployment",
        NoBody,
        Contract("Deployments"),
    ),
    op(
        "POST",
        "/deployments/",
        "Start a deployment of the service token's service",
        Contract("StartDeploymentBody"),
        Contract("StartedDeployment"),
    ),
    op(
        "GET",
        "/deployments/{deployment_id}",
        "A deployment with its steps (service token of its service)",
        NoBody,
        Contract("DeploymentWithSteps"),
    ),
    op(
        "PUT",
        "/deployments/finish/",
        "Finish the deployment token's deployment",
        NoBody,
        Contract("Detail"),
    ),
    op(
        "POST",
        "/steps/",
        "Report a step of the deployment token's deployment",
        Contract("StepReport"),
        Contract("Detail"),
    ),
    op(
        "GET",
        "/steps/",
        "Steps of a deployment (?deployment_id=)",
        NoBody,
        Contract("Steps"),
    ),
    op(
        "GET",
        "/deployments/ws/{client_id}",
        "WebSocket live feed (authenticate with a first message)",
        NoBody,
        NoBody,
    ),
    op(
        "GET",
        "/deployed-services/",
        "Deployed-service configs (config token)",
        NoBody,
        Contract("DeployedServices"),
    ),
    // /v1: tokens, users, keys
    op(
        "GET",
        "/v1/tokens",
        "List tokens, newest first (?service=&type=&created_by=&include_revoked=&page_size=&page_token=)",
        NoBody,
        Proto("slipway.auth.v1.ListTokensResponse"),
    ),
    op(
        "POST",
        "/v1/tokens",
        "Mint a config token",
        Proto("slipway.auth.v1.MintConfigTokenRequest"),
        Proto("slipway.auth.v1.MintedToken"),
    ),
    op(
        "POST",
        "/v1/tokens/service",
        "Mint a service token",
        Proto("slipway.auth.v1.MintServiceTokenRequest"),
        Proto("slipway.auth.v1.MintedToken"),
    ),
    op(
        "POST",
        "/v1/tokens/attenuate",
        "Derive a narrower token from the presented one",
        Proto("slipway.auth.v1.AttenuateTokenRequest"),
        Proto("slipway.auth.v1.MintedToken"),
    ),
    op(
        "POST",
        "/v1/tokens/debug",
        "Decode a token and say whether it is valid now",
        Proto("slipway.auth.v1.DebugTokenRequest"),
        Proto("slipway.auth.v1.DebugTokenResponse"),
    ),
    op(
        "POST",
        "/v1/tokens/exchange",
        "Exchange a fastDeploy user token for a short-lived Slipway token (when legacy tokens are on)",
        Proto("slipway.auth.v1.ExchangeLegacyTokenRequest"),
        Proto("slipway.auth.v1.MintedToken"),
    ),
    op(
        "DELETE",
        "/v1/tokens/{id}",
        "Revoke a token and every token derived from it",
        NoBody,
        Proto("slipway.auth.v1.RevokeTokensResponse"),
    ),
    op(
        "POST",
        "/v1/login",
        "Log in with JSON; answers a user token",
        Proto("slipway.auth.v1.LoginRequest"),
        Proto("slipway.auth.v1.LoginResponse"),
    ),
    op(
        "GET",
        "/v1/users/me",
        "The user behind a user token",
        NoBody,
        Proto("slipway.auth.v1.User"),
    ),
    op(
        "POST",
        "/v1/users",
        "Create a user",
        Proto("slipway.auth.v1.CreateUserRequest"),
        Proto("slipway.auth.v1.User"),
    ),
    op(
        "POST",
        "/v1/users/{name}/disable",
        "Disable a user (not yourself): logins refused, every token they hold or minted revoked",
        NoBody,
        Proto("slipway.auth.v1.DisableUserResponse"),
    ),
    op(
        "POST",
        "/v1/users/{name}/enable",
        "Let a disabled user log in again",
        NoBody,
        Proto("slipway.auth.v1.User"),
    ),
    op(
        "DELETE",
        "/v1/users/{name}",
        "Delete a user (not yourself) and revoke every token they hold or minted",
        NoBody,
        Proto("slipway.auth.v1.DeleteUserResponse"),
    ),
    op(
        "POST",
        "/v1/users/me/password",
        "Change the caller's password; revokes their tokens",
        Proto("slipway.auth.v1.ChangePasswordRequest"),
        Proto("slipway.auth.v1.ChangePasswordResponse"),
    ),
    op(
        "POST",
        "/v1/keys/rotate",
        "Start signing with a new key",
        NoBody,
        Proto("slipway.auth.v1.RotateKeysResponse"),
    ),
    // /v1: services
    op(
        "GET",
        "/v1/services",
        "List services (?page_size=&page_token=)",
        NoBody,
        Proto("slipway.registry.v1.ListServicesResponse"),
    ),
    op(
        "POST",
        "/v1/services/sync",
        "Sync services; problems reported per service",
        NoBody,
        Proto("slipway.registry.v1.SyncServicesResponse"),
    ),
    op(
        "GET",
        "/v1/services/{id}",
        "A synced service by id",
        NoBody,
        Proto("slipway.registry.v1.Service"),
    ),
    op(
        "DELETE",
        "/v1/services/{id}",
        "Delete a service",
        NoBody,
        Proto("slipway.registry.v1.DeleteServiceResponse"),
    ),
    op(
        "GET",
        "/v1/services/by-name/{name}",
        "A synced service by name",
        NoBody,
        Proto("slipway.registry.v1.Service"),
    ),
    op(
        "GET",
        "/v1/service-names",
        "Folder names in the services directory, synced or not",
        NoBody,
        Proto("slipway.registry.v1.ListServiceNamesResponse"),
    ),
    op(
        "GET",
        "/v1/services/watch",
        "Stream of service changes (NDJSON, one ServiceEvent per line)",
        NoBody,
        ProtoStream("slipway.registry.v1.ServiceEvent"),
    ),
    op(
        "GET",
        "/v1/deployed-services",
        "Deployed-service configs the token may read",
        NoBody,
        Proto("slipway.registry.v1.ListDeployedServicesResponse"),
    ),
    // /v1: deployments
    op(
        "GET",
        "/v1/deployments",
        "List deployments (?service=&page_size=&page_token=&include_removed_services=)",
        NoBody,
        Proto("slipway.deploy.v1.ListDeploymentsResponse"),
    ),
    op(
        "POST",
        "/v1/deployments",
        "Start a deployment",
        Proto("slipway.deploy.v1.StartDeploymentRequest"),
        Proto("slipway.deploy.v1.Deployment"),
    ),
    op(
        "GET",
        "/v1/deployments/{id}",
        "A deployment with its steps and status",
        NoBody,
        Proto("slipway.deploy.v1.Deployment"),
    ),
    op(
        "GET",
        "/v1/deployments/{id}/steps",
        "Steps of a deployment",
        NoBody,
        Proto("slipway.deploy.v1.ListStepsResponse"),
    ),
    op(
        "POST",
        "/v1/deployments/{id}/finish",
        "Finish a deployment",
        NoBody,
        Proto("slipway.deploy.v1.Deployment"),
    ),
    op(
        "POST",
        "/v1/deployments/{id}/cancel",
        "Cancel a deployment (kills its script)",
        NoBody,
        Proto("slipway.deploy.v1.Deployment"),
    ),
    op(
        "POST",
        "/v1/steps",
        "Report a step (deployment token)",
        Proto("slipway.deploy.v1.ReportStepRequest"),
        Proto("slipway.deploy.v1.Step"),
    ),
    op(
        "GET",
        "/v1/deployments/watch",
        "Stream of deployment and step events (NDJSON, one Event per line; ?service=&deployment_id=&after_sequence=)",
        NoBody,
        ProtoStream("slipway.deploy.v1.Event"),
    ),
    // /v1: the revocation feed
    op(
        "GET",
        "/v1/revocations/watch",
        "Stream of revoked token ids (NDJSON, one RevocationEvent per line; ?after_sequence=); 429 past the auth service's caps on open feeds",
        NoBody,
        ProtoStream("slipway.auth.v1.RevocationEvent"),
    ),
];

/// fastDeploy's objects (contract 2.2 and section 2).
fn contract_schemas() -> Map<String, Value> {
    let ts = json!({"type": "string", "format": "date-time", "nullable": true});
    let deployment = json!({"type": "object", "properties": {
        "id": {"type": "integer"}, "service_id": {"type": "integer"}, "origin": {"type": "string"},
        "user": {"type": "string"}, "started": ts, "finished": ts,
        "context": {"type": "object", "properties": {"env": {"type": "object"}}}}});
    let step = json!({"type": "object", "properties": {
        "id": {"type": "integer"}, "deployment_id": {"type": "integer"}, "name": {"type": "string"},
        "state": {"type": "string", "enum": ["pending", "running", "success", "failure"]},
        "started": ts, "finished": ts, "message": {"type": "string"}}});
    let with = |base: &Value, extra: Value| {
        let mut v = base.clone();
        if let (Some(p), Some(e)) = (v["properties"].as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        v
    };
    let schemas = json!({
        "Detail": {"type": "object", "properties": {"detail": {}}},
        "LoginForm": {"type": "object", "required": ["username", "password"], "properties": {
            "username": {"type": "string"}, "password": {"type": "string"}, "grant_type": {"type": "string"}}},
        "AccessToken": {"type": "object", "properties": {"access_token": {"type": "string"}, "token_type": {"type": "string"}}},
        "User": {"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}},
        "ServiceTokenRequest": {"type": "object", "required": ["service", "origin"], "properties": {
            "service": {"type": "string"}, "origin": {"type": "string"},
            "expiration_in_days": {"type": "integer", "minimum": 1, "maximum": 180, "default": 1}}},
        "ServiceToken": {"type": "object", "properties": {"service_token": {"type": "string"}, "token_type": {"type": "string"}}},
        "Service": {"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "data": {"type": "object"}}},
        "Services": {"type": "array", "items": {"$ref": "#/components/schemas/Service"}},
        "Names": {"type": "array", "items": {"type": "string"}},
        "Deployment": deployment,
        "Deployments": {"type": "array", "items": {"$ref": "#/components/schemas/Deployment"}},
        "StartDeploymentBody": {"type": "object", "nullable": true, "properties": {"env": {"type": "object"}}},
        "StartedDeployment": with(&deployment, json!({"details": {"type": "string", "format": "uri"}})),
        "Step": step,
        "Steps": {"type": "array", "items": {"$ref": "#/components/schemas/Step"}},
        "DeploymentWithSteps": with(&deployment, json!({"steps": {"$ref": "#/components/schemas/Steps"}})),
        "StepReport": {"type": "object", "required": ["name", "state", "started", "finished", "message"], "properties": {
            "name": {"type": "string"}, "state": {"type": "string"}, "message": {"type": "string"},
            "started": {"type": "string", "format": "date-time"}, "finished": {"type": "string", "format": "date-time"}}},
        "DeployedService": {"type": "object", "properties": {
            "id": {"type": "integer"}, "deployment_id": {"type": "integer"}, "config": {"type": "object"}}},
        "DeployedServices": {"type": "array", "items": {"$ref": "#/components/schemas/DeployedService"}},
    });
    schemas.as_object().cloned().unwrap_or_default()
}

/// JSON schemas of every message in the descriptor set, keyed by full name.
fn proto_schemas() -> Map<String, Value> {
    let mut out = Map::new();
    let Ok(set) = FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET) else {
        return out;
    };
    for file in &set.file {
        let package = file.package.clone().unwrap_or_default();
        for message in &file.message_type {
            add_message(&mut out, &package, message);
        }
    }
    out
}

fn add_message(out: &mut Map<String, Value>, scope: &str, message: &DescriptorProto) {
    let name = format!("{scope}.{}", message.name());
    for nested in &message.nested_type {
        if !nested.options.as_ref().is_some_and(|o| o.map_entry()) {
            add_message(out, &name, nested);
        }
    }
    let mut properties = Map::new();
    for field in &message.field {
        let json_name = field.json_name.clone().unwrap_or_else(|| field.name().to_owned());
        properties.insert(json_name, field_schema(message, field));
    }
    out.insert(name, json!({"type": "object", "properties": properties}));
}

fn ref_to(type_name: &str) -> Value {
    match type_name.trim_start_matches('.') {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        other => json!({"$ref": format!("#/components/schemas/{other}")}),
    }
}

fn scalar(field: &FieldDescriptorProto) -> Value {
    match field.r#type() {
        Type::Double | Type::Float => json!({"type": "number"}),
        Type::Int64 | Type::Uint64 | Type::Fixed64 | Type::Sfixed64 | Type::Sint64 => {
            json!({"type": "string", "format": "int64"})
        }
        Type::Int32 | Type::Uint32 | Type::Fixed32 | Type::Sfixed32 | Type::Sint32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Type::Bool => json!({"type": "boolean"}),
        Type::String => json!({"type": "string"}),
        Type::Bytes => json!({"type": "string", "format": "byte"}),
        Type::Enum => {
            json!({"type": "string", "description": format!("enum {}", field.type_name().trim_start_matches('.'))})
        }
        Type::Message | Type::Group => ref_to(field.type_name()),
    }
}

fn field_schema(message: &DescriptorProto, field: &FieldDescriptorProto) -> Value {
    if field.r#type() == Type::Message {
        // A map field: its type is a nested *Entry message with key and value.
        let entry = message.nested_type.iter().find(|n| {
            n.options.as_ref().is_some_and(|o| o.map_entry()) && field.type_name().ends_with(&format!(".{}", n.name()))
        });
        if let Some(value) = entry.and_then(|e| e.field.iter().find(|f| f.number() == 2)) {
            return json!({"type": "object", "additionalProperties": scalar(value)});
        }
    }
    if field.label() == Label::Repeated {
        json!({"type": "array", "items": scalar(field)})
    } else {
        scalar(field)
    }
}

fn content(body: Body) -> Option<Value> {
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    match body {
        Body::None => None,
        Body::Proto(name) | Body::Contract(name) => Some(json!({ "application/json": { "schema": schema(name) } })),
        Body::ProtoStream(name) => Some(json!({ crate::v1_streams::NDJSON: { "schema": schema(name) } })),
    }
}

/// What a streamed response is, for its 200 answer.
const STREAM_OK: &str = "OK: one message per line (proto3 JSON), each sent as it comes; the body ends \
    when the stream does. A stream that fails (backend lost, token expired or revoked, gateway \
    stopping) ends after one last line {\"error\": {\"status\": <HTTP status>, \"detail\": \"...\"}}.";

/// The whole document.
pub fn document() -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for op in OPERATIONS {
        let access = ROUTES
            .iter()
            .find(|r| r.method == op.method && r.path == op.path)
            .map(|r| r.access);
        let mut operation = json!({
            "summary": op.summary,
            "operationId": format!("{} {}", op.method, op.path),
            "responses": {},
        });
        let mut responses = Map::new();
        let streamed = matches!(op.response, Body::ProtoStream(_));
        let mut ok = json!({"description": if streamed { STREAM_OK } else { "OK" }});
        if let Some(c) = content(op.response) {
            ok["content"] = c;
        }
        responses.insert("200".into(), ok);
        if let Some(c) = content(op.request) {
            operation["requestBody"] = json!({"content": c});
        }
        if !matches!(access, Some(Access::Open) | None) {
            operation["security"] = json!([{"bearer": []}]);
            responses.insert("401".into(), json!({"description": "No valid token"}));
            responses.insert("403".into(), json!({"description": "The token may not do this"}));
        }
        operation["responses"] = Value::Object(responses);
        let params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        paths
            .entry(op.path.to_owned())
            .or_default()
            .insert(op.method.to_ascii_lowercase(), operation);
    }
    let mut schemas = proto_schemas();
    schemas.extend(contract_schemas());
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Slipway gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "fastDeploy's HTTP API (drop-in) and Slipway's own /v1 API in proto3 JSON.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    })
}

/// `GET /openapi.json`, built once.
pub async fn serve() -> impl IntoResponse {
    static DOC: OnceLock<Value> = OnceLock::new();
    Json(DOC.get_or_init(document).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_every_documented_route_is_in_the_scope_table() {
        for route in ROUTES {
            assert!(
                OPERATIONS
                    .iter()
                    .any(|o| o.method == route.method && o.path == route.path),
                "{} {} is served but not in the OpenAPI document",
                route.method,
                route.path
            );
        }
        for op in OPERATIONS {
            assert!(
                ROUTES.iter().any(|r| r.method == op.method && r.path == op.path),
                "{} {} is documented but not a route",
                op.method,
                op.path
            );
        }
    }

    /// The `/v1` route of every RPC that may be called at the edge (internal RPCs are
    /// refused there). A new RPC without a route here fails the test below.
    const HTTP_OF_RPC: &[(&str, &str, &str)] = &[
        ("/slipway.auth.v1.AuthService/Login", "POST", "/v1/login"),
        ("/slipway.auth.v1.AuthService/WhoAmI", "GET", "/v1/users/me"),
        ("/slipway.auth.v1.AuthService/GetJwks", "GET", "/.well-known/jwks.json"),
        ("/slipway.auth.v1.AuthService/RotateKeys", "POST", "/v1/keys/rotate"),
        (
            "/slipway.auth.v1.AuthService/MintServiceToken",
            "POST",
            "/v1/tokens/service",
        ),
        ("/slipway.auth.v1.AuthService/MintConfigToken", "POST", "/v1/tokens"),
        (
            "/slipway.auth.v1.AuthService/AttenuateToken",
            "POST",
            "/v1/tokens/attenuate",
        ),
        ("/slipway.auth.v1.AuthService/ListTokens", "GET", "/v1/tokens"),
        ("/slipway.auth.v1.AuthService/RevokeTokens", "DELETE", "/v1/tokens/{id}"),
        ("/slipway.auth.v1.AuthService/DebugToken", "POST", "/v1/tokens/debug"),
        (
            "/slipway.auth.v1.AuthService/WatchRevocations",
            "GET",
            "/v1/revocations/watch",
        ),
        ("/slipway.auth.v1.AuthService/CreateUser", "POST", "/v1/users"),
        (
            "/slipway.auth.v1.AuthService/DisableUser",
            "POST",
            "/v1/users/{name}/disable",
        ),
        (
            "/slipway.auth.v1.AuthService/EnableUser",
            "POST",
            "/v1/users/{name}/enable",
        ),
        ("/slipway.auth.v1.AuthService/DeleteUser", "DELETE", "/v1/users/{name}"),
        (
            "/slipway.auth.v1.AuthService/ChangePassword",
            "POST",
            "/v1/users/me/password",
        ),
        (
            "/slipway.auth.v1.AuthService/ExchangeLegacyToken",
            "POST",
            "/v1/tokens/exchange",
        ),
        (
            "/slipway.registry.v1.RegistryService/ListServices",
            "GET",
            "/v1/services",
        ),
        (
            "/slipway.registry.v1.RegistryService/ListServiceNames",
            "GET",
            "/v1/service-names",
        ),
        (
            "/slipway.registry.v1.RegistryService/GetService",
            "GET",
            "/v1/services/{id}",
        ),
        (
            "/slipway.registry.v1.RegistryService/SyncServices",
            "POST",
            "/v1/services/sync",
        ),
        (
            "/slipway.registry.v1.RegistryService/DeleteService",
            "DELETE",
            "/v1/services/{id}",
        ),
        (
            "/slipway.registry.v1.RegistryService/ListDeployedServices",
            "GET",
            "/v1/deployed-services",
        ),
        (
            "/slipway.registry.v1.RegistryService/WatchServices",
            "GET",
            "/v1/services/watch",
        ),
        (
            "/slipway.deploy.v1.DeployService/StartDeployment",
            "POST",
            "/v1/deployments",
        ),
        (
            "/slipway.deploy.v1.DeployService/ListDeployments",
            "GET",
            "/v1/deployments",
        ),
        (
            "/slipway.deploy.v1.DeployService/GetDeployment",
            "GET",
            "/v1/deployments/{id}",
        ),
        ("/slipway.deploy.v1.DeployService/ReportStep", "POST", "/v1/steps"),
        (
            "/slipway.deploy.v1.DeployService/ListSteps",
            "GET",
            "/v1/deployments/{id}/steps",
        ),
        (
            "/slipway.deploy.v1.DeployService/FinishDeployment",
            "POST",
            "/v1/deployments/{id}/finish",
        ),
        (
            "/slipway.deploy.v1.DeployService/CancelDeployment",
            "POST",
            "/v1/deployments/{id}/cancel",
        ),
        (
            "/slipway.deploy.v1.DeployService/WatchEvents",
            "GET",
            "/v1/deployments/watch",
        ),
    ];

    /// (input, output) message names of an RPC, from the descriptor set.
    fn rpc_types(path: &str) -> (String, String) {
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap();
        let set = FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
        for file in &set.file {
            let package = file.package.clone().unwrap_or_default();
            for s in &file.service {
                if format!("{package}.{}", s.name()) != service {
                    continue;
                }
                let m = s.method.iter().find(|m| m.name() == method).unwrap();
                let name = |t: &str| t.trim_start_matches('.').to_owned();
                return (name(m.input_type()), name(m.output_type()));
            }
        }
        panic!("{path} is not in the descriptor set")
    }

    #[test]
    fn every_rpc_served_at_the_edge_has_an_http_route_with_its_messages() {
        for rpc in common::scope_table::RPCS {
            let routes: Vec<_> = HTTP_OF_RPC.iter().filter(|(p, _, _)| *p == rpc.path).collect();
            if rpc.access == Access::Internal {
                assert!(routes.is_empty(), "{} is internal: no HTTP route", rpc.path);
                continue;
            }
            assert_eq!(routes.len(), 1, "{} needs exactly one HTTP route", rpc.path);
            let (_, method, path) = routes[0];
            let op = OPERATIONS
                .iter()
                .find(|o| o.method == *method && o.path == *path)
                .unwrap_or_else(|| panic!("{method} {path} ({}) is not an operation", rpc.path));
            let route = ROUTES.iter().find(|r| r.method == *method && r.path == *path).unwrap();
            assert_eq!(
                route.access, rpc.access,
                "{method} {path} and {}: same access",
                rpc.path
            );
            let (input, output) = rpc_types(rpc.path);
            match op.response {
                Proto(name) | ProtoStream(name) => assert_eq!(name, output, "{method} {path}"),
                other => panic!("{method} {path}: response {other:?}, not {output}"),
            }
            if let Proto(name) = op.request {
                assert_eq!(name, input, "{method} {path}");
            }
            if rpc.server_streaming {
                assert!(matches!(op.response, ProtoStream(_)), "{method} {path} streams");
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        for piece in text.split("\"#/components/schemas/").skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(schemas.contains_key(name), "dangling $ref {name}");
        }
        let watch = &doc["paths"]["/v1/deployments/watch"]["get"]["responses"]["200"];
        assert_eq!(
            watch["content"]["application/x-ndjson"]["schema"]["$ref"],
            "#/components/schemas/slipway.deploy.v1.Event"
        );
        let deployment = &schemas["slipway.deploy.v1.Deployment"]["properties"];
        assert_eq!(
            deployment["serviceId"]["type"], "string",
            "int64 is a string in proto3 JSON"
        );
        assert_eq!(deployment["started"]["format"], "date-time");
        assert_eq!(
            deployment["steps"]["items"]["$ref"],
            "#/components/schemas/slipway.deploy.v1.Step"
        );
    }
}
