//! Devices registering with the engine, as real devices do (symmetric key, group key, X.509 over mTLS).

use std::time::Duration;

use dps_operator::azure::device_registration::{DeviceAuth, DeviceRegistrationClient, DeviceRegistrationOptions};
use dps_operator::azure::secret::Secret;

use super::certs::TestLeaf;
use super::engine::Engine;

/// Where a registration ended: assigned to a hub, or refused (with the service's words).
#[derive(Debug, PartialEq, Eq)]
pub enum Registration {
    /// Assigned: hub host name and device ID.
    Assigned { hub: String, device_id: String },
    /// Refused by the service: status or error, for failure messages.
    Refused(String),
    /// The register (or poll) request itself answered with this 4xx status and DPS error code.
    Rejected { status: u16, code: Option<String>, why: String },
}

impl Registration {
    /// The assigned hub, failing the test when the device was refused.
    pub fn hub(&self) -> &str {
        match self {
            Registration::Assigned { hub, .. } => hub,
            Registration::Refused(why) | Registration::Rejected { why, .. } => panic!("device was refused: {why}"),
        }
    }

    /// Whether the service refused the device.
    pub fn is_refused(&self) -> bool {
        matches!(self, Registration::Refused(_) | Registration::Rejected { .. })
    }

    /// Whether the request was answered 401 with DPS error code 401002, as Azure refuses an attestation.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Registration::Rejected { status: 401, code: Some(c), .. } if c == "401002")
    }
}

/// Registers `registration_id` with `auth` at the engine's device endpoint.
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
        Ok(outcome) if outcome.is_assigned() => Registration::Assigned {
            hub: outcome.state.assigned_hub.expect("assigned hub"),
            device_id: outcome.state.device_id.expect("device ID"),
        },
        Ok(outcome) => Registration::Refused(format!("{:?} {:?}", outcome.status, outcome.state.error_message)),
        Err(err) if err.status().is_some_and(|s| (400..500).contains(&s)) => Registration::Rejected {
            status: err.status().unwrap_or_default(),
            code: err.service().and_then(|d| d.code.clone()),
            why: err.to_string(),
        },
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
