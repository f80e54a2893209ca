//! `engine.json`: what the local engine writes so clients can find and trust it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::connection_string::ConnectionString;
use super::error::AzureError;
use super::http::ClientOptions;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineInfo {
    /// The DPS ID scope devices register under.
    pub id_scope: String,
    /// Absolute path of the CA certificate (PEM) that signed the engine's TLS certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<PathBuf>,
    /// The DPS service API.
    pub provisioning_service: EngineService,
    /// Base URL of the device registration API.
    pub device_endpoint: String,
    /// The hubs.
    #[serde(default)]
    pub hubs: Vec<EngineHub>,
}

/// The engine's DPS service API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineService {
    /// Host name (token audience).
    pub host_name: String,
    /// Base URL.
    pub endpoint: String,
    /// Service connection string (key redacted in `Debug`).
    pub connection_string: ConnectionString,
}

/// One hub of the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineHub {
    /// Short name.
    pub name: String,
    /// Host name (token audience, DPS `assignedHub`).
    pub host_name: String,
    /// Base URL.
    pub endpoint: String,
    /// Service connection string (key redacted in `Debug`).
    pub connection_string: ConnectionString,
}

impl EngineInfo {
    /// Reads and parses the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, AzureError> {
        let path = path.as_ref();
        let text = std::fs::read(path).map_err(|e| AzureError::Config(format!("{}: {e}", path.display())))?;
        serde_json::from_slice(&text).map_err(|e| AzureError::Config(format!("{}: {e}", path.display())))
    }

    /// The CA certificate PEM, when the file names one.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, AzureError> {
        self.ca_certificate
            .as_ref()
            .map(|p| std::fs::read(p).map_err(|e| AzureError::Config(format!("{}: {e}", p.display()))))
            .transpose()
    }

    /// Client options for the DPS service API (endpoint and CA set).
    pub fn dps_options(&self) -> Result<ClientOptions, AzureError> {
        Ok(ClientOptions {
            endpoint: Some(self.provisioning_service.endpoint.clone()),
            ca_certificate_pem: self.ca_pem()?,
            ..ClientOptions::default()
        })
    }

    /// The hub called `name` (or whose host name is `name`).
    pub fn hub(&self, name: &str) -> Option<&EngineHub> {
        self.hubs.iter().find(|h| h.name == name || h.host_name.eq_ignore_ascii_case(name))
    }

    /// Client options for a hub (endpoint and CA set).
    pub fn hub_options(&self, hub: &EngineHub) -> Result<ClientOptions, AzureError> {
        Ok(ClientOptions {
            endpoint: Some(hub.endpoint.clone()),
            ca_certificate_pem: self.ca_pem()?,
            ..ClientOptions::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{ "idScope": "0ne0000ABCD", "caCertificate": "/abs/path/ca.crt",
      "provisioningService": { "hostName": "127.0.0.2", "endpoint": "https://127.0.0.2:8443",
        "connectionString": "HostName=127.0.0.2;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=c2VjcmV0a2V5MQ==" },
      "deviceEndpoint": "https://127.0.0.2:8443",
      "hubs": [ { "name": "hub1", "hostName": "127.0.0.3", "endpoint": "https://127.0.0.3:8443",
        "connectionString": "HostName=127.0.0.3;SharedAccessKeyName=iothubowner;SharedAccessKey=c2VjcmV0a2V5Mg==" } ],
      "futureField": 1 }"#;

    #[test]
    fn parses_the_documented_shape_and_redacts() {
        let info: EngineInfo = serde_json::from_str(SAMPLE).expect("parses");
        assert_eq!(info.id_scope, "0ne0000ABCD");
        assert_eq!(info.provisioning_service.connection_string.host_name, "127.0.0.2");
        assert_eq!(info.hub("hub1").map(|h| h.host_name.as_str()), Some("127.0.0.3"));
        assert_eq!(info.hub("127.0.0.3").map(|h| h.name.as_str()), Some("hub1"));
        let shown = format!("{info:?}");
        assert!(!shown.contains("c2VjcmV0a2V5MQ==") && !shown.contains("c2VjcmV0a2V5Mg=="));
        let back = serde_json::to_string(&info).expect("serialises");
        assert!(back.contains("c2VjcmV0a2V5MQ=="));
    }
}
