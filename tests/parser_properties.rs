//! Property tests over every parser that reads outside input: connection strings, SAS tokens (client and
//! engine side), PEM/DER certificates, the engine's query strings, headers, paths and request bodies, and the
//! client's reading of backend answers. Each must return an error instead of panicking on any input, and
//! round-trip where a writer exists. Case counts are small so CI stays fast; `PROPTEST_CASES=100000` runs
//! longer, and `fuzz/` holds cargo-fuzz targets over the same functions for a nightly toolchain.

use std::str::FromStr;

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;

use dps_operator::azure::connection_string::{ConnectionString, Credential};
use dps_operator::azure::error::AzureError;
use dps_operator::azure::sas as client_sas;
use dps_operator::azure::secret::Secret;
use dps_operator::controller::certificate::Certificate;
use dps_operator::engine::model::{Device, Entry};
use dps_operator::engine::sas::{SasToken, make_token};
use dps_operator::engine::{certs, dps_service, hub_registry, util};

const DEVICE_CERT: &str = include_str!("../src/azure/testdata/device-cert.pem");

fn config() -> ProptestConfig {
    // CI runs a few hundred cases per property; the environment variable raises it for long runs.
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn device_der() -> Vec<u8> {
    certs::decode_certificate(DEVICE_CERT).expect("the test certificate decodes")
}

/// Strings made of the characters the parsers split on, so the interesting paths are reached often.
fn structured_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(";".to_string()),
            Just("=".to_string()),
            Just("&".to_string()),
            Just("%".to_string()),
            Just(" ".to_string()),
            Just("HostName".to_string()),
            Just("SharedAccessKey".to_string()),
            Just("SharedAccessKeyName".to_string()),
            Just("SharedAccessSignature".to_string()),
            Just("DeviceId".to_string()),
            Just("sr".to_string()),
            Just("sig".to_string()),
            Just("se".to_string()),
            Just("skn".to_string()),
            "[A-Za-z0-9+/=]{0,12}",
            "\\PC{0,4}",
            "%[0-9a-fA-F]{0,2}",
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

fn base64_key() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<u8>(), 16..=64).prop_map(|bytes| STANDARD.encode(bytes))
}

fn host_name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,20}(\\.[a-z0-9-]{1,10}){0,3}"
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9_.-]{0,20}"
}

/// Arbitrary JSON, biased towards the field names of the engine's bodies.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let field = prop_oneof![
        Just("registrationId"),
        Just("enrollmentGroupId"),
        Just("deviceId"),
        Just("provisioningStatus"),
        Just("allocationPolicy"),
        Just("attestation"),
        Just("type"),
        Just("symmetricKey"),
        Just("primaryKey"),
        Just("secondaryKey"),
        Just("x509"),
        Just("clientCertificates"),
        Just("signingCertificates"),
        Just("caReferences"),
        Just("primary"),
        Just("secondary"),
        Just("certificate"),
        Just("tpm"),
        Just("endorsementKey"),
        Just("capabilities"),
        Just("iotEdge"),
        Just("iotHubs"),
        Just("status"),
        Just("statusReason"),
        Just("authentication"),
        Just("x509Thumbprint"),
        Just("primaryThumbprint"),
        Just("etag"),
        Just("initialTwin"),
        Just("reprovisionPolicy"),
        Just("customAllocationDefinition"),
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        prop_oneof![
            Just("enabled".to_string()),
            Just("disabled".to_string()),
            Just("x509".to_string()),
            Just("symmetricKey".to_string()),
            Just("sas".to_string()),
            Just("selfSigned".to_string()),
            Just("certificateAuthority".to_string()),
            Just("hashed".to_string()),
            Just("static".to_string()),
            Just(DEVICE_CERT.to_string()),
            base64_key(),
            "\\PC{0,20}",
        ]
        .prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::vec((field.clone(), inner), 0..6).prop_map(|pairs| {
                serde_json::Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn connection_string_parsing_never_panics_and_never_echoes_a_key(text in structured_text()) {
        if let Err(err) = ConnectionString::from_str(&text) {
            // The error names a field or position, never a value: no base64 run of the input comes back.
            let shown = format!("{err} {err:?}");
            let field_names = "HostName SharedAccessKeyName SharedAccessKey SharedAccessSignature DeviceId";
            for part in text.split(';').filter_map(|p| p.split_once('=')).map(|(_, v)| v.trim()) {
                if part.len() >= 8 && !field_names.contains(part) {
                    prop_assert!(!shown.contains(part), "{shown:?} echoes {part:?}");
                }
            }
        }
    }

    #[test]
    fn connection_strings_round_trip(
        host in host_name(),
        policy in proptest::option::of(name()),
        device in proptest::option::of(name()),
        key in base64_key(),
    ) {
        // A key needs a policy or a device to sign for.
        let policy = if device.is_none() { policy.or_else(|| Some("owner".to_string())) } else { policy };
        let original = ConnectionString {
            host_name: host,
            policy,
            device_id: device,
            credential: Credential::Key(Secret::new(key.clone())),
        };
        let text = original.to_secret_string();
        let back: ConnectionString = text.expose().parse().expect("a written connection string parses");
        prop_assert_eq!(&back, &original);
        prop_assert!(!format!("{back} {back:?}").contains(&key), "the key shows");
        prop_assert_eq!(back.key_bytes(), STANDARD.decode(&key).ok());
    }

    #[test]
    fn client_sas_parsing_never_panics(text in structured_text(), raw in "\\PC{0,80}") {
        let _ = client_sas::parse_token(&format!("SharedAccessSignature {text}"));
        let _ = client_sas::parse_token(&raw);
        let _ = client_sas::decode_key(&raw);
        let _ = client_sas::derive_device_key(&raw, &text);
    }

    #[test]
    fn client_sas_tokens_round_trip_and_verify(
        resource in "[A-Za-z0-9./_:-]{1,60}",
        policy in proptest::option::of("[A-Za-z0-9 _.-]{1,20}"),
        expiry in 0u64..=i64::MAX as u64,
        key in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let token = client_sas::generate_token(&key, &resource, policy.as_deref(), expiry);
        let parsed = client_sas::parse_token(token.expose()).expect("a generated token parses");
        prop_assert_eq!(&parsed.resource, &resource.to_lowercase());
        prop_assert_eq!(parsed.expiry, expiry);
        prop_assert_eq!(parsed.policy.as_deref(), policy.as_deref());
        prop_assert_eq!(&parsed.signature, &client_sas::sign_encoded(&key, &parsed.encoded_resource, expiry));
        prop_assert_eq!(&parsed.signature, &client_sas::signature(&key, &resource, expiry));
    }

    #[test]
    fn url_encoding_round_trips(value in "\\PC{0,40}") {
        let encoded = client_sas::url_encode(&value);
        prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
        prop_assert_eq!(util::pct_decode(&encoded), value);
    }

    #[test]
    fn engine_sas_parsing_never_panics(text in structured_text(), raw in "\\PC{0,80}", now in any::<i64>()) {
        for header in [format!("SharedAccessSignature {text}"), raw.clone()] {
            if let Ok(token) = SasToken::parse(&header) {
                let _ = token.check_scope(&raw, Some("registration"), now);
                let _ = token.verify(&text, None, &[&raw, "AAAA"], now);
                prop_assert!(!token.signed_with(&raw) || util::b64_decode(&raw).is_some());
            }
        }
    }

    #[test]
    fn engine_sas_tokens_made_by_the_client_verify_only_with_their_key(
        resource in "[A-Za-z0-9./_:-]{1,60}",
        key in base64_key(),
        other in base64_key(),
        lifetime in 1i64..1_000_000,
    ) {
        let now = 1_700_000_000;
        let token = make_token(&resource, &key, Some("registration"), now + lifetime);
        let parsed = SasToken::parse(&token).expect("parses");
        prop_assert_eq!(parsed.verify(&resource, Some("registration"), &[&key], now), Ok(()));
        prop_assert_eq!(parsed.expiry, now + lifetime);
        if other != key {
            prop_assert!(parsed.verify(&resource, Some("registration"), &[&other], now).is_err());
        }
        prop_assert!(parsed.verify(&resource, Some("registration"), &[&key], now + lifetime).is_err());
    }

    #[test]
    fn certificate_text_never_panics(text in "\\PC{0,200}", body in "[A-Za-z0-9+/=\\n]{0,300}") {
        let pem = format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
        for input in [&text, &body, &pem] {
            if let Ok(der) = certs::decode_certificate(input) {
                let _ = certs::info(&der);
            }
            let _ = Certificate::parse(input, "the fuzzed certificate");
        }
    }

    #[test]
    fn damaged_der_never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
                                cut in any::<usize>()) {
        let good = device_der();
        let mut der = good.clone();
        for (at, value) in flips {
            let at = at % der.len();
            der[at] = value;
        }
        der.truncate(cut % (der.len() + 1));
        let _ = certs::parse(&der).map(|c| c.subject().to_string());
        let _ = certs::info(&der);
        let _ = certs::common_name(&der);
        let _ = certs::check_validity(&der, 1_800_000_000);
        let _ = certs::check_issuer(&der, 1_800_000_000);
        let _ = certs::signed_by(&der, &good);
        let _ = certs::signed_by(&good, &der);
        let _ = certs::same_public_key(&der, &good);
        let _ = certs::thumbprint_matches(&der, &certs::sha1_thumbprint(&good));
        let _ = Certificate::parse(&STANDARD.encode(&der), "the damaged certificate");
        let _ = certs::decode_certificate(&STANDARD.encode(&der));
    }

    #[test]
    fn certificates_round_trip_through_pem_and_base64(wrap in 1usize..120) {
        let der = device_der();
        let b64 = STANDARD.encode(&der);
        let wrapped: Vec<String> =
            b64.as_bytes().chunks(wrap).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        prop_assert_eq!(certs::decode_certificate(&wrapped.join("\n")).expect("base64 DER"), der.clone());
        let pem = format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----", wrapped.join("\n"));
        prop_assert_eq!(certs::decode_certificate(&pem).expect("PEM"), der.clone());
        let parsed = Certificate::parse(&pem, "the certificate").expect("parses");
        prop_assert_eq!(parsed.der, der);
        prop_assert_eq!(parsed.common_name.as_deref(), Some("test-device-1"));
    }

    #[test]
    fn query_strings_and_paths_never_panic(query in structured_text(), path in "(/[A-Za-z0-9%._~:-]{0,12}){0,5}/?") {
        let _ = util::form_pairs(&query);
        let _ = util::pct_decode(&query);
        if let Ok(uri) = Uri::from_str(&format!("{}?{}", if path.is_empty() { "/" } else { &path }, query)) {
            let _ = util::query_param(&uri, "api-version");
            let _ = util::require_api_version(&uri);
            if let Some(normal) = util::normalize_path(&uri) {
                // Only the path changes: the api-version and the rest of the query reach the handler as sent.
                prop_assert_eq!(normal.query(), uri.query());
            }
        }
    }

    #[test]
    fn query_parameters_round_trip(value in "\\PC{0,30}") {
        let encoded = client_sas::url_encode(&value);
        let uri = Uri::from_str(&format!("/enrollments?x=1&api-version={encoded}")).expect("an encoded query is a URI");
        prop_assert_eq!(util::query_param(&uri, "api-version"), Some(value));
    }

    #[test]
    fn identifiers_and_headers_never_panic(text in "\\PC{0,150}", bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        let _ = util::registration_key(&text);
        let _ = util::group_key(&text);
        let _ = util::validate_device_id(&text);
        let _ = util::validate_key(&text);
        let _ = util::b64_decode(&text);
        let _ = util::etag_matches(&text, "\"abc\"");
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            for name in ["x-ms-continuation", "x-ms-max-item-count", "if-match", "authorization", "retry-after"] {
                headers.insert(name, value.clone());
            }
        }
        let _ = util::continuation(&headers);
        let _ = util::page_size(&headers);
        let _ = util::if_match(&headers);
        let _ = dps_operator::engine::auth::token(&headers);
        for status in [400u16, 401, 404, 409, 412, 429, 500, 503] {
            let status = StatusCode::from_u16(status).expect("a status");
            let err = AzureError::from_response(status, &headers, &bytes);
            let _ = (err.reason(), err.retry_after(), err.is_retryable(), err.to_string());
        }
    }

    #[test]
    fn continuation_tokens_round_trip(key in "\\PC{0,60}") {
        let mut headers = HeaderMap::new();
        headers.insert("x-ms-continuation", HeaderValue::from_str(&util::continuation_token(&key)).expect("base64 is a header"));
        let expected = if key.is_empty() { None } else { Some(key) };
        prop_assert_eq!(util::continuation(&headers).expect("our own token"), expected);
    }

    #[test]
    fn hub_queries_never_panic(tail in structured_text(), words in proptest::collection::vec(
        prop_oneof![Just("where"), Just("and"), Just("="), Just("!="), Just("<>"), Just("'"), Just("\""),
                    Just("status"), Just("'disabled'"), Just("true"), Just("1"), Just("é")], 0..10)) {
        let query = format!("SELECT * FROM devices {} {tail}", words.join(" "));
        if let Ok(conditions) = hub_registry::parse_query(&query) {
            let _ = hub_registry::matches(&serde_json::json!({"status": "disabled", "deviceId": "d"}), &conditions);
        }
        let _ = hub_registry::parse_query(&tail);
    }

    #[test]
    fn enrollment_bodies_never_panic(body in json_value(), group in any::<bool>()) {
        let bytes = serde_json::to_vec(&body).expect("JSON");
        if let Ok(entry) = serde_json::from_slice::<Entry>(&bytes) {
            let _ = dps_service::validate_entry(group, "dev-1", entry);
        }
        if let Ok(device) = serde_json::from_slice::<Device>(&bytes) {
            let stored = device.clone();
            let _ = hub_registry::prepare_device("dev-1", device.clone(), None);
            let _ = hub_registry::prepare_device("dev-1", device, Some(&stored));
        }
    }

    #[test]
    fn backend_error_bodies_never_panic(body in json_value(), raw in proptest::collection::vec(any::<u8>(), 0..200), status in 400u16..600) {
        let status = StatusCode::from_u16(status).expect("a status");
        let headers = HeaderMap::new();
        for bytes in [serde_json::to_vec(&body).expect("JSON"), raw] {
            let err = AzureError::from_response(status, &headers, &bytes);
            let _ = (err.reason(), err.service(), err.to_string());
        }
    }
}
