//! Secret hygiene: everything a scenario made the operator and the engine write (both logs, every event,
//! every resource's status and conditions, so every error string that reached them) is scanned for the
//! key values the scenario used and for anything shaped like a credential: SAS signatures (`sig=`),
//! `SharedAccessKey=` values and whole SAS tokens. The count must be 0; it is printed.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use serde::Serialize;

use dps_operator::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment, ProvisioningService};
use dps_operator::azure::Credential;

use crate::support::operator::Bed;
use crate::support::secret_scan::{Hit, MIN_CREDENTIAL, secret_hits};

/// One place a scenario wrote to, and what it holds.
pub(crate) struct Written {
    pub what: String,
    pub text: String,
}

fn json<T: Serialize>(value: &T) -> String {
    // Pretty, so each field is its own line and a hit names a line worth reading.
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// The operator's and the engine's logs, every event of the namespace and every resource (status included).
pub(crate) async fn everything_written(bed: &Bed) -> Vec<Written> {
    let mut out = vec![
        Written { what: "operator log".into(), text: bed.operator.log() },
        Written { what: "engine log".into(), text: bed.engine.log() },
    ];
    let lp = ListParams::default();
    let events = bed.api::<Event>().list(&lp).await.expect("events").items;
    out.push(Written { what: "events".into(), text: json(&events) });
    let services = bed.api::<ProvisioningService>().list(&lp).await.expect("list").items;
    out.push(Written { what: "ProvisioningServices".into(), text: json(&services) });
    let enrollments = bed.api::<IndividualEnrollment>().list(&lp).await.expect("list").items;
    out.push(Written { what: "IndividualEnrollments".into(), text: json(&enrollments) });
    let groups = bed.api::<EnrollmentGroup>().list(&lp).await.expect("list").items;
    out.push(Written { what: "EnrollmentGroups".into(), text: json(&groups) });
    let orders = bed.api::<DeviceDeprovision>().list(&lp).await.expect("list").items;
    out.push(Written { what: "DeviceDeprovisions".into(), text: json(&orders) });
    out
}

/// The keys a bed holds: the engine's service and hub keys and every value of every Secret in the namespace
/// (keys the engine generated and the operator stored included), plus `fixed` ones the test chose.
pub(crate) async fn known_keys(bed: &Bed, fixed: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = fixed.iter().map(|k| k.to_string()).collect();
    let info = &bed.engine.info;
    let strings = std::iter::once(&info.provisioning_service.connection_string)
        .chain(info.hubs.iter().map(|h| &h.connection_string));
    for cs in strings {
        let (Credential::Key(k) | Credential::Signature(k)) = &cs.credential;
        keys.push(k.expose().to_string());
    }
    let secrets = bed.api::<Secret>().list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    for secret in secrets {
        for value in secret.data.unwrap_or_default().into_values() {
            if let Ok(text) = String::from_utf8(value.0) {
                // Whole connection strings and their key part both count.
                if let Ok(cs) = text.parse::<dps_operator::azure::ConnectionString>() {
                    let (Credential::Key(k) | Credential::Signature(k)) = &cs.credential;
                    keys.push(k.expose().to_string());
                }
                if text.len() >= MIN_CREDENTIAL && !text.contains("BEGIN CERTIFICATE") {
                    keys.push(text);
                }
            }
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Scans what the bed wrote for its keys and `fixed` ones; prints the count and fails on any hit.
pub(crate) async fn assert_clean(label: &str, bed: &Bed, fixed: &[&str]) {
    let known = known_keys(bed, fixed).await;
    let written = everything_written(bed).await;
    let lines: usize = written.iter().map(|w| w.text.lines().count()).sum();
    let hits: Vec<Hit> = written.iter().flat_map(|w| secret_hits(&w.what, &w.text, &known)).collect();
    crate::support::figures::report(format!(
        "[hygiene] {label}: scanned {lines} lines (operator and engine logs, events, statuses) for {} known keys \
         and SAS shapes: {} secret hits",
        known.len(),
        hits.len()
    ));
    assert!(hits.is_empty(), "{label}: credentials written where they may not be: {hits:#?}");
}

#[test]
fn the_secret_scan_finds_a_deliberately_logged_key_signature_and_token_and_nothing_in_redacted_output() {
    use dps_operator::azure::secret::Secret;
    let key = "c2NhbnRlc3Qta2V5LXNjYW50ZXN0LWtleS0xMjM0NTY=".to_string();
    let token = dps_operator::azure::sas::generate_token(b"raw key", "dps.example.net", Some("owner"), 1_900_000_000);
    let cs = format!("HostName=h;SharedAccessKeyName=p;SharedAccessKey={key}");
    let parsed: dps_operator::azure::ConnectionString = cs.parse().expect("parses");
    let leaky = format!(
        "INFO reconciled key={key}\nDEBUG sending Authorization: {}\nWARN bad string {cs}\nDEBUG sig={}\n",
        token.expose(),
        dps_operator::azure::sas::url_encode(&dps_operator::azure::sas::signature(b"k", "r", 1)),
    );
    let hits = secret_hits("self-check", &leaky, std::slice::from_ref(&key));
    let lines: Vec<usize> = hits.iter().map(|h| h.line).collect();
    assert_eq!(lines, [1, 2, 2, 3, 3, 4], "every leak is found, each by each shape it has: {hits:#?}");
    let redacted =
        format!("INFO reconciled key={}\nDEBUG Authorization: {token}\nWARN bad string {parsed}\n", Secret::new(&*key));
    assert_eq!(secret_hits("self-check", &redacted, &[key]), [], "redacted output is clean");
}
