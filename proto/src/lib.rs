//! Slipway's protobuf contract: versioned packages for every service, the file
//! descriptor set (for server reflection and run-time JSON mapping), and proto3
//! canonical JSON via pbjson for the gateway.

/// Encoded `FileDescriptorSet` of every Slipway package, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/slipway_descriptor.bin"));

pub mod json;
mod timestamp;

/// Well-known types with canonical JSON: pbjson-types, except `Timestamp`, which is
/// Slipway's own so that JSON timestamps end in `Z`.
pub mod wkt {
    pub use pbjson_types::*;

    pub use crate::timestamp::Timestamp;
}

pub mod auth {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/slipway.auth.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/slipway.auth.v1.serde.rs"));
    }
}

pub mod registry {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/slipway.registry.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/slipway.registry.v1.serde.rs"));
    }
}

pub mod deploy {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/slipway.deploy.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/slipway.deploy.v1.serde.rs"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_uses_camel_case_enum_names_and_string_int64() {
        let info = auth::v1::TokenInfo {
            id: "abc".into(),
            r#type: auth::v1::TokenType::Service as i32,
            deployment_id: 42,
            expires_at: Some(wkt::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["type"], "TOKEN_TYPE_SERVICE");
        assert_eq!(json["deploymentId"], "42");
        assert_eq!(json["expiresAt"], "2023-11-14T22:13:20Z");
        let back: auth::v1::TokenInfo = serde_json::from_value(json).unwrap();
        assert_eq!(back, info);
    }

    #[test]
    fn unknown_json_fields_are_rejected() {
        let err = serde_json::from_str::<auth::v1::LoginRequest>(r#"{"username":"a","nope":1}"#);
        assert!(err.is_err());
    }

    #[test]
    fn descriptor_set_holds_every_package() {
        use prost::Message;
        let fds = wkt::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let packages: Vec<_> = fds.file.iter().filter_map(|f| f.package.clone()).collect();
        for p in ["slipway.auth.v1", "slipway.registry.v1", "slipway.deploy.v1"] {
            assert!(packages.iter().any(|x| x == p), "{p} missing");
        }
    }
}
