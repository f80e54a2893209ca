//! Reading what resources refer to in their namespace: Secret and ConfigMap keys, certificates. Each
//! missing piece is an [`Error::Invalid`] naming the object and key, never the value.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::Api;

use crate::api::common::{CertificateSource, KeySelector};
use crate::azure::Secret as SecretValue;
use crate::{Error, Result};

/// Reads a Secret, `None` when it does not exist.
pub async fn get_secret(client: &Client, namespace: &str, name: &str) -> Result<Option<Secret>> {
    Ok(Api::<Secret>::namespaced(client.clone(), namespace).get_opt(name).await?)
}

/// The value of `selector` in a Secret of `namespace`, as UTF-8 text.
pub async fn secret_key(client: &Client, namespace: &str, selector: &KeySelector) -> Result<SecretValue> {
    let secret = get_secret(client, namespace, &selector.name).await?.ok_or_else(|| {
        Error::invalid("SecretNotFound", format!("Secret {}/{} does not exist", namespace, selector.name))
    })?;
    secret_value(&secret, &selector.key).ok_or_else(|| {
        Error::invalid(
            "SecretKeyMissing",
            format!("Secret {}/{} has no key {:?} (or it is not UTF-8 text)", namespace, selector.name, selector.key),
        )
    })
}

/// The value of `key` in a Secret's data (or stringData, for objects not yet read back), as UTF-8 text.
pub fn secret_value(secret: &Secret, key: &str) -> Option<SecretValue> {
    if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(bytes.0.clone()).ok().map(|s| SecretValue::new(s.trim().to_string()));
    }
    secret.string_data.as_ref().and_then(|d| d.get(key)).map(|s| SecretValue::new(s.trim().to_string()))
}

/// The value of `selector` in a ConfigMap of `namespace`.
pub async fn config_map_key(client: &Client, namespace: &str, selector: &KeySelector) -> Result<String> {
    let map =
        Api::<ConfigMap>::namespaced(client.clone(), namespace).get_opt(&selector.name).await?.ok_or_else(|| {
            Error::invalid("ConfigMapNotFound", format!("ConfigMap {}/{} does not exist", namespace, selector.name))
        })?;
    map.data.as_ref().and_then(|d| d.get(&selector.key)).cloned().ok_or_else(|| {
        Error::invalid(
            "ConfigMapKeyMissing",
            format!("ConfigMap {}/{} has no key {:?}", namespace, selector.name, selector.key),
        )
    })
}

/// The certificate text (PEM or base64 DER) a [`CertificateSource`] names. Certificates are public, so the
/// text is an ordinary string.
pub async fn certificate(client: &Client, namespace: &str, source: &CertificateSource) -> Result<String> {
    match source {
        CertificateSource::Pem(pem) => Ok(pem.clone()),
        CertificateSource::SecretRef(selector) => {
            Ok(secret_key(client, namespace, selector).await?.expose().to_string())
        }
        CertificateSource::ConfigMapRef(selector) => config_map_key(client, namespace, selector).await,
    }
}

/// Names of the Secrets a certificate source reads (for watches and protection).
pub fn certificate_secret(source: &CertificateSource) -> Option<&str> {
    match source {
        CertificateSource::SecretRef(selector) => Some(&selector.name),
        _ => None,
    }
}
