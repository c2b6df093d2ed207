//! `GET /openapi.json`: an OpenAPI 3.0 document of every route the gateway serves.
//! `/v1` bodies are the proto messages in proto3 JSON; their schemas are generated from
//! the descriptor set, so they cannot drift from what pbjson writes. fastDeploy's
//! routes are described with the contract's objects. The operations are the route
//! table's entries (`routes::ROUTES`: summary, bodies, access), as is the router.

use std::{collections::BTreeMap, sync::OnceLock};

use axum::{Json, response::IntoResponse};
use common::scope_table::Access;
use prost::Message;
use proto::wkt::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};
use serde_json::{Map, Value, json};

use crate::routes::{Body, ROUTES};

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
        Body::ProtoStream(name) => Some(json!({ crate::v1::streams::NDJSON: { "schema": schema(name) } })),
        Body::Text(_) => Some(json!({ "text/plain": { "schema": {"type": "string"} } })),
    }
}

/// What a streamed response is, for its 200 answer.
const STREAM_OK: &str = "OK: one message per line (proto3 JSON), each sent as it comes; the body ends \
    when the stream does. A stream that fails (backend lost, token expired or revoked, gateway \
    stopping) ends after one last line {\"error\": {\"status\": <HTTP status>, \"detail\": \"...\"}}.";

/// The whole document.
pub fn document() -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for op in ROUTES {
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
        if op.access != Access::Open {
            operation["security"] = json!([{"bearer": []}]);
            responses.insert("401".into(), json!({"description": "No valid token"}));
            responses.insert("403".into(), json!({"description": "The token may not do this"}));
        }
        operation["responses"] = Value::Object(responses);
        let params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| name.trim_start_matches('*'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        paths
            .entry(op.path.replace("{*", "{"))
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
