//! `dps-operator engine-connection`: the Secret and ProvisioningService that connect the operator to a
//! local engine, built from the engine's engine.json (what `deploy/local/up.sh` applies).

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;

use crate::Result;
use crate::api::common::{CertificateSource, KeySelector};
use crate::api::provisioning_service::{LinkedHub, ProvisioningService, ProvisioningServiceSpec, RateLimits};
use crate::azure::engine_info::EngineInfo;

/// Options of `dps-operator engine-connection`.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineConnectionArgs {
    /// The engine's engine.json.
    #[arg(long)]
    pub engine_json: PathBuf,
    /// Name of the ProvisioningService; the Secret is `<name>-credentials`.
    #[arg(long, default_value = "local-dps")]
    pub name: String,
}

/// Key of the DPS connection string in the credentials Secret.
pub const DPS_SECRET_KEY: &str = "dps";

/// Builds the credentials Secret and the ProvisioningService for the engine described by `info`.
pub fn manifests(info: &EngineInfo, name: &str) -> Result<(Secret, ProvisioningService)> {
    let secret_name = format!("{name}-credentials");
    let mut data = BTreeMap::from([(
        DPS_SECRET_KEY.to_string(),
        info.provisioning_service.connection_string.to_secret_string().expose().to_string(),
    )]);
    let mut hubs = Vec::new();
    for hub in &info.hubs {
        data.insert(hub.name.clone(), hub.connection_string.to_secret_string().expose().to_string());
        hubs.push(LinkedHub {
            host_name: hub.host_name.clone(),
            endpoint: Some(hub.endpoint.clone()),
            connection_string_secret_ref: KeySelector { name: secret_name.clone(), key: hub.name.clone() },
        });
    }
    let ca_pem = info.ca_pem()?.map(|pem| String::from_utf8_lossy(&pem).into_owned());
    let secret = Secret {
        metadata: ObjectMeta { name: Some(secret_name.clone()), ..ObjectMeta::default() },
        string_data: Some(data),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    let spec = ProvisioningServiceSpec {
        connection_string_secret_ref: KeySelector { name: secret_name, key: DPS_SECRET_KEY.into() },
        endpoint: Some(info.provisioning_service.endpoint.clone()),
        id_scope: Some(info.id_scope.clone()),
        hubs,
        ca_bundle: ca_pem.map(CertificateSource::Pem),
        rate_limits: RateLimits::default(),
    };
    Ok((secret, ProvisioningService::new(name, spec)))
}

/// Prints the two manifests as one YAML stream.
pub fn print(args: &EngineConnectionArgs) -> Result<()> {
    let info = EngineInfo::load(&args.engine_json)?;
    let (secret, service) = manifests(&info, &args.name)?;
    let secret_yaml = serde_yaml_ng::to_string(&secret)?;
    // Through JSON: serde_yaml writes Rust enums as YAML tags (`!pem ...`), which Kubernetes does not read.
    let service_yaml = serde_yaml_ng::to_string(&serde_json::to_value(&service)?)?;
    print!("---\n{secret_yaml}---\n{service_yaml}");
    Ok(())
}
