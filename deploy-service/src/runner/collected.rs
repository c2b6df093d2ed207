//! What a run collects from its script's output: the deployed-service config, the
//! last line printed, and the run's token, blanked out of anything the script prints.

use secrecy::ExposeSecret;
use serde_json::Value;

/// What the run collected from the script's output.
#[derive(Default)]
pub(super) struct Collected {
    pub(super) deployed_service: Option<Value>,
    pub(super) last_output: Option<String>,
    /// The run's deployment token, blanked out of anything the script prints.
    pub(super) secret: Option<secrecy::SecretString>,
}

impl Collected {
    /// `text` with the run's deployment token replaced, should the script print it.
    pub(super) fn redact(&self, text: String) -> String {
        match &self.secret {
            Some(secret) if !secret.expose_secret().is_empty() && text.contains(secret.expose_secret()) => {
                text.replace(secret.expose_secret(), "[redacted]")
            }
            _ => text,
        }
    }

    /// `value` with the run's deployment token replaced in every string and key.
    pub(super) fn redact_value(&self, value: &mut Value) {
        match value {
            Value::String(text) => *text = self.redact(std::mem::take(text)),
            Value::Array(items) => items.iter_mut().for_each(|item| self.redact_value(item)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut item) in entries {
                    self.redact_value(&mut item);
                    map.insert(self.redact(key), item);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}
