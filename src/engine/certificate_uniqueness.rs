//! One certificate, one entry: DPS lets each certificate of a chain sit in at most one enrollment entry
//! (individual enrollment client certificate or enrollment group signing certificate, primary or
//! secondary), so a write that would put a certificate into a second entry is refused with 409.
//!
//! Certificates are compared by SHA-256 thumbprint. `caReferences` name certificates held in the DPS
//! certificate store, which the engine does not implement; they are not certificates and are not checked.

use rusqlite::Connection;

use super::certs;
use super::error::{ApiError, ApiResult};
use super::model::{Entry, X509Certificates};
use super::storage::{self, GROUPS, INDIVIDUAL};
use super::util;

/// The SHA-256 thumbprints of the certificates an entry holds (client or signing, primary and secondary).
pub fn thumbprints(entry: &Entry) -> Vec<String> {
    let Some(x) = entry.attestation.as_ref().filter(|a| a.kind == "x509").and_then(|a| a.x509.as_ref()) else {
        return Vec::new();
    };
    [x.client_certificates.as_ref(), x.signing_certificates.as_ref()]
        .into_iter()
        .flatten()
        .flat_map(X509Certificates::iter)
        .filter_map(|c| match c.certificate.as_deref().and_then(util::b64_decode) {
            Some(der) => Some(certs::sha256_thumbprint(&der)),
            None => c.info.as_ref().map(|i| i.sha256_thumbprint.to_ascii_uppercase()),
        })
        .collect()
}

/// Refuses (409) writing `entry` as the entry `key` of the groups (`group`) or individual enrollments when
/// one of its certificates already sits in another entry. The entry's own stored version does not count,
/// so an update keeping its certificate is fine.
pub fn check(conn: &Connection, group: bool, key: &str, entry: &Entry) -> ApiResult<()> {
    for thumbprint in thumbprints(entry) {
        for (table, is_group) in [(INDIVIDUAL, false), (GROUPS, true)] {
            let holders: Vec<(String, Entry)> = storage::containing(conn, table, &thumbprint)?;
            let holder = holders
                .into_iter()
                .find(|(id, other)| !(is_group == group && id == key) && thumbprints(other).contains(&thumbprint));
            if let Some((id, _)) = holder {
                let what = if is_group { "enrollment group" } else { "individual enrollment" };
                return Err(ApiError::conflict(format!(
                    "the certificate with SHA-256 thumbprint {thumbprint} is already in {what} '{id}'; \
                     a certificate can be in only one enrollment entry"
                )));
            }
        }
    }
    Ok(())
}
