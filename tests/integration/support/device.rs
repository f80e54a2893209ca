//! Devices registering with the engine, as real devices do (symmetric key, group key, X.509 over mTLS).

use std::time::Duration;

use dps_operator::azure::device_registration::{DeviceAuth, DeviceRegistrationClient, DeviceRegistrationOptions};
use dps_operator::azure::error::AzureError;
use dps_operator::azure::secret::Secret;
use dps_operator::azure::wire::RegistrationStatus;

use super::certs::TestLeaf;
use super::engine::Engine;

/// Where a registration ended, in the three ways Azure refuses a device and the one it admits it.
#[derive(Debug, PartialEq, Eq)]
pub enum Registration {
    /// Assigned: hub host name and device ID.
    Assigned { hub: String, device_id: String },
    /// The register request itself answered 401 with errorCode 401002 (no matching entry, wrong credential).
    RefusedAtRegister(String),
    /// The operation ended `disabled` (the deciding entry is disabled).
    Disabled(String),
    /// The operation ended `failed` (e.g. no hub for the allocation).
    Failed(String),
}

impl Registration {
    /// The assigned hub, failing the test when the device was refused.
    pub fn hub(&self) -> &str {
        match self {
            Registration::Assigned { hub, .. } => hub,
            other => panic!("device was refused: {other:?}"),
        }
    }

    /// Whether the register request was answered 401 with errorCode 401002.
    pub fn refused_at_register(&self) -> bool {
        matches!(self, Registration::RefusedAtRegister(_))
    }

    /// Whether the operation ended with status `disabled`.
    pub fn disabled(&self) -> bool {
        matches!(self, Registration::Disabled(_))
    }

    /// Whether the operation ended with status `failed`.
    pub fn failed(&self) -> bool {
        matches!(self, Registration::Failed(_))
    }
}

/// Registers `registration_id` with `auth` at the engine's device endpoint. Any answer other than the four
/// above (another status code, an unreadable body, a deadline) fails the test.
pub async fn register(engine: &Engine, registration_id: &str, auth: DeviceAuth) -> Registration {
    let options = DeviceRegistrationOptions {
        endpoint: engine.info.device_endpoint.clone(),
        ca_certificate_pem: Some(engine.ca_pem()),
        deadline: Duration::from_secs(30),
        poll_interval: Duration::from_millis(100),
        ..DeviceRegistrationOptions::default()
    };
    let client = DeviceRegistrationClient::new(&engine.info.id_scope, registration_id, auth, options)
        .expect("registration client builds");
    match client.register(None).await {
        Ok(outcome) => {
            let why = format!("{:?} {:?}", outcome.status, outcome.state.error_message);
            match outcome.status {
                RegistrationStatus::Assigned => Registration::Assigned {
                    hub: outcome.state.assigned_hub.expect("assigned hub"),
                    device_id: outcome.state.device_id.expect("device ID"),
                },
                RegistrationStatus::Disabled => Registration::Disabled(why),
                RegistrationStatus::Failed => Registration::Failed(why),
                other => panic!("registration ended {other:?}, which is no final status"),
            }
        }
        Err(AzureError::Unauthorized(e)) if e.status == 401 && e.code.as_deref() == Some("401002") => {
            Registration::RefusedAtRegister(e.to_string())
        }
        Err(err) => panic!("registration failed for a reason other than a refusal: {err}"),
    }
}

/// Symmetric-key authentication with the device's own key.
pub fn with_key(key: &str) -> DeviceAuth {
    DeviceAuth::SymmetricKey(Secret::new(key.to_string()))
}

/// Symmetric-key authentication with a key derived from a group key.
pub fn with_group_key(group_key: &str) -> DeviceAuth {
    DeviceAuth::GroupKey(Secret::new(group_key.to_string()))
}

/// X.509 authentication with a leaf certificate and its chain.
pub fn with_certificate(leaf: &TestLeaf) -> DeviceAuth {
    DeviceAuth::X509 { cert_chain_pem: leaf.chain_pem.clone().into_bytes(), key_pem: Secret::new(leaf.key_pem.clone()) }
}
