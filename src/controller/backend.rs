//! The backend of a ProvisioningService: a DPS service client and one hub registry client per linked hub,
//! built from its credential Secrets and CA bundle, and cached until any of them changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kube::{Client, ResourceExt};
use sha2::{Digest, Sha256};

use super::inputs;
use crate::api::provisioning_service::ProvisioningService;
use crate::azure::{ClientOptions, ConnectionString, DpsServiceClient, HubRegistryClient, RateBudgets};
use crate::{Error, Result};

/// The clients of one ProvisioningService.
#[derive(Debug)]
pub struct Backend {
    /// The DPS service API.
    pub dps: DpsServiceClient,
    /// Hub registry clients by host name (lower-case), as DPS names them in `assignedHub`.
    pub hubs: BTreeMap<String, HubRegistryClient>,
}

impl Backend {
    /// The registry client of the hub DPS calls `host_name`; a hub the ProvisioningService does not list
    /// stalls the caller, since only a person can add its credentials.
    pub fn hub(&self, host_name: &str) -> Result<&HubRegistryClient> {
        self.hubs.get(&host_name.to_ascii_lowercase()).ok_or_else(|| {
            Error::invalid(
                "HubNotLinked",
                format!("hub {host_name} is not listed in the ProvisioningService's spec.hubs; add it with its connection string Secret"),
            )
        })
    }
}

/// Built backends by ProvisioningService (`namespace/name`), with the fingerprint of their inputs.
pub struct BackendCache {
    built: Mutex<HashMap<String, Built>>,
    /// Request budgets per host, shared by every backend naming that host.
    pub budgets: RateBudgets,
}

/// A built backend and what it was built from.
struct Built {
    /// Hash of the spec, the Secrets' values and the CA bundle.
    fingerprint: String,
    /// The digest of the ProvisioningService's uid, and its generation, when it was built.
    service: (u64, Option<i64>),
    backend: Arc<Backend>,
}

impl BackendCache {
    /// An empty cache whose rate budgets let resync reads use at most `resync_percent` of each.
    pub fn with_resync_share(resync_percent: u8) -> Self {
        BackendCache { built: Mutex::default(), budgets: RateBudgets::with_resync_share(resync_percent) }
    }

    /// The backend of ProvisioningService `namespace/name` for a one-off command (audit, export), read from
    /// the apiserver; a missing service is a clear `NotFound`, not a crash.
    pub async fn for_command(client: &Client, namespace: &str, name: &str) -> Result<Arc<Backend>> {
        let service = kube::Api::<ProvisioningService>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?
            .ok_or_else(|| Error::invalid("NotFound", format!("ProvisioningService {namespace}/{name} not found")))?;
        // A command runs alone: it may use the whole budget.
        BackendCache::with_resync_share(100).resolve(client, &service).await
    }

    /// The backend of `service`, reading its Secrets (and CA bundle) now and reusing the built clients when
    /// nothing changed (so token caches and connection pools survive).
    pub async fn resolve(&self, client: &Client, service: &ProvisioningService) -> Result<Arc<Backend>> {
        let namespace = service.namespace().unwrap_or_default();
        let spec = &service.spec;
        let dps_string = inputs::secret_key(client, &namespace, &spec.connection_string_secret_ref).await?;
        let ca = match &spec.ca_bundle {
            Some(source) => Some(checked_ca_bundle(inputs::certificate(client, &namespace, source).await?)?),
            None => None,
        };
        let mut hub_strings = Vec::new();
        for hub in &spec.hubs {
            hub_strings.push(inputs::secret_key(client, &namespace, &hub.connection_string_secret_ref).await?);
        }
        // The fingerprint hashes the secret values; it is kept in memory only and never printed.
        let mut hasher = Sha256::new();
        hasher.update(serde_json::to_vec(spec)?);
        hasher.update(dps_string.expose().as_bytes());
        for s in &hub_strings {
            hasher.update([0]);
            hasher.update(s.expose().as_bytes());
        }
        hasher.update(ca.as_deref().unwrap_or_default().as_bytes());
        let fingerprint = format!("{:x}", hasher.finalize());
        let key = format!("{namespace}/{}", service.name_any());
        if let Some(built) = self.built.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&key)
            && built.fingerprint == fingerprint
        {
            built.service = identity(service);
            return Ok(Arc::clone(&built.backend));
        }

        let ca_pem = ca.map(String::into_bytes);
        let dps_cs = parse(&dps_string, "the DPS connection string", &spec.connection_string_secret_ref.name)?;
        let dps = DpsServiceClient::new(
            &dps_cs,
            ClientOptions {
                endpoint: spec.endpoint.clone(),
                ca_certificate_pem: ca_pem.clone(),
                rate_budget: Some(
                    self.budgets.for_host(&dps_cs.host_name, spec.rate_limits.service_operations_per_minute),
                ),
                ..ClientOptions::default()
            },
        )?;
        let mut hubs = BTreeMap::new();
        for (hub, secret) in spec.hubs.iter().zip(&hub_strings) {
            let cs = parse(
                secret,
                &format!("the connection string of hub {}", hub.host_name),
                &hub.connection_string_secret_ref.name,
            )?;
            let options = ClientOptions {
                endpoint: hub.endpoint.clone(),
                ca_certificate_pem: ca_pem.clone(),
                rate_budget: Some(
                    self.budgets.for_host(&cs.host_name, spec.rate_limits.registry_operations_per_minute),
                ),
                ..ClientOptions::default()
            };
            hubs.insert(hub.host_name.to_ascii_lowercase(), HubRegistryClient::new(&cs, options)?);
        }
        let backend = Arc::new(Backend { dps, hubs });
        let built = Built { fingerprint, service: identity(service), backend: Arc::clone(&backend) };
        self.built.lock().unwrap_or_else(|p| p.into_inner()).insert(key, built);
        Ok(backend)
    }

    /// The backend last built for `service` at its current generation, without reading its Secrets again
    /// (else built now): the ProvisioningService controller resolves it afresh whenever a Secret it names
    /// changes, and every few minutes, so enrollments need not read the Secrets once per reconcile.
    pub async fn current(&self, client: &Client, service: &ProvisioningService) -> Result<Arc<Backend>> {
        let (uid, generation) = identity(service);
        match self.built(&service.namespace().unwrap_or_default(), &service.name_any(), uid, generation) {
            Some(backend) => Ok(backend),
            None => self.resolve(client, service).await,
        }
    }

    /// The backend built for ProvisioningService `namespace/name` while it had the uid whose digest is `uid`
    /// and this generation, if there is one.
    pub fn built(&self, namespace: &str, name: &str, uid: u64, generation: Option<i64>) -> Option<Arc<Backend>> {
        let built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        built
            .get(&format!("{namespace}/{name}"))
            .filter(|b| b.service == (uid, generation))
            .map(|b| Arc::clone(&b.backend))
    }

    /// Forgets the backend of a deleted ProvisioningService.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.built.lock().unwrap_or_else(|p| p.into_inner()).remove(&format!("{namespace}/{name}"));
    }
}

/// What a built backend is tied to: the service's uid (as a digest, as the caches keep it) and generation.
fn identity(service: &ProvisioningService) -> (u64, Option<i64>) {
    (service.metadata.uid.as_deref().map_or(0, crate::key_digest::of), service.metadata.generation)
}

fn parse(value: &crate::azure::Secret, what: &str, secret_name: &str) -> Result<ConnectionString> {
    value
        .expose()
        .parse::<ConnectionString>()
        .map_err(|e| Error::invalid("BadConnectionString", format!("{what} in Secret {secret_name} is not valid: {e}")))
}

/// A CA bundle must hold at least one PEM certificate that parses; otherwise the HTTP client fails to build
/// and the service would stall as "BadCredentials", pointing at the wrong input.
fn checked_ca_bundle(pem: String) -> Result<String> {
    let parses = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .any(|block| block.is_ok_and(|b| b.label == "CERTIFICATE" && b.parse_x509().is_ok()));
    if parses {
        Ok(pem)
    } else {
        Err(Error::invalid("InvalidCertificate", "caBundle holds no PEM certificate that parses as X.509"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_without_a_certificate_is_an_invalid_certificate_not_bad_credentials() {
        let good = include_str!("../azure/testdata/device-cert.pem").to_string();
        assert!(checked_ca_bundle(good.clone()).is_ok());
        assert!(checked_ca_bundle(format!("# comment\n{good}")).is_ok());
        for bad in ["not a CA bundle", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", ""] {
            let err = checked_ca_bundle(bad.to_string()).expect_err("refused");
            assert_eq!(err.reason(), "InvalidCertificate");
        }
        let key = include_str!("../azure/testdata/device-key.pem").to_string();
        assert!(checked_ca_bundle(key).is_err(), "a private key is no CA");
    }
}
