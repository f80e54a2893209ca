//! The attestation an individual enrollment sends to DPS, read from its Secret, ConfigMap or inline PEM,
//! and the Secret of generated keys the resource owns.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};

use crate::api::IndividualEnrollment;
use crate::api::individual_enrollment::IndividualAttestation;
use crate::azure::Secret;
use crate::azure::wire::{AttestationMechanism, AttestationType};
use crate::controller::certificate::Certificate;
use crate::controller::{Context, inputs, rotation};
use crate::{Error, Result};

/// Key of the primary key in a symmetric-key Secret.
pub const PRIMARY_KEY: &str = "primaryKey";
/// Key of the secondary key in a symmetric-key Secret.
pub const SECONDARY_KEY: &str = "secondaryKey";

/// What the resource's attestation resolves to.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The mechanism to send (symmetric keys `None` when DPS is to generate them).
    pub mechanism: AttestationMechanism,
    /// Set when DPS generates the keys and the operator must write them into this Secret.
    pub generate_into: Option<String>,
    /// SHA-1 thumbprints (primary, secondary) of X.509 certificates, to compare with DPS's `info`.
    pub thumbprints: Vec<String>,
    /// Status names (primary, secondary) of the credentials the inputs give (see
    /// [`crate::controller::rotation`]); `None` for a key DPS generates or keeps.
    pub credentials: [Option<String>; 2],
}

/// Reads the attestation inputs of `enrollment` for `registration_id`.
pub async fn plan(ctx: &Context, enrollment: &IndividualEnrollment, registration_id: &str) -> Result<Plan> {
    let namespace = enrollment.namespace().unwrap_or_default();
    match &enrollment.spec.attestation {
        IndividualAttestation::SymmetricKey(sym) => {
            match inputs::get_secret(&ctx.client, &namespace, &sym.secret_name).await? {
                Some(secret) => {
                    let primary = inputs::secret_value(&secret, PRIMARY_KEY);
                    let secondary = inputs::secret_value(&secret, SECONDARY_KEY);
                    let Some(primary) = primary else {
                        return Err(Error::invalid(
                            "SecretKeyMissing",
                            format!("Secret {namespace}/{} has no key {PRIMARY_KEY:?}", sym.secret_name),
                        ));
                    };
                    for (name, key) in [(PRIMARY_KEY, Some(&primary)), (SECONDARY_KEY, secondary.as_ref())] {
                        if let Some(key) = key {
                            check_key(key, name, &sym.secret_name)?;
                        }
                    }
                    let credentials = [Some(rotation::key_id(&primary)), secondary.as_ref().map(rotation::key_id)];
                    Ok(Plan {
                        mechanism: AttestationMechanism::symmetric_key(Some(primary), secondary),
                        generate_into: None,
                        thumbprints: Vec::new(),
                        credentials,
                    })
                }
                None if sym.generate => Ok(Plan {
                    mechanism: AttestationMechanism::symmetric_key(None, None),
                    generate_into: Some(sym.secret_name.clone()),
                    thumbprints: Vec::new(),
                    credentials: [None, None],
                }),
                None => Err(Error::invalid(
                    "SecretNotFound",
                    format!(
                        "Secret {namespace}/{} does not exist; create it with {PRIMARY_KEY} (and {SECONDARY_KEY}) or set generate: true",
                        sym.secret_name
                    ),
                )),
            }
        }
        IndividualAttestation::X509(x509) => {
            let pair = &x509.client_certificates;
            let primary =
                load(ctx, &namespace, &pair.primary, "the primary client certificate", registration_id).await?;
            let secondary = match &pair.secondary {
                Some(source) => {
                    Some(load(ctx, &namespace, source, "the secondary client certificate", registration_id).await?)
                }
                None => None,
            };
            let thumbprints =
                std::iter::once(&primary).chain(secondary.as_ref()).map(Certificate::sha1_thumbprint).collect();
            let credentials =
                [Some(rotation::certificate_id(&primary)), secondary.as_ref().map(rotation::certificate_id)];
            Ok(Plan {
                mechanism: AttestationMechanism::x509_client_certificate(
                    primary.base64(),
                    secondary.map(|c| c.base64()),
                ),
                generate_into: None,
                thumbprints,
                credentials,
            })
        }
        IndividualAttestation::Tpm(tpm) => Ok(Plan {
            mechanism: AttestationMechanism::tpm(tpm.endorsement_key.clone(), tpm.storage_root_key.clone()),
            generate_into: None,
            thumbprints: Vec::new(),
            credentials: [None, None],
        }),
    }
}

async fn load(
    ctx: &Context,
    namespace: &str,
    source: &crate::api::common::CertificateSource,
    what: &str,
    registration_id: &str,
) -> Result<Certificate> {
    let text = inputs::certificate(&ctx.client, namespace, source).await?;
    let cert = Certificate::parse(&text, what)?;
    if !cert.common_name.as_deref().is_some_and(|cn| cn.eq_ignore_ascii_case(registration_id)) {
        return Err(Error::invalid(
            "CertificateCommonNameMismatch",
            format!(
                "{what} has common name {:?} but the registration ID is {registration_id:?}; DPS takes the registration ID from the CN",
                cert.common_name.unwrap_or_default()
            ),
        ));
    }
    Ok(cert)
}

/// DPS takes base64 keys of 16 to 64 bytes; the message names the Secret, never the value.
pub(crate) fn check_key(key: &Secret, name: &str, secret_name: &str) -> Result<()> {
    let len = base64::engine::general_purpose::STANDARD.decode(key.expose()).map(|k| k.len()).unwrap_or(0);
    if !(16..=64).contains(&len) {
        return Err(Error::invalid(
            "InvalidSymmetricKey",
            format!("key {name:?} of Secret {secret_name} must be base64 of 16 to 64 bytes"),
        ));
    }
    Ok(())
}

/// Whether DPS's attestation (as read through attestationmechanism) differs from the plan.
pub fn differs(held: &AttestationMechanism, plan: &Plan) -> bool {
    let wanted = &plan.mechanism;
    if held.kind != wanted.kind {
        return true;
    }
    match wanted.kind {
        AttestationType::SymmetricKey => {
            if plan.generate_into.is_some() {
                return false;
            }
            let keys = |m: &AttestationMechanism| {
                let k = m.symmetric_key.clone().unwrap_or_default();
                (k.primary_key.map(|s| s.expose().to_string()), k.secondary_key.map(|s| s.expose().to_string()))
            };
            let (held_primary, held_secondary) = keys(held);
            let (want_primary, want_secondary) = keys(wanted);
            // A Secret without a secondary key leaves the one DPS generated in place.
            held_primary != want_primary || (want_secondary.is_some() && held_secondary != want_secondary)
        }
        AttestationType::X509 => {
            let held_certs = held.x509.as_ref().and_then(|x| x.client_certificates.clone()).unwrap_or_default();
            let held_thumbs: Vec<String> = [held_certs.primary, held_certs.secondary]
                .into_iter()
                .flatten()
                .filter_map(|c| c.info.and_then(|i| i.sha1_thumbprint))
                .map(|t| t.to_ascii_uppercase())
                .collect();
            held_thumbs != plan.thumbprints
        }
        AttestationType::Tpm => {
            held.tpm.as_ref().map(|t| &t.endorsement_key) != wanted.tpm.as_ref().map(|t| &t.endorsement_key)
        }
        AttestationType::None => false,
    }
}

/// Writes DPS-generated keys into a new Secret owned by `enrollment` (an individual enrollment or a
/// group; deleted with it by the garbage collector). An existing Secret of that name is left alone.
pub async fn write_generated<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    enrollment: &K,
    secret_name: &str,
    held: &AttestationMechanism,
) -> Result<()> {
    let namespace = enrollment.namespace().unwrap_or_default();
    let keys = held.symmetric_key.clone().unwrap_or_default();
    let mut data = BTreeMap::new();
    for (name, key) in [(PRIMARY_KEY, keys.primary_key), (SECONDARY_KEY, keys.secondary_key)] {
        if let Some(key) = key {
            data.insert(name.to_string(), ByteString(key.expose().as_bytes().to_vec()));
        }
    }
    let secret = KubeSecret {
        metadata: ObjectMeta {
            name: Some(secret_name.to_string()),
            namespace: Some(namespace.clone()),
            owner_references: enrollment.controller_owner_ref(&()).map(|r| vec![r]),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_string(), "dps-operator".to_string())])),
            // Keys generated while a rotation request is on the resource are already new: mark it done.
            annotations: rotation::generated_token(enrollment)
                .map(|t| BTreeMap::from([(rotation::ROTATED_FOR.to_string(), t)])),
            ..ObjectMeta::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..KubeSecret::default()
    };
    match Api::<KubeSecret>::namespaced(ctx.client.clone(), &namespace).create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
