//! A catalogue of bad inputs: manifests, Secrets, certificates and backend answers. Each reaches the reason
//! written in the table on the resource's Ready condition and a Warning event with that reason, or, where
//! the CRD schema already forbids it, a 422 from the apiserver; the operator never crashes, and nothing it
//! writes carries a key. Prints "N tried, N handled".

use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use dps_operator::api::{DeviceDeprovision, EnrollmentGroup, IndividualEnrollment, ProvisioningService};
use dps_operator::azure::Credential;

use crate::support::certs::{TestCa, Validity};
use crate::support::hostile_backend::HostileBackend;
use crate::support::manifests;
use crate::support::operator::{Bed, SERVICE};

const GOOD_KEY: &str = "Q0FUQUxPR1VFLWdvb2Qta2V5LTAwMDAwMDAwMDAwMDAwMDA=";
const CR: &str = "dps.iot-operator.dev/v1alpha1";

/// One bad input: what to create, which resource to watch, and the reason it must end with.
struct Case {
    label: &'static str,
    kind: &'static str,
    name: String,
    /// A resource that must be Ready before `objects` are created (the first of two claims).
    first: Option<Value>,
    /// Created in order: Secrets and ConfigMaps, then the resource.
    objects: Vec<Value>,
    /// Applied once the resource is Ready (a change of an immutable field).
    patch: Option<Value>,
    reason: &'static str,
    /// The Warning event's reason: the condition's, except for DeviceDeprovisions, whose events name the
    /// phase entered (`Failed`) and whose message carries the cause.
    event: &'static str,
}

fn case(label: &'static str, kind: &'static str, name: &str, objects: Vec<Value>, reason: &'static str) -> Case {
    let event = if kind == "DeviceDeprovision" { "Failed" } else { reason };
    Case { label, kind, name: name.to_string(), first: None, objects, patch: None, reason, event }
}

fn resource(kind: &str, name: &str, spec: Value) -> Value {
    json!({ "apiVersion": CR, "kind": kind, "metadata": { "name": name }, "spec": spec })
}

fn secret(name: &str, data: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name }, "stringData": data })
}

fn config_map(name: &str, data: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name }, "data": data })
}

fn with_service(mut spec: Value) -> Value {
    if spec.get("provisioningServiceRef").is_none() {
        spec["provisioningServiceRef"] = json!({ "name": SERVICE });
    }
    spec
}

fn ienr(name: &str, spec: Value) -> Value {
    resource("IndividualEnrollment", name, with_service(spec))
}

fn key_ienr(name: &str, secret_name: &str) -> Value {
    ienr(name, json!({ "attestation": { "symmetricKey": { "secretName": secret_name } } }))
}

fn x509_ienr(name: &str, pem: &str) -> Value {
    ienr(name, json!({ "attestation": { "x509": { "clientCertificates": { "primary": { "pem": pem } } } } }))
}

fn group(name: &str, attestation: Value) -> Value {
    resource("EnrollmentGroup", name, with_service(json!({ "attestation": attestation })))
}

fn deprov(name: &str, extra: Value) -> Value {
    let mut spec = with_service(json!({ "registrationId": name }));
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        spec[k] = v;
    }
    resource("DeviceDeprovision", name, spec)
}

/// The bed's ProvisioningService, renamed, with its own credentials Secret, changed by `edit`.
fn service(bed: &Bed, name: &str, edit: impl FnOnce(&mut Value, &mut Value)) -> Vec<Value> {
    let (secret, service) =
        dps_operator::engine_connection::manifests(&bed.engine.info, name).expect("engine-connection manifests");
    let mut secret = serde_json::to_value(secret).expect("JSON");
    let mut service = serde_json::to_value(service).expect("JSON");
    edit(&mut secret, &mut service);
    vec![secret, service]
}

/// A ProvisioningService whose DPS endpoint (and only hub) is a backend giving one fixed answer.
async fn behind(bed: &Bed, name: &str, status: &str, headers: &[&str], body: &str) -> Vec<Value> {
    let backend = HostileBackend::start(status, headers, body).await;
    service(bed, name, |_, service| {
        service["spec"]["endpoint"] = json!(backend.endpoint);
        service["spec"]["caBundle"] = json!({ "pem": backend.ca_pem });
        service["spec"]["hubs"] = json!([]);
    })
}

async fn catalogue(bed: &Bed) -> Vec<Case> {
    let ca = TestCa::root("catalogue-root");
    let good_leaf = |id: &str| ca.leaf(id).cert_pem;
    let pem_body = |pem: &str| pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>();
    let leaf_pem = good_leaf("bad-trunc");
    let truncated = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        &pem_body(&leaf_pem)[..pem_body(&leaf_pem).len() / 2]
    );
    let key_pem = ca.leaf("bad-key").key_pem;
    let short_key = "c2hvcnQta2V5"; // 9 bytes
    let long_key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 100]);
    let expired_sas = format!(
        "HostName={};SharedAccessKeyName=provisioningserviceowner;SharedAccessSignature={}",
        bed.engine.info.provisioning_service.connection_string.host_name,
        dps_operator::engine::sas::make_token(
            &bed.engine.info.provisioning_service.connection_string.host_name,
            GOOD_KEY,
            Some("provisioningserviceowner"),
            1
        )
    );
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        let port = listener.local_addr().expect("bound").port();
        drop(listener);
        port
    };

    let mut cases = vec![
        // IndividualEnrollment: references, keys, certificates, identifiers.
        case(
            "enrollment naming an unknown ProvisioningService",
            "IndividualEnrollment",
            "bad-ps",
            vec![ienr(
                "bad-ps",
                json!({ "provisioningServiceRef": { "name": "nowhere" },
                        "attestation": { "symmetricKey": { "secretName": "x", "generate": true } } }),
            )],
            "ProvisioningServiceNotFound",
        ),
        case(
            "key Secret missing",
            "IndividualEnrollment",
            "bad-nosecret",
            vec![key_ienr("bad-nosecret", "absent")],
            "SecretNotFound",
        ),
        case(
            "key Secret without primaryKey",
            "IndividualEnrollment",
            "bad-nokey",
            vec![secret("bad-nokey-s", json!({ "secondaryKey": GOOD_KEY })), key_ienr("bad-nokey", "bad-nokey-s")],
            "SecretKeyMissing",
        ),
        case(
            "primaryKey not base64",
            "IndividualEnrollment",
            "bad-b64",
            vec![
                secret("bad-b64-s", json!({ "primaryKey": "not base64 at all!", "secondaryKey": GOOD_KEY })),
                key_ienr("bad-b64", "bad-b64-s"),
            ],
            "InvalidSymmetricKey",
        ),
        case(
            "primaryKey of 9 bytes",
            "IndividualEnrollment",
            "bad-short",
            vec![
                secret("bad-short-s", json!({ "primaryKey": short_key, "secondaryKey": GOOD_KEY })),
                key_ienr("bad-short", "bad-short-s"),
            ],
            "InvalidSymmetricKey",
        ),
        case(
            "primaryKey of 100 bytes",
            "IndividualEnrollment",
            "bad-long",
            vec![
                secret("bad-long-s", json!({ "primaryKey": long_key, "secondaryKey": GOOD_KEY })),
                key_ienr("bad-long", "bad-long-s"),
            ],
            "InvalidSymmetricKey",
        ),
        case(
            "secondaryKey not base64",
            "IndividualEnrollment",
            "bad-second",
            vec![
                secret("bad-second-s", json!({ "primaryKey": GOOD_KEY, "secondaryKey": "%%%" })),
                key_ienr("bad-second", "bad-second-s"),
            ],
            "InvalidSymmetricKey",
        ),
        case(
            "PEM markers around garbage",
            "IndividualEnrollment",
            "bad-pem",
            vec![x509_ienr("bad-pem", "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")],
            "InvalidCertificate",
        ),
        case(
            "text that is neither PEM nor base64",
            "IndividualEnrollment",
            "bad-text",
            vec![x509_ienr("bad-text", "hello, I am a certificate")],
            "InvalidCertificate",
        ),
        case(
            "a private key where the certificate goes",
            "IndividualEnrollment",
            "bad-key",
            vec![x509_ienr("bad-key", &key_pem)],
            "InvalidCertificate",
        ),
        case(
            "a truncated certificate",
            "IndividualEnrollment",
            "bad-trunc",
            vec![x509_ienr("bad-trunc", &truncated)],
            "InvalidCertificate",
        ),
        case(
            "an expired certificate",
            "IndividualEnrollment",
            "bad-expired",
            vec![x509_ienr("bad-expired", &ca.leaf_with("bad-expired", Validity::Expired).cert_pem)],
            "CertificateExpired",
        ),
        case(
            "a certificate not valid yet",
            "IndividualEnrollment",
            "bad-future",
            vec![x509_ienr("bad-future", &ca.leaf_with("bad-future", Validity::NotYetValid).cert_pem)],
            "CertificateExpired",
        ),
        case(
            "a certificate for another registration ID",
            "IndividualEnrollment",
            "bad-cn",
            vec![x509_ienr("bad-cn", &good_leaf("someone-else"))],
            "CertificateCommonNameMismatch",
        ),
        case(
            "certificate ConfigMap missing",
            "IndividualEnrollment",
            "bad-nocm",
            vec![ienr(
                "bad-nocm",
                json!({ "attestation": { "x509": { "clientCertificates": { "primary": {
                    "configMapRef": { "name": "absent", "key": "tls.crt" } } } } } }),
            )],
            "ConfigMapNotFound",
        ),
        case(
            "certificate ConfigMap without the key",
            "IndividualEnrollment",
            "bad-cmkey",
            vec![
                config_map("bad-cmkey-cm", json!({ "other": "x" })),
                ienr(
                    "bad-cmkey",
                    json!({ "attestation": { "x509": { "clientCertificates": { "primary": {
                        "configMapRef": { "name": "bad-cmkey-cm", "key": "tls.crt" } } } } } }),
                ),
            ],
            "ConfigMapKeyMissing",
        ),
        case(
            "certificate Secret missing",
            "IndividualEnrollment",
            "bad-nocert",
            vec![ienr(
                "bad-nocert",
                json!({ "attestation": { "x509": { "clientCertificates": { "primary": {
                    "secretRef": { "name": "absent", "key": "tls.crt" } } } } } }),
            )],
            "SecretNotFound",
        ),
        case(
            "certificate Secret without the key",
            "IndividualEnrollment",
            "bad-certkey",
            vec![
                secret("bad-certkey-s", json!({ "tls.key": "x" })),
                ienr(
                    "bad-certkey",
                    json!({ "attestation": { "x509": { "clientCertificates": { "primary": {
                        "secretRef": { "name": "bad-certkey-s", "key": "tls.crt" } } } } } }),
                ),
            ],
            "SecretKeyMissing",
        ),
        case(
            "an X.509 registration ID of 65 characters",
            "IndividualEnrollment",
            "bad-long-id",
            vec![{
                let mut e = x509_ienr("bad-long-id", &good_leaf("bad-long-id"));
                e["spec"]["registrationId"] = json!(format!("bad-{}", "x".repeat(61)));
                e
            }],
            "InvalidRegistrationId",
        ),
        Case {
            first: Some(ienr(
                "bad-first",
                json!({ "registrationId": "bad-shared",
                        "attestation": { "symmetricKey": { "secretName": "bad-first-k", "generate": true } } }),
            )),
            ..case(
                "a second enrollment for the same registration ID",
                "IndividualEnrollment",
                "bad-second-claim",
                vec![ienr(
                    "bad-second-claim",
                    json!({ "registrationId": "bad-shared",
                            "attestation": { "symmetricKey": { "secretName": "bad-second-k", "generate": true } } }),
                )],
                "RegistrationIdConflict",
            )
        },
        Case {
            patch: Some(json!({ "spec": { "registrationId": "bad-moved-2" } })),
            ..case(
                "a changed registration ID",
                "IndividualEnrollment",
                "bad-moved",
                vec![ienr(
                    "bad-moved",
                    json!({ "attestation": { "symmetricKey": { "secretName": "bad-moved-k", "generate": true } } }),
                )],
                "ImmutableFieldChanged",
            )
        },
        case(
            "an entry made outside Kubernetes",
            "IndividualEnrollment",
            "bad-foreign",
            vec![ienr(
                "bad-foreign",
                json!({ "attestation": { "symmetricKey": { "secretName": "bad-foreign-k", "generate": true } } }),
            )],
            "Conflict",
        ),
        case(
            "a TPM endorsement key of 65 characters, not base64",
            "IndividualEnrollment",
            "bad-tpm",
            vec![ienr("bad-tpm", json!({ "attestation": { "tpm": { "endorsementKey": "A".repeat(65) } } }))],
            "RequestRejected",
        ),
        // EnrollmentGroup.
        case(
            "group key Secret missing",
            "EnrollmentGroup",
            "bad-g-nosecret",
            vec![group("bad-g-nosecret", json!({ "symmetricKey": { "secretName": "absent" } }))],
            "SecretNotFound",
        ),
        case(
            "group key Secret without primaryKey",
            "EnrollmentGroup",
            "bad-g-nokey",
            vec![
                secret("bad-g-nokey-s", json!({ "secondaryKey": GOOD_KEY })),
                group("bad-g-nokey", json!({ "symmetricKey": { "secretName": "bad-g-nokey-s" } })),
            ],
            "SecretKeyMissing",
        ),
        case(
            "a device certificate as a group's signing certificate",
            "EnrollmentGroup",
            "bad-g-leaf",
            vec![group(
                "bad-g-leaf",
                json!({ "x509": { "signingCertificates": { "primary": { "pem": good_leaf("a-leaf") } } } }),
            )],
            "CertificateNotCA",
        ),
        case(
            "an expired signing certificate",
            "EnrollmentGroup",
            "bad-g-expired",
            vec![group(
                "bad-g-expired",
                json!({ "x509": { "signingCertificates": { "primary": {
                    "pem": TestCa::root_with("old-root", Validity::Expired).cert_pem() } } } }),
            )],
            "CertificateExpired",
        ),
        case(
            "a signing certificate that is not PEM",
            "EnrollmentGroup",
            "bad-g-pem",
            vec![group("bad-g-pem", json!({ "x509": { "signingCertificates": { "primary": { "pem": "garbage" } } } }))],
            "InvalidCertificate",
        ),
        Case {
            first: Some(resource(
                "EnrollmentGroup",
                "bad-g-first",
                with_service(json!({ "enrollmentGroupId": "bad-g-shared",
                    "attestation": { "symmetricKey": { "secretName": "bad-g-first-k", "generate": true } } })),
            )),
            ..case(
                "a second group for the same group ID",
                "EnrollmentGroup",
                "bad-g-second",
                vec![resource(
                    "EnrollmentGroup",
                    "bad-g-second",
                    with_service(json!({ "enrollmentGroupId": "bad-g-shared",
                        "attestation": { "symmetricKey": { "secretName": "bad-g-second-k", "generate": true } } })),
                )],
                "EnrollmentGroupIdConflict",
            )
        },
        Case {
            patch: Some(json!({ "spec": { "enrollmentGroupId": "bad-g-moved-2" } })),
            ..case(
                "a changed group ID",
                "EnrollmentGroup",
                "bad-g-moved",
                vec![group(
                    "bad-g-moved",
                    json!({ "symmetricKey": { "secretName": "bad-g-moved-k", "generate": true } }),
                )],
                "ImmutableFieldChanged",
            )
        },
        // DeviceDeprovision.
        case(
            "a leaf certificate for another device",
            "DeviceDeprovision",
            "bad-d-cn",
            vec![deprov("bad-d-cn", json!({ "leafCertificate": { "pem": good_leaf("another") } }))],
            "CertificateCommonNameMismatch",
        ),
        case(
            "a CA certificate as the leaf",
            "DeviceDeprovision",
            "bad-d-ca",
            vec![deprov("bad-d-ca", json!({ "leafCertificate": { "pem": TestCa::root("bad-d-ca").cert_pem() } }))],
            "CertificateIsCa",
        ),
        case(
            "a leaf certificate that is not PEM",
            "DeviceDeprovision",
            "bad-d-pem",
            vec![deprov(
                "bad-d-pem",
                json!({ "leafCertificate": { "pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----" } }),
            )],
            "InvalidCertificate",
        ),
        Case {
            patch: Some(json!({ "spec": { "registrationId": "bad-d-moved-2" } })),
            ..case(
                "a changed registration ID",
                "DeviceDeprovision",
                "bad-d-moved",
                vec![deprov("bad-d-moved", json!({}))],
                "ImmutableFieldChanged",
            )
        },
        // ProvisioningService: credentials and what the backend answers.
        case(
            "connection string Secret missing",
            "ProvisioningService",
            "bad-s-nosecret",
            service(bed, "bad-s-nosecret", |_, s| s["spec"]["connectionStringSecretRef"]["name"] = json!("absent"))
                .split_off(1),
            "SecretNotFound",
        ),
        case(
            "a connection string that is not one",
            "ProvisioningService",
            "bad-s-garbage",
            service(bed, "bad-s-garbage", |secret, _| {
                secret["stringData"]["dps"] = json!("this is not a connection string")
            }),
            "BadConnectionString",
        ),
        case(
            "a connection string whose key is not base64",
            "ProvisioningService",
            "bad-s-keyb64",
            {
                let host = bed.engine.info.provisioning_service.connection_string.host_name.clone();
                service(bed, "bad-s-keyb64", move |secret, _| {
                    secret["stringData"]["dps"] = json!(format!(
                        "HostName={host};SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=***notbase64***"
                    ))
                })
            },
            "BadConnectionString",
        ),
        case(
            "a connection string with a wrong key",
            "ProvisioningService",
            "bad-s-wrongkey",
            {
                let mut cs = bed.engine.info.provisioning_service.connection_string.clone();
                cs.credential = Credential::Key(dps_operator::azure::Secret::new(GOOD_KEY));
                let wrong = cs.to_secret_string().expose().to_string();
                service(bed, "bad-s-wrongkey", move |secret, _| secret["stringData"]["dps"] = json!(wrong))
            },
            "CredentialsRejected",
        ),
        case(
            "a connection string with an expired signature",
            "ProvisioningService",
            "bad-s-expired",
            service(bed, "bad-s-expired", move |secret, _| secret["stringData"]["dps"] = json!(expired_sas)),
            "CredentialsRejected",
        ),
        case(
            "an endpoint nobody listens on",
            "ProvisioningService",
            "bad-s-closed",
            service(bed, "bad-s-closed", move |_, s| {
                s["spec"]["endpoint"] = json!(format!("https://127.0.0.1:{closed_port}"));
                s["spec"]["hubs"] = json!([]);
            }),
            "Unreachable",
        ),
        case(
            "a CA bundle that is not a certificate",
            "ProvisioningService",
            "bad-s-ca",
            service(bed, "bad-s-ca", |_, s| s["spec"]["caBundle"] = json!({ "pem": "not a CA bundle" })),
            "InvalidCertificate",
        ),
    ];
    let answers: [(&'static str, &str, &[&str], &str, &'static str); 9] = [
        (
            "500 with an HTML body",
            "500 Internal Server Error",
            &["Content-Type: text/html"],
            "<html><body>oops</body></html>",
            "Transient",
        ),
        ("502 with no body", "502 Bad Gateway", &[], "", "Transient"),
        ("400 with a text body", "400 Bad Request", &["Content-Type: text/plain"], "bad request", "RequestRejected"),
        ("401 with a text body", "401 Unauthorized", &["Content-Type: text/plain"], "go away", "CredentialsRejected"),
        (
            "403 with an HTML body",
            "403 Forbidden",
            &["Content-Type: text/html"],
            "<h1>Forbidden</h1>",
            "CredentialsRejected",
        ),
        (
            "404 with an HTML body",
            "404 Not Found",
            &["Content-Type: text/html"],
            "<h1>Not Found</h1>",
            "EndpointNotRecognized",
        ),
        ("429 with a text body", "429 Too Many Requests", &["Retry-After: 1"], "slow down", "Throttled"),
        (
            "200 with a body that is not JSON",
            "200 OK",
            &["Content-Type: application/json"],
            "this is not JSON",
            "Decode",
        ),
        (
            "200 with truncated JSON",
            "200 OK",
            &["Content-Type: application/json"],
            "{\"registrationId\": \"x",
            "Decode",
        ),
    ];
    for (n, (label, status, headers, body, reason)) in answers.into_iter().enumerate() {
        let name = format!("bad-answer-{n}");
        cases.push(case(label, "ProvisioningService", &name, behind(bed, &name, status, headers, body).await, reason));
    }
    cases
}

/// The inputs the CRD schema refuses (the apiserver answers 422 and nothing reaches the operator).
fn refused_by_schema() -> Vec<(&'static str, Value)> {
    vec![
        (
            "a registration ID with a space and a '!'",
            ienr(
                "bad-schema-1",
                json!({ "registrationId": "bad id!",
            "attestation": { "symmetricKey": { "secretName": "k", "generate": true } } }),
            ),
        ),
        (
            "a device ID with '#'",
            ienr(
                "bad-schema-2",
                json!({ "deviceId": "dev#1",
            "attestation": { "symmetricKey": { "secretName": "k", "generate": true } } }),
            ),
        ),
        (
            "two attestation kinds at once",
            ienr(
                "bad-schema-3",
                json!({ "attestation": {
            "symmetricKey": { "secretName": "k" }, "tpm": { "endorsementKey": "AAAA" } } }),
            ),
        ),
        (
            "an http:// endpoint",
            resource(
                "ProvisioningService",
                "bad-schema-4",
                json!({
            "connectionStringSecretRef": { "name": "s", "key": "k" }, "endpoint": "http://dps.example.net" }),
            ),
        ),
        ("an empty registration ID", deprov("bad-schema-5", json!({ "registrationId": "" }))),
        ("an unknown device action", deprov("bad-schema-6", json!({ "device": "Explode" }))),
        (
            "a TPM endorsement key of 11 characters",
            ienr(
                "bad-schema-7",
                json!({
            "attestation": { "tpm": { "endorsementKey": "not base64!" } } }),
            ),
        ),
    ]
}

async fn ready_condition(bed: &Bed, kind: &str, name: &str) -> Option<(String, String)> {
    let value = match kind {
        "IndividualEnrollment" => serde_json::to_value(bed.api::<IndividualEnrollment>().get_opt(name).await.ok()??),
        "EnrollmentGroup" => serde_json::to_value(bed.api::<EnrollmentGroup>().get_opt(name).await.ok()??),
        "DeviceDeprovision" => serde_json::to_value(bed.api::<DeviceDeprovision>().get_opt(name).await.ok()??),
        _ => serde_json::to_value(bed.api::<ProvisioningService>().get_opt(name).await.ok()??),
    }
    .ok()?;
    let generation = value.pointer("/metadata/generation").and_then(Value::as_i64);
    if value.pointer("/status/observedGeneration").and_then(Value::as_i64) != generation {
        return None;
    }
    let conditions = value.pointer("/status/conditions")?.as_array()?.clone();
    let ready = conditions.into_iter().find(|c| c["type"] == "Ready")?;
    Some((ready["status"].as_str()?.to_string(), ready["reason"].as_str()?.to_string()))
}

async fn warning_reasons(bed: &Bed, name: &str) -> Vec<String> {
    let events = bed.api::<Event>().list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    events
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.reason)
        .collect()
}

async fn create(bed: &Bed, object: &Value) -> Result<(), String> {
    let object: DynamicObject = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    manifests::create(&bed.client, &bed.ns.name, &object).await.map(|_| ()).map_err(|e| e.to_string())
}

async fn wait_for(bed: &Bed, kind: &str, name: &str, want: impl Fn(&str, &str) -> bool) -> Option<(String, String)> {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut last = None;
    while tokio::time::Instant::now() < give_up {
        last = ready_condition(bed, kind, name).await.or(last);
        if let Some((status, reason)) = &last
            && want(status, reason)
        {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    last
}

/// Runs one case; `Err` says what happened instead.
async fn run(bed: &Bed, case: &Case) -> Result<(), String> {
    if let Some(first) = &case.first {
        create(bed, first).await?;
        let name = first["metadata"]["name"].as_str().unwrap_or_default();
        wait_for(bed, case.kind, name, |s, _| s == "True")
            .await
            .filter(|(s, _)| s == "True")
            .ok_or("first not Ready")?;
    }
    for object in &case.objects {
        create(bed, object).await?;
    }
    if let Some(patch) = &case.patch {
        wait_for(bed, case.kind, &case.name, |s, _| s == "True")
            .await
            .filter(|(s, _)| s == "True")
            .ok_or("not Ready")?;
        patch_resource(bed, case.kind, &case.name, patch).await?;
    }
    let seen = wait_for(bed, case.kind, &case.name, |s, r| s == "False" && r == case.reason).await;
    if seen.as_ref().is_none_or(|(s, r)| s != "False" || r != case.reason) {
        return Err(format!("Ready ended {seen:?}"));
    }
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reasons = warning_reasons(bed, &case.name).await;
        if reasons.iter().any(|r| r == case.event) {
            return Ok(());
        }
        if tokio::time::Instant::now() > give_up {
            return Err(format!("no Warning event {}; events: {reasons:?}", case.event));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn patch_resource(bed: &Bed, kind: &str, name: &str, patch: &Value) -> Result<(), String> {
    let (params, patch) = (PatchParams::default(), Patch::Merge(patch));
    let result = match kind {
        "IndividualEnrollment" => bed.api::<IndividualEnrollment>().patch(name, &params, &patch).await.map(|_| ()),
        "EnrollmentGroup" => bed.api::<EnrollmentGroup>().patch(name, &params, &patch).await.map(|_| ()),
        _ => bed.api::<DeviceDeprovision>().patch(name, &params, &patch).await.map(|_| ()),
    };
    result.map_err(|e| e.to_string())
}

#[tokio::test]
async fn every_bad_input_in_the_catalogue_ends_in_its_reason_and_event_without_a_crash_or_a_leaked_key() {
    let mut bed = Bed::start("bad-inputs").await;
    let foreign = dps_operator::azure::wire::IndividualEnrollment {
        registration_id: "bad-foreign".into(),
        attestation: dps_operator::azure::wire::AttestationMechanism::symmetric_key(None, None),
        ..Default::default()
    };
    bed.engine.dps().create_enrollment(&foreign).await.expect("an entry made outside Kubernetes");
    let cases = catalogue(&bed).await;
    let outcomes = join_all(cases.iter().map(|c| run(&bed, c))).await;
    let mut failures = Vec::new();
    for (case, outcome) in cases.iter().zip(&outcomes) {
        let word = if outcome.is_ok() { "handled" } else { "NOT handled" };
        println!("[bad-inputs] {} {} ({}): {} -> {word}", case.kind, case.name, case.label, case.reason);
        if let Err(e) = outcome {
            failures.push(format!("{} {} ({}): wanted {}, {e}", case.kind, case.name, case.label, case.reason));
        }
    }
    let schema = refused_by_schema();
    for (label, object) in &schema {
        let refused = create(&bed, object).await;
        let word = if refused.as_ref().is_err_and(|e| e.contains("422") || e.contains("Invalid")) {
            "handled"
        } else {
            failures.push(format!("{label}: the apiserver did not refuse it ({refused:?})"));
            "NOT handled"
        };
        println!("[bad-inputs] schema ({label}): 422 from the apiserver -> {word}");
    }
    let tried = cases.len() + schema.len();
    crate::support::figures::report(format!(
        "[bad-inputs] {tried} tried, {} handled ({} by a condition and a Warning event, {} by the CRD schema)",
        tried - failures.len(),
        cases.len(),
        schema.len()
    ));
    assert!(failures.is_empty(), "bad inputs not handled:\n{}", failures.join("\n"));
    assert_eq!(bed.operator.exit_code(), None, "the operator is still running");
    assert!(!bed.operator.log().contains("panicked"), "the operator log shows a panic");
    crate::hygiene::assert_clean("bad inputs", &bed, &[GOOD_KEY]).await;
    bed.ns.delete().await;
}
