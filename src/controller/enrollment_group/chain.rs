//! Re-enrollment risk: enabled groups in DPS (anyone's, not only ours) whose signing certificate is above
//! this group's in the certificate chain, so that deleting this group would let its devices register again
//! through them.
//!
//! DPS never returns a group's certificate, only its `info` (thumbprints, names). So the chain is built
//! from the certificates the operator can see — this group's sources (a PEM source may carry the CAs
//! above the signing certificate) and the other EnrollmentGroups' sources in the namespace — linking each
//! certificate to its issuer by signature check, and a DPS group is placed in it by SHA-1 thumbprint. A
//! DPS group whose certificate is not visible matches only by its subject name equal to the issuer of the
//! topmost visible certificate; that cannot be verified, and counts as a risk (keeping a group disabled
//! is the safe error).

use kube::ResourceExt;
use kube::api::{Api, ListParams};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Result;
use crate::api::EnrollmentGroup;
use crate::api::enrollment_group::{GroupAttestation, GroupX509Attestation};
use crate::azure::DpsServiceClient;
use crate::azure::wire::ProvisioningStatus;
use crate::controller::certificate::Certificate;
use crate::controller::{Context, inputs};

/// One enabled group above this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Higher {
    /// Its DPS group ID.
    pub group_id: String,
    /// Whether a signature check placed it in the chain (false: by issuer name only).
    pub verified: bool,
}

/// The enabled DPS groups above the certificates of `chain_texts` (this group's signing certificate
/// sources, first certificate of each being the signing certificate itself).
pub async fn higher_enabled_groups(
    ctx: &Context,
    dps: &DpsServiceClient,
    group: &EnrollmentGroup,
    own_id: &str,
    chain_texts: &[String],
) -> Result<Vec<Higher>> {
    if chain_texts.is_empty() {
        return Ok(Vec::new());
    }
    let own: Vec<Vec<u8>> = chain_texts.iter().filter_map(|t| all_certificates(t).into_iter().next()).collect();
    let mut visible: Vec<Vec<u8>> = chain_texts.iter().flat_map(|t| all_certificates(t)).collect();
    visible.extend(other_groups_certificates(ctx, group).await?);
    let ancestors = ancestors(&own, &visible);
    // Only where the visible chain ends does a name stand in for a signature check.
    let tops: Vec<String> = own
        .iter()
        .chain(&ancestors)
        .filter(|der| !visible.iter().any(|v| signed_by(der, v)))
        .filter_map(|der| issuer_cn(der))
        .collect();
    let thumbprint = |der: &Vec<u8>| Certificate { der: der.clone(), common_name: None, is_ca: true }.sha1_thumbprint();
    let above: Vec<String> = ancestors.iter().map(thumbprint).collect();
    let visible_thumbs: Vec<String> = visible.iter().map(thumbprint).collect();

    let groups = dps.query_all_enrollment_groups("SELECT * FROM enrollmentGroups", None).await?;
    let mut found = Vec::new();
    for g in groups {
        if g.enrollment_group_id.eq_ignore_ascii_case(own_id)
            || g.provisioning_status == Some(ProvisioningStatus::Disabled)
        {
            continue;
        }
        let certs = g.attestation.x509.and_then(|x| x.signing_certificates).unwrap_or_default();
        let infos: Vec<_> = [certs.primary, certs.secondary].into_iter().flatten().filter_map(|c| c.info).collect();
        let verified = infos
            .iter()
            .filter_map(|i| i.sha1_thumbprint.as_deref())
            .any(|t| above.iter().any(|a| a.eq_ignore_ascii_case(t)));
        let by_name = !verified
            && infos.iter().any(|i| {
                let known = i
                    .sha1_thumbprint
                    .as_deref()
                    .is_some_and(|t| visible_thumbs.iter().any(|v| v.eq_ignore_ascii_case(t)));
                !known && i.subject_name.as_deref().and_then(cn_of).is_some_and(|cn| tops.contains(&cn))
            });
        if verified || by_name {
            found.push(Higher { group_id: g.enrollment_group_id, verified });
        }
    }
    found.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    Ok(found)
}

/// Every certificate of a PEM text (or the one base64 DER certificate).
fn all_certificates(text: &str) -> Vec<Vec<u8>> {
    if !text.trim_start().starts_with("-----BEGIN") {
        return Certificate::parse(text, "certificate").map(|c| vec![c.der]).unwrap_or_default();
    }
    x509_parser::pem::Pem::iter_from_buffer(text.as_bytes())
        .filter_map(|pem| pem.ok())
        .filter(|pem| pem.label == "CERTIFICATE")
        .map(|pem| pem.contents)
        .collect()
}

/// The certificates of the other EnrollmentGroups in the namespace that the operator can read.
async fn other_groups_certificates(ctx: &Context, group: &EnrollmentGroup) -> Result<Vec<Vec<u8>>> {
    let namespace = group.namespace().unwrap_or_default();
    let list = Api::<EnrollmentGroup>::namespaced(ctx.client.clone(), &namespace).list(&ListParams::default()).await?;
    let mut out = Vec::new();
    for other in list.into_iter().filter(|g| g.uid() != group.uid()) {
        let GroupAttestation::X509(GroupX509Attestation::SigningCertificates(pair)) = &other.spec.attestation else {
            continue;
        };
        for source in std::iter::once(&pair.primary).chain(pair.secondary.as_ref()) {
            // Another resource's broken input is its own condition, not this group's.
            if let Ok(text) = inputs::certificate(&ctx.client, &namespace, source).await {
                out.extend(all_certificates(&text));
            }
        }
    }
    Ok(out)
}

/// Every visible certificate that signed one of `own` or, transitively, one of those.
fn ancestors(own: &[Vec<u8>], visible: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut found: Vec<Vec<u8>> = Vec::new();
    let mut frontier: Vec<Vec<u8>> = own.to_vec();
    while let Some(child) = frontier.pop() {
        for candidate in visible {
            if *candidate != child
                && !found.contains(candidate)
                && !own.contains(candidate)
                && signed_by(&child, candidate)
            {
                found.push(candidate.clone());
                frontier.push(candidate.clone());
            }
        }
    }
    found
}

/// Whether `issuer` signed `child`: names chain and the signature verifies with the issuer's key.
pub fn signed_by(child: &[u8], issuer: &[u8]) -> bool {
    let (Ok((_, c)), Ok((_, i))) = (X509Certificate::from_der(child), X509Certificate::from_der(issuer)) else {
        return false;
    };
    c.issuer().as_raw() == i.subject().as_raw() && c.verify_signature(Some(i.public_key())).is_ok()
}

fn issuer_cn(der: &[u8]) -> Option<String> {
    let (_, c) = X509Certificate::from_der(der).ok()?;
    if c.issuer().as_raw() == c.subject().as_raw() {
        return None;
    }
    c.issuer().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string)
}

/// The common name in a distinguished name as DPS prints it (`CN=x, O=y` or `O=y, CN=x`).
fn cn_of(name: &str) -> Option<String> {
    name.split([',', '/']).map(str::trim).find_map(|part| part.strip_prefix("CN=")).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

    use super::{ancestors, cn_of, signed_by};

    #[test]
    fn common_names_are_found_in_either_name_order() {
        assert_eq!(cn_of("CN=Root CA, O=Contoso").as_deref(), Some("Root CA"));
        assert_eq!(cn_of("O=Contoso, CN=Root CA").as_deref(), Some("Root CA"));
        assert_eq!(cn_of("O=Contoso"), None);
    }

    fn ca(name: &str, parent: Option<&CertifiedIssuer<'static, KeyPair>>) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        match parent {
            Some(p) => CertifiedIssuer::signed_by(params, key, p).expect("signed"),
            None => CertifiedIssuer::self_signed(params, key).expect("self-signed"),
        }
    }

    #[test]
    fn ancestors_are_found_by_signature_through_intermediates_and_a_same_named_impostor_is_not() {
        let root = ca("Root", None);
        let middle = ca("Middle", Some(&root));
        let line = ca("Line", Some(&middle));
        let impostor = ca("Root", None);
        let der = |c: &CertifiedIssuer<'static, KeyPair>| c.der().to_vec();
        assert!(signed_by(&der(&middle), &der(&root)));
        assert!(!signed_by(&der(&middle), &der(&impostor)), "same name, other key");
        let found = ancestors(&[der(&line)], &[der(&impostor), der(&root), der(&middle), der(&line)]);
        assert_eq!(found.len(), 2);
        assert!(found.contains(&der(&middle)) && found.contains(&der(&root)));
        assert!(!found.contains(&der(&impostor)));
    }
}
