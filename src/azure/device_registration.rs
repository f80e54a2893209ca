//! Device-side registration (api-version 2021-06-01): `PUT .../register`, then poll the operation.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use tokio::time::Instant;

use super::error::AzureError;
use super::http::{Request, Transport, base_url, build_client, path_segment};
use super::retry::{RetryPolicy, parse_retry_after};
use super::sas::{TokenCache, derive_device_key};
use super::secret::Secret;
use super::wire::{DeviceRegistration, DeviceRegistrationResult, RegistrationOperationStatus, RegistrationStatus};

/// The device API version this client speaks.
pub const DEVICE_API_VERSION: &str = "2021-06-01";
/// Azure's global device endpoint.
pub const GLOBAL_DEVICE_ENDPOINT: &str = "https://global.azure-devices-provisioning.net";
/// The `skn` of device registration tokens.
pub const REGISTRATION_POLICY: &str = "registration";

/// How the device proves its identity.
#[derive(Clone)]
pub enum DeviceAuth {
    /// The device's own symmetric key (base64): individual enrollment key or derived group key.
    SymmetricKey(Secret),
    /// An enrollment group key (base64); the device key is derived from it and the registration ID.
    GroupKey(Secret),
    /// X.509: certificate chain PEM (leaf first, CN = registration ID) and private key PEM.
    X509 {
        /// Leaf certificate followed by its intermediates.
        cert_chain_pem: Vec<u8>,
        /// The leaf's private key (PKCS#8, PKCS#1 or SEC1 PEM).
        key_pem: Secret,
    },
}

impl std::fmt::Debug for DeviceAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceAuth::SymmetricKey(_) => "SymmetricKey([REDACTED])",
            DeviceAuth::GroupKey(_) => "GroupKey([REDACTED])",
            DeviceAuth::X509 { .. } => "X509 { key: [REDACTED] }",
        })
    }
}

/// Settings of a device registration.
#[derive(Debug, Clone)]
pub struct DeviceRegistrationOptions {
    /// Device endpoint base URL (default [`GLOBAL_DEVICE_ENDPOINT`]).
    pub endpoint: String,
    /// Extra CA certificates (PEM) to trust on top of the system roots.
    pub ca_certificate_pem: Option<Vec<u8>>,
    /// Give up when not finished by then.
    pub deadline: Duration,
    /// Poll interval when the service sends no `retry-after` (Azure allows 5 status polls per 10 s).
    pub poll_interval: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Retries of individual requests (5xx, 429, connection failures).
    pub retry: RetryPolicy,
}

impl Default for DeviceRegistrationOptions {
    fn default() -> Self {
        DeviceRegistrationOptions {
            endpoint: GLOBAL_DEVICE_ENDPOINT.into(),
            ca_certificate_pem: None,
            deadline: Duration::from_secs(60),
            poll_interval: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// How a registration ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationOutcome {
    /// `assigned`, `failed` or `disabled`.
    pub status: RegistrationStatus,
    /// The operation that was polled.
    pub operation_id: String,
    /// The registration state the service returned.
    pub state: DeviceRegistrationResult,
}

impl RegistrationOutcome {
    /// Whether the device was assigned to a hub.
    pub fn is_assigned(&self) -> bool {
        self.status == RegistrationStatus::Assigned
    }
}

/// A device registering itself with DPS.
#[derive(Debug)]
pub struct DeviceRegistrationClient {
    transport: Transport,
    id_scope: String,
    registration_id: String,
    deadline: Duration,
    poll_interval: Duration,
}

impl DeviceRegistrationClient {
    /// A client for `registration_id` in `id_scope`.
    pub fn new(
        id_scope: &str,
        registration_id: &str,
        auth: DeviceAuth,
        options: DeviceRegistrationOptions,
    ) -> Result<Self, AzureError> {
        let resource = format!("{id_scope}/registrations/{registration_id}");
        let (tokens, identity) = match auth {
            DeviceAuth::SymmetricKey(key) => {
                (Some(Arc::new(TokenCache::from_key(&key, &resource, Some(REGISTRATION_POLICY))?)), None)
            }
            DeviceAuth::GroupKey(group_key) => {
                let key = derive_device_key(group_key.expose(), registration_id)?;
                (Some(Arc::new(TokenCache::from_key(&key, &resource, Some(REGISTRATION_POLICY))?)), None)
            }
            DeviceAuth::X509 { cert_chain_pem, key_pem } => {
                let mut pem = Secret::new(String::from_utf8_lossy(&cert_chain_pem).into_owned());
                if !pem.expose().ends_with('\n') {
                    pem = Secret::new(format!("{}\n", pem.expose()));
                }
                let bundle = Secret::new(format!("{}{}", pem.expose(), key_pem.expose()));
                let identity = reqwest::Identity::from_pem(bundle.expose().as_bytes())
                    .map_err(|_| AzureError::Config("client certificate or key PEM is unusable".into()))?;
                (None, Some(identity))
            }
        };
        let client = build_client(options.ca_certificate_pem.as_deref(), identity, options.request_timeout)?;
        let base = base_url(Some(&options.endpoint), GLOBAL_DEVICE_ENDPOINT)?;
        Ok(DeviceRegistrationClient {
            transport: Transport::new(client, base, DEVICE_API_VERSION, tokens, options.retry, None),
            id_scope: id_scope.to_owned(),
            registration_id: registration_id.to_owned(),
            deadline: options.deadline,
            poll_interval: options.poll_interval,
        })
    }

    /// Registers and polls until the service decides (assigned, failed or disabled) or the deadline passes.
    /// A refusal by status code (401, 404, ...) is an error; a decided `failed`/`disabled` is an outcome.
    pub async fn register(&self, payload: Option<serde_json::Value>) -> Result<RegistrationOutcome, AzureError> {
        let started = Instant::now();
        let base = format!("/{}/registrations/{}", path_segment(&self.id_scope), path_segment(&self.registration_id));
        let body = DeviceRegistration { registration_id: self.registration_id.clone(), payload, tpm: None };
        let request = Request::new(Method::PUT, format!("{base}/register")).json(&body)?;
        let answer = self.transport.send(&request).await?;
        let mut status: RegistrationOperationStatus = answer.json()?;
        let mut retry_after = answer.header("retry-after");
        loop {
            if let Some(outcome) = decided(&status) {
                return Ok(outcome);
            }
            if status.operation_id.is_empty() {
                return Err(AzureError::Decode("registration answer has no operationId".into()));
            }
            let wait = poll_delay(retry_after.as_deref(), self.poll_interval);
            if started.elapsed() + wait > self.deadline {
                return Err(AzureError::Deadline(format!(
                    "registration still {:?} after {:?}",
                    status.status.unwrap_or(RegistrationStatus::Assigning),
                    self.deadline
                )));
            }
            tokio::time::sleep(wait).await;
            let path = format!("{base}/operations/{}", path_segment(&status.operation_id));
            let answer = self.transport.send(&Request::new(Method::GET, path)).await?;
            let next: RegistrationOperationStatus = answer.json()?;
            retry_after = answer.header("retry-after");
            status = RegistrationOperationStatus {
                operation_id: if next.operation_id.is_empty() { status.operation_id } else { next.operation_id },
                ..next
            };
        }
    }
}

/// The final outcome when the service has decided.
fn decided(status: &RegistrationOperationStatus) -> Option<RegistrationOutcome> {
    let state = status.registration_state.clone().unwrap_or_default();
    let value = status.status.or(state.status)?;
    matches!(value, RegistrationStatus::Assigned | RegistrationStatus::Failed | RegistrationStatus::Disabled)
        .then(|| RegistrationOutcome { status: value, operation_id: status.operation_id.clone(), state })
}

/// The wait before the next status poll: the service's `retry-after` (at least 250 ms, at most 60 s),
/// else the default interval.
fn poll_delay(retry_after: Option<&str>, default: Duration) -> Duration {
    retry_after
        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()))
        .map(|d| d.clamp(Duration::from_millis(250), Duration::from_secs(60)))
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decides_only_on_final_states() {
        let assigning: RegistrationOperationStatus =
            serde_json::from_str(r#"{"operationId":"op1","status":"assigning"}"#).expect("parses");
        assert!(decided(&assigning).is_none());
        let assigned: RegistrationOperationStatus = serde_json::from_str(
            r#"{"operationId":"op1","status":"assigned","registrationState":{"registrationId":"r1",
                "assignedHub":"hub1.example.net","deviceId":"d1","status":"assigned","substatus":"initialAssignment",
                "symmetricKey":{"enrollmentGroupId":"g1"}}}"#,
        )
        .expect("parses");
        let outcome = decided(&assigned).expect("decided");
        assert!(outcome.is_assigned());
        assert_eq!(outcome.state.assigned_hub.as_deref(), Some("hub1.example.net"));
        assert!(outcome.state.extra.contains_key("symmetricKey"));
        let disabled: RegistrationOperationStatus = serde_json::from_str(
            r#"{"operationId":"op1","status":"disabled","registrationState":{"registrationId":"r1","status":"disabled"}}"#,
        )
        .expect("parses");
        assert_eq!(decided(&disabled).map(|o| o.status), Some(RegistrationStatus::Disabled));
    }

    #[test]
    fn poll_delays() {
        let default = Duration::from_secs(2);
        assert_eq!(poll_delay(None, default), default);
        assert_eq!(poll_delay(Some("3"), default), Duration::from_secs(3));
        assert_eq!(poll_delay(Some("0"), default), Duration::from_millis(250));
        assert_eq!(poll_delay(Some("junk"), default), default);
    }

    #[test]
    fn auth_debug_is_redacted() {
        let auth = DeviceAuth::SymmetricKey(Secret::new("c2VjcmV0"));
        assert!(!format!("{auth:?}").contains("c2VjcmV0"));
        let bad = DeviceRegistrationClient::new(
            "0ne0000ABCD",
            "r1",
            DeviceAuth::X509 { cert_chain_pem: b"not pem".to_vec(), key_pem: Secret::new("nope") },
            DeviceRegistrationOptions::default(),
        );
        assert!(matches!(bad, Err(AzureError::Config(_))));
    }

    #[test]
    fn x509_identity_accepts_pkcs8_and_sec1_keys() {
        // A throw-away self-signed test certificate (CN=test-device-1), not a credential of anything.
        let cert = include_bytes!("testdata/device-cert.pem").to_vec();
        for key in [include_str!("testdata/device-key.pem"), include_str!("testdata/device-key-sec1.pem")] {
            let auth = DeviceAuth::X509 { cert_chain_pem: cert.clone(), key_pem: Secret::new(key) };
            let client = DeviceRegistrationClient::new(
                "0ne0000ABCD",
                "test-device-1",
                auth,
                DeviceRegistrationOptions {
                    endpoint: "https://127.0.0.1:8443".into(),
                    ca_certificate_pem: Some(cert.clone()),
                    ..DeviceRegistrationOptions::default()
                },
            );
            assert!(client.is_ok(), "{:?}", client.err());
        }
    }
}
