//! `dps-operator export`: writes one manifest per individual enrollment and enrollment group of an existing
//! DPS instance, annotated for adoption, with every field the controllers compare copied from DPS, so that
//! applying them adopts each entry without a write to DPS. Keys are never put in a manifest: symmetric-key
//! entries name a Secret, written (into `secrets/`) only with `--write-secrets`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::ObjectMeta;
use kube::{Client, Resource, ResourceExt};

use crate::api::common::{
    AllocationPolicy, CertificatePair, CertificateSource, CustomAllocation, DeviceCapabilities, InitialTwin,
    KeySelector, ProvisioningServiceRef, ProvisioningSettings, ProvisioningStatus, ReprovisionPolicy,
    SymmetricKeyAttestation,
};
use crate::api::enrollment_group::{CaReferences, GroupAttestation, GroupX509Attestation};
use crate::api::individual_enrollment::{IndividualAttestation, IndividualX509Attestation, TpmAttestation};
use crate::api::{EnrollmentGroup, EnrollmentGroupSpec, IndividualEnrollment, IndividualEnrollmentSpec};
use crate::azure::wire::{self, AttestationMechanism, AttestationType};
use crate::azure::{ClientOptions, DpsServiceClient};
use crate::controller::backend::BackendCache;
use crate::controller::individual_enrollment::attestation::{PRIMARY_KEY, SECONDARY_KEY};
use crate::controller::ownership::ADOPT_ANNOTATION;
use crate::controller::settings::{self, WireSettings};
use crate::{Error, Result};

/// Arguments of `dps-operator export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The ProvisioningService the manifests refer to; DPS is read through it (its Secret and rate limits)
    /// unless --connection-string-env is given.
    #[arg(long)]
    pub provisioning_service: String,
    /// Namespace of the ProvisioningService and of the manifests (default: the kubeconfig's; left out of the
    /// manifests with --connection-string-env and no -n).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Read DPS with the service connection string in this environment variable instead (no cluster needed).
    #[arg(long, value_name = "VAR")]
    pub connection_string_env: Option<String>,
    /// With --connection-string-env: send requests here instead of `https://{HostName}` (a local engine).
    #[arg(long, requires = "connection_string_env")]
    pub endpoint: Option<String>,
    /// With --connection-string-env: trust this CA certificate (PEM) too (a local engine's).
    #[arg(long, value_name = "FILE", requires = "connection_string_env")]
    pub ca_file: Option<PathBuf>,
    /// Directory for the manifests (created if missing).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Also read the symmetric keys and write them as Secret manifests into `<out-dir>/secrets/`.
    #[arg(long)]
    pub write_secrets: bool,
}

/// Something the manifests refer to that the export could not (or was not asked to) write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needed {
    /// A Secret with `primaryKey` (and `secondaryKey`) for the entry or group `id`.
    Keys {
        /// Secret name.
        secret: String,
        /// Registration or group ID.
        id: String,
    },
    /// A ConfigMap with `primary.pem` (and `secondary.pem`): DPS did not return the certificates.
    Certificates {
        /// ConfigMap name.
        config_map: String,
        /// Registration or group ID.
        id: String,
        /// SHA-1 thumbprints DPS reports, primary first, to pick the right files.
        thumbprints: Vec<String>,
    },
}

/// Everything one export produced.
#[derive(Default)]
pub struct Exported {
    /// Individual enrollments.
    pub enrollments: Vec<IndividualEnrollment>,
    /// Enrollment groups.
    pub groups: Vec<EnrollmentGroup>,
    /// Secrets holding keys (only with `--write-secrets`).
    pub secrets: Vec<KubeSecret>,
    /// What must be created before applying.
    pub needed: Vec<Needed>,
}

/// Runs `export`.
pub async fn run(args: ExportArgs) -> Result<()> {
    let (dps, namespace) = match &args.connection_string_env {
        Some(var) => (direct_client(&args, var)?, args.namespace.clone()),
        None => {
            let client = Client::try_default().await.map_err(|e| Error::KubeConfig(e.to_string()))?;
            let namespace = args.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
            let backend = BackendCache::for_command(&client, &namespace, &args.provisioning_service).await?;
            (backend.dps.clone(), Some(namespace))
        }
    };
    let exported = export(&dps, &args.provisioning_service, namespace.as_deref(), args.write_secrets).await?;
    write(&args.out_dir, &exported)?;
    print!("{}", summary(&args.out_dir, &exported));
    Ok(())
}

fn direct_client(args: &ExportArgs, var: &str) -> Result<DpsServiceClient> {
    let text = std::env::var(var)
        .map_err(|_| Error::invalid("ConnectionStringMissing", format!("environment variable {var} is not set")))?;
    let connection_string: crate::azure::ConnectionString = text.parse().map_err(crate::azure::AzureError::from)?;
    let ca_certificate_pem = match &args.ca_file {
        Some(path) => {
            Some(std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?)
        }
        None => None,
    };
    let options = ClientOptions { endpoint: args.endpoint.clone(), ca_certificate_pem, ..ClientOptions::default() };
    Ok(DpsServiceClient::new(&connection_string, options)?)
}

/// Reads every entry and group (all query pages, through the client's rate budget) and maps them. Keys
/// are read only when `with_keys`; certificates are read through `attestationmechanism` (DPS leaves them
/// out of GET and query answers).
pub async fn export(
    dps: &DpsServiceClient,
    service: &str,
    namespace: Option<&str>,
    with_keys: bool,
) -> Result<Exported> {
    let mut out = Exported::default();
    for held in dps.query_all_enrollments("SELECT * FROM enrollments", None).await? {
        let full = match held.attestation.kind {
            AttestationType::SymmetricKey if !with_keys => None,
            AttestationType::SymmetricKey | AttestationType::X509 => {
                Some(dps.enrollment_attestation(&held.registration_id).await?)
            }
            _ => None,
        };
        let (enrollment, secret, needed) = enrollment_manifest(&held, full.as_ref(), service, namespace);
        out.enrollments.push(enrollment);
        out.secrets.extend(secret);
        out.needed.extend(needed);
    }
    for held in dps.query_all_enrollment_groups("SELECT * FROM enrollmentGroups", None).await? {
        let full = match held.attestation.kind {
            AttestationType::SymmetricKey if !with_keys => None,
            AttestationType::SymmetricKey | AttestationType::X509 => {
                Some(dps.enrollment_group_attestation(&held.enrollment_group_id).await?)
            }
            _ => None,
        };
        let (group, secret, needed) = group_manifest(&held, full.as_ref(), service, namespace);
        out.groups.push(group);
        out.secrets.extend(secret);
        out.needed.extend(needed);
    }
    Ok(out)
}

fn metadata(name: String, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: namespace.map(str::to_string),
        annotations: Some(BTreeMap::from([(ADOPT_ANNOTATION.to_string(), "true".to_string())])),
        ..ObjectMeta::default()
    }
}

/// The IndividualEnrollment adopting `held`; `full` is its attestation with keys and certificates (from
/// `attestationmechanism`), when read. Also the key Secret (keys read) and what is left to create.
pub fn enrollment_manifest(
    held: &wire::IndividualEnrollment,
    full: Option<&AttestationMechanism>,
    service: &str,
    namespace: Option<&str>,
) -> (IndividualEnrollment, Option<KubeSecret>, Vec<Needed>) {
    let id = &held.registration_id;
    let name = crate::naming::dns_label("", id);
    let mut needed = Vec::new();
    let mut secret = None;
    let attestation = match held.attestation.kind {
        AttestationType::X509 => {
            let pick = |m: &AttestationMechanism| m.x509.as_ref().and_then(|x| x.client_certificates.clone());
            let config_map = format!("{name}.enrollment-certificates");
            let pair = certificates(pick(&held.attestation), full.and_then(pick), &config_map, id, &mut needed);
            IndividualAttestation::X509(IndividualX509Attestation { client_certificates: pair })
        }
        AttestationType::Tpm => {
            let tpm = held.attestation.tpm.clone().or_else(|| full.and_then(|f| f.tpm.clone())).unwrap_or_default();
            IndividualAttestation::Tpm(TpmAttestation {
                endorsement_key: tpm.endorsement_key,
                storage_root_key: tpm.storage_root_key,
            })
        }
        // Symmetric keys, and `none` (which DPS does not accept for an entry): a Secret reference.
        _ => {
            let secret_name = format!("{name}.enrollment-keys");
            secret = keys(full, &secret_name, id, namespace, &mut needed);
            IndividualAttestation::SymmetricKey(SymmetricKeyAttestation { secret_name, generate: false })
        }
    };
    let spec = IndividualEnrollmentSpec {
        provisioning_service_ref: ProvisioningServiceRef { name: service.to_string() },
        registration_id: Some(id.clone()),
        device_id: held.device_id.clone(),
        provisioning_status: status(held.provisioning_status),
        attestation,
        settings: provisioning_settings(&WireSettings::of_enrollment(held)),
        on_delete: Default::default(),
    };
    let mut enrollment = IndividualEnrollment::new(&name, spec);
    enrollment.metadata = metadata(name, namespace);
    (enrollment, secret, needed)
}

/// The EnrollmentGroup adopting `held` (see [`enrollment_manifest`]).
pub fn group_manifest(
    held: &wire::EnrollmentGroup,
    full: Option<&AttestationMechanism>,
    service: &str,
    namespace: Option<&str>,
) -> (EnrollmentGroup, Option<KubeSecret>, Vec<Needed>) {
    let id = &held.enrollment_group_id;
    let name = crate::naming::dns_label("", id);
    let mut needed = Vec::new();
    let mut secret = None;
    let attestation = match held.attestation.kind {
        AttestationType::X509 => {
            let x509 = held.attestation.x509.clone().unwrap_or_default();
            match x509.ca_references {
                Some(refs) => GroupAttestation::X509(GroupX509Attestation::CaReferences(CaReferences {
                    primary: refs.primary.unwrap_or_default(),
                    secondary: refs.secondary,
                })),
                None => {
                    let pick = |m: &AttestationMechanism| m.x509.as_ref().and_then(|x| x.signing_certificates.clone());
                    let config_map = format!("{name}.group-certificates");
                    let pair = certificates(pick(&held.attestation), full.and_then(pick), &config_map, id, &mut needed);
                    GroupAttestation::X509(GroupX509Attestation::SigningCertificates(pair))
                }
            }
        }
        _ => {
            let secret_name = format!("{name}.group-keys");
            secret = keys(full, &secret_name, id, namespace, &mut needed);
            GroupAttestation::SymmetricKey(SymmetricKeyAttestation { secret_name, generate: false })
        }
    };
    let spec = EnrollmentGroupSpec {
        provisioning_service_ref: ProvisioningServiceRef { name: service.to_string() },
        enrollment_group_id: Some(id.clone()),
        provisioning_status: status(held.provisioning_status),
        attestation,
        settings: provisioning_settings(&WireSettings::of_group(held)),
        on_delete: Default::default(),
    };
    let mut group = EnrollmentGroup::new(&name, spec);
    group.metadata = metadata(name, namespace);
    (group, secret, needed)
}

fn status(held: Option<wire::ProvisioningStatus>) -> ProvisioningStatus {
    match held.unwrap_or_default() {
        wire::ProvisioningStatus::Enabled => ProvisioningStatus::Enabled,
        wire::ProvisioningStatus::Disabled => ProvisioningStatus::Disabled,
    }
}

/// The Secret of the keys in `full` (`None` when keys were not read: then it is listed as needed).
fn keys(
    full: Option<&AttestationMechanism>,
    secret_name: &str,
    id: &str,
    namespace: Option<&str>,
    needed: &mut Vec<Needed>,
) -> Option<KubeSecret> {
    let held = full.and_then(|f| f.symmetric_key.clone());
    let Some(keys) = held.filter(|k| k.primary_key.is_some()) else {
        needed.push(Needed::Keys { secret: secret_name.to_string(), id: id.to_string() });
        return None;
    };
    let mut data = BTreeMap::new();
    for (name, key) in [(PRIMARY_KEY, keys.primary_key), (SECONDARY_KEY, keys.secondary_key)] {
        if let Some(key) = key {
            data.insert(name.to_string(), key.expose().to_string());
        }
    }
    Some(KubeSecret {
        metadata: ObjectMeta {
            name: Some(secret_name.to_string()),
            namespace: namespace.map(str::to_string),
            ..ObjectMeta::default()
        },
        string_data: Some(data),
        type_: Some("Opaque".into()),
        ..KubeSecret::default()
    })
}

/// The certificates inline when DPS returned them, else a ConfigMap reference listed as needed.
fn certificates(
    held: Option<wire::X509Certificates>,
    full: Option<wire::X509Certificates>,
    config_map: &str,
    id: &str,
    needed: &mut Vec<Needed>,
) -> CertificatePair {
    let text = |c: &Option<wire::X509CertificateWithInfo>| c.as_ref().and_then(|c| c.certificate.as_deref()).map(pem);
    let full = full.unwrap_or_default();
    if let Some(primary) = text(&full.primary) {
        let secondary = full.secondary.as_ref().map(|_| text(&full.secondary));
        // A secondary DPS holds but did not return cannot be inlined: fall through to the ConfigMap.
        if secondary.as_ref().is_none_or(Option::is_some) {
            return CertificatePair {
                primary: CertificateSource::Pem(primary),
                secondary: secondary.flatten().map(CertificateSource::Pem),
            };
        }
    }
    let held = held.unwrap_or_default();
    let thumbprint = |c: &Option<wire::X509CertificateWithInfo>| {
        c.as_ref().and_then(|c| c.info.as_ref()).and_then(|i| i.sha1_thumbprint.clone())
    };
    needed.push(Needed::Certificates {
        config_map: config_map.to_string(),
        id: id.to_string(),
        thumbprints: [thumbprint(&held.primary), thumbprint(&held.secondary)].into_iter().flatten().collect(),
    });
    let source = |key: &str| CertificateSource::ConfigMapRef(KeySelector { name: config_map.into(), key: key.into() });
    CertificatePair { primary: source("primary.pem"), secondary: held.secondary.map(|_| source("secondary.pem")) }
}

/// PEM as it is, base64 DER wrapped as PEM (the CRDs take PEM inline).
fn pem(text: &str) -> String {
    if text.contains("-----BEGIN") {
        return text.to_string();
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let lines: Vec<&str> = compact.as_bytes().chunks(64).filter_map(|c| std::str::from_utf8(c).ok()).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

/// The spec settings reproducing `held` under the controllers' comparison ([`settings::differences`]).
/// A setting whose DPS value the spec cannot express exactly (an initial twin with an empty `properties`,
/// say) is left unset: unset is "DPS's value", which the controllers do not compare.
pub fn provisioning_settings(held: &WireSettings) -> ProvisioningSettings {
    let mut spec = ProvisioningSettings {
        allocation_policy: held.allocation_policy.map(|p| match p {
            wire::AllocationPolicy::Hashed => AllocationPolicy::Hashed,
            wire::AllocationPolicy::GeoLatency => AllocationPolicy::GeoLatency,
            wire::AllocationPolicy::Static => AllocationPolicy::Static,
            wire::AllocationPolicy::Custom => AllocationPolicy::Custom,
        }),
        iot_hubs: held.iot_hubs.clone().unwrap_or_default(),
        custom_allocation: held
            .custom_allocation_definition
            .as_ref()
            .map(|c| CustomAllocation { webhook_url: c.webhook_url.clone(), api_version: c.api_version.clone() }),
        initial_twin: held.initial_twin.as_ref().map(|t| InitialTwin {
            tags: t.tags.clone(),
            desired_properties: t.properties.as_ref().and_then(|p| p.desired.clone()),
        }),
        reprovision_policy: held.reprovision_policy.map(|r| ReprovisionPolicy {
            update_hub_assignment: r.update_hub_assignment,
            migrate_device_data: r.migrate_device_data,
        }),
        capabilities: held.capabilities.filter(|c| c.iot_edge).map(|c| DeviceCapabilities { iot_edge: c.iot_edge }),
    };
    for field in settings::differences(held, &settings::wire_settings(&spec)) {
        match field {
            "initialTwin" => spec.initial_twin = None,
            "customAllocationDefinition" => spec.custom_allocation = None,
            "allocationPolicy" => spec.allocation_policy = None,
            "reprovisionPolicy" => spec.reprovision_policy = None,
            // Always compared, and mapped one to one above.
            _ => {}
        }
    }
    spec
}

/// Writes `<kind>-<name>.yaml` per resource into `dir`, and the Secrets into `dir/secrets/`.
pub fn write(dir: &Path, exported: &Exported) -> Result<()> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for e in &exported.enrollments {
        write_yaml(&dir.join(format!("individualenrollment-{}.yaml", e.name_any())), e)?;
    }
    for g in &exported.groups {
        write_yaml(&dir.join(format!("enrollmentgroup-{}.yaml", g.name_any())), g)?;
    }
    if !exported.secrets.is_empty() {
        let secrets = dir.join("secrets");
        std::fs::create_dir_all(&secrets).map_err(io(&secrets))?;
        for s in &exported.secrets {
            write_yaml(&secrets.join(format!("secret-{}.yaml", s.name_any())), s)?;
        }
    }
    Ok(())
}

fn write_yaml<K: Resource<DynamicType = ()> + serde::Serialize>(path: &Path, object: &K) -> Result<()> {
    let mut value = serde_json::to_value(object)?;
    if let Some(fields) = value.as_object_mut() {
        // Nothing observed belongs in a manifest, and an empty status would only be noise.
        fields.remove("status");
        fields.insert("apiVersion".into(), K::api_version(&()).into());
        fields.insert("kind".into(), K::kind(&()).into());
    }
    let text = serde_yaml_ng::to_string(&value)?;
    std::fs::write(path, text).map_err(|source| Error::Io { path: path.display().to_string(), source })
}

/// What was written, and what must exist before `kubectl apply`.
pub fn summary(dir: &Path, exported: &Exported) -> String {
    let mut out = format!(
        "wrote {} IndividualEnrollments and {} EnrollmentGroups to {}\n",
        exported.enrollments.len(),
        exported.groups.len(),
        dir.display()
    );
    if !exported.secrets.is_empty() {
        out.push_str(&format!(
            "wrote {} key Secrets to {} (keys in clear text: apply them, or seal them, and do not commit them)\n",
            exported.secrets.len(),
            dir.join("secrets").display()
        ));
    }
    let keys: Vec<&Needed> = exported.needed.iter().filter(|n| matches!(n, Needed::Keys { .. })).collect();
    if !keys.is_empty() {
        out.push_str(&format!(
            "create these {} Secrets (keys {PRIMARY_KEY}, {SECONDARY_KEY}: the entry's base64 keys) before applying, or export again with --write-secrets:\n",
            keys.len()
        ));
        for n in keys {
            if let Needed::Keys { secret, id } = n {
                out.push_str(&format!("  secret/{secret}  (keys of {id})\n"));
            }
        }
    }
    for n in &exported.needed {
        if let Needed::Certificates { config_map, id, thumbprints } = n {
            out.push_str(&format!(
                "create configmap/{config_map} with primary.pem (and secondary.pem) for {id}: DPS did not return the certificates; SHA-1 thumbprints {}\n",
                thumbprints.join(", ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::Secret;

    fn held() -> wire::IndividualEnrollment {
        wire::IndividualEnrollment {
            registration_id: "Kiosk_7".into(),
            attestation: AttestationMechanism::symmetric_key(None, None),
            iot_hubs: Some(vec!["hub1.local".into()]),
            initial_twin: Some(wire::InitialTwin {
                tags: Some(serde_json::json!({"site": 4})),
                properties: Some(wire::InitialTwinProperties { desired: None }),
            }),
            reprovision_policy: Some(wire::ReprovisionPolicy {
                update_hub_assignment: false,
                migrate_device_data: true,
            }),
            capabilities: Some(wire::DeviceCapabilities { iot_edge: true }),
            provisioning_status: Some(wire::ProvisioningStatus::Disabled),
            ..Default::default()
        }
    }

    #[test]
    fn an_exported_entry_is_in_sync_under_the_controllers_comparison_and_names_its_key_secret() {
        let (e, secret, needed) = enrollment_manifest(&held(), None, "dps", Some("fleet"));
        assert!(secret.is_none());
        assert_eq!(
            e.metadata.annotations.as_ref().and_then(|a| a.get(ADOPT_ANNOTATION)).map(String::as_str),
            Some("true")
        );
        assert_eq!(e.spec.registration_id.as_deref(), Some("Kiosk_7"));
        assert_eq!(e.spec.provisioning_status, ProvisioningStatus::Disabled);
        let IndividualAttestation::SymmetricKey(sym) = &e.spec.attestation else { panic!("symmetric") };
        assert_eq!(needed, vec![Needed::Keys { secret: sym.secret_name.clone(), id: "Kiosk_7".into() }]);
        let h = held();
        let held_settings = WireSettings {
            allocation_policy: h.allocation_policy,
            iot_hubs: h.iot_hubs,
            custom_allocation_definition: None,
            initial_twin: h.initial_twin,
            reprovision_policy: h.reprovision_policy,
            capabilities: h.capabilities,
        };
        // `properties: {}` has no spec form: left unset, so not compared, rather than compared and different.
        assert!(e.spec.settings.initial_twin.is_none());
        assert!(settings::differences(&held_settings, &settings::wire_settings(&e.spec.settings)).is_empty());
    }

    #[test]
    fn keys_go_into_a_separate_secret_and_never_into_the_manifest() {
        let key = "c2VjcmV0LWtleS1ieXRlcy0xMjM0NTY3ODkwMTIzNDU2";
        let full = AttestationMechanism::symmetric_key(Some(Secret::new(key.to_string())), None);
        let (e, secret, needed) = enrollment_manifest(&held(), Some(&full), "dps", None);
        assert!(needed.is_empty());
        assert!(!serde_json::to_string(&e).expect("json").contains(key));
        let secret = secret.expect("a Secret");
        assert_eq!(secret.string_data.as_ref().and_then(|d| d.get(PRIMARY_KEY)).map(String::as_str), Some(key));
    }

    #[test]
    fn certificates_missing_from_the_answer_become_a_config_map_reference() {
        let mut held = held();
        held.attestation = AttestationMechanism::x509_client_certificate("ignored", None);
        if let Some(c) = held.attestation.x509.as_mut().and_then(|x| x.client_certificates.as_mut()) {
            c.primary = Some(wire::X509CertificateWithInfo {
                certificate: None,
                info: Some(wire::X509CertificateInfo { sha1_thumbprint: Some("AB12".into()), ..Default::default() }),
            });
        }
        let (e, _, needed) = enrollment_manifest(&held, None, "dps", None);
        let IndividualAttestation::X509(x) = &e.spec.attestation else { panic!("x509") };
        assert!(matches!(x.client_certificates.primary, CertificateSource::ConfigMapRef(_)));
        assert!(matches!(&needed[..], [Needed::Certificates { thumbprints, .. }] if thumbprints == &["AB12"]));
        assert!(pem("QUJD").starts_with("-----BEGIN CERTIFICATE-----\nQUJD\n"));
    }
}
