//! End-to-end checks of the local engine over HTTPS: service API, device registration (symmetric key and
//! X.509 over mutual TLS, with the revocation order), hub registry, restart persistence.

#[path = "integration/support/certs.rs"]
mod certs;
mod engine_common;

use certs::{TestCa, Validity};
use engine_common as common;
use reqwest::StatusCode;
use serde_json::{Value, json};

const SVC: &str = "api-version=2021-10-01";
const DEV: &str = "api-version=2021-06-01";
const HUB: &str = "api-version=2021-04-12";

async fn svc(
    c: &reqwest::Client,
    info: &dps_operator::engine::EngineInfo,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut req = c
        .request(method, format!("{}{path}{sep}{SVC}", info.provisioning_service.endpoint))
        .header("authorization", common::service_token(info));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), headers)
}

/// Registers and polls, as devices do, until the operation leaves `assigning` (30 s deadline, the service's
/// `retry-after` between polls); returns the final operation JSON, or the error body with its status.
async fn register(
    c: &reqwest::Client,
    info: &dps_operator::engine::EngineInfo,
    id: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let base = format!("{}/{}/registrations/{id}", info.device_endpoint, info.id_scope);
    let with_token = |req: reqwest::RequestBuilder| match token {
        Some(t) => req.header("authorization", t),
        None => req,
    };
    let resp = with_token(c.put(format!("{base}/register?{DEV}")).json(&json!({ "registrationId": id })))
        .send()
        .await
        .expect("register");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let (mut status, mut retry_after) = (resp.status(), retry_after_of(resp.headers()));
    let mut v: Value = resp.json().await.unwrap_or(Value::Null);
    while status.is_success() && v["status"] == "assigning" {
        assert!(tokio::time::Instant::now() < deadline, "registration of {id} still assigning after 30 s: {v}");
        let op = v["operationId"].as_str().expect("operationId").to_string();
        tokio::time::sleep(retry_after).await;
        let resp = with_token(c.get(format!("{base}/operations/{op}?{DEV}"))).send().await.expect("poll");
        (status, retry_after) = (resp.status(), retry_after_of(resp.headers()));
        v = resp.json().await.unwrap_or(Value::Null);
    }
    (status, v)
}

/// The wait a `retry-after` header asks for (seconds), at most one second here to keep tests quick.
fn retry_after_of(headers: &reqwest::header::HeaderMap) -> std::time::Duration {
    let secs = headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    std::time::Duration::from_millis(secs.map_or(100, |s| (s * 1000).min(1000)))
}

#[tokio::test]
async fn service_api_etags_paging_and_errors() {
    let (engine, dir) = common::start_engine("svc").await;
    let info = engine.info.clone();
    let c = common::client(&info, None);
    use reqwest::Method as M;
    let body = json!({ "registrationId": "Dev-A", "attestation": { "type": "symmetricKey" } });
    let (st, created, _) = svc(&c, &info, M::PUT, "/enrollments/Dev-A", Some(body.clone())).await;
    assert_eq!(st, StatusCode::OK, "{created}");
    assert_eq!(created["registrationId"], "dev-a");
    let etag = created["etag"].as_str().expect("etag").to_string();
    let (st, e, h) = svc(&c, &info, M::PUT, "/enrollments/dev-a", Some(body.clone())).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(e["errorCode"], 409201);
    assert!(h.contains_key("x-ms-error-code"));
    // GET never returns keys; the attestation mechanism does.
    let (_, got, _) = svc(&c, &info, M::GET, "/enrollments/dev-a", None).await;
    assert!(got["attestation"]["symmetricKey"].get("primaryKey").is_none());
    let (_, att, _) = svc(&c, &info, M::POST, "/enrollments/dev-a/attestationmechanism", None).await;
    assert!(att["symmetricKey"]["primaryKey"].is_string());
    // Update with a stale etag: 412; with the right one: 200 and keys kept.
    let mut upd = got.clone();
    upd["provisioningStatus"] = json!("disabled");
    let req = |tag: &str| {
        c.put(format!("{}/enrollments/dev-a?{SVC}", info.provisioning_service.endpoint))
            .header("authorization", common::service_token(&info))
            .header("if-match", tag.to_string())
            .json(&upd)
    };
    assert_eq!(req("\"nope\"").send().await.expect("put").status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(req(&etag).send().await.expect("put").status(), StatusCode::OK);
    let (_, att2, _) = svc(&c, &info, M::POST, "/enrollments/dev-a/attestationmechanism", None).await;
    assert_eq!(att, att2);
    // Bad input.
    for (path, b) in [
        ("/enrollments/bad.", json!({ "attestation": { "type": "symmetricKey" } })),
        ("/enrollments/ok1", json!({ "attestation": { "type": "magic" } })),
        (
            "/enrollments/ok2",
            json!({ "attestation": { "type": "symmetricKey", "symmetricKey": { "primaryKey": "c2hvcnQ=" } } }),
        ),
        (
            "/enrollments/ok3",
            json!({ "attestation": { "type": "x509", "x509": { "clientCertificates": { "primary": { "certificate": "not a cert" } } } } }),
        ),
    ] {
        let (st, e, _) = svc(&c, &info, M::PUT, path, Some(b)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path}: {e}");
    }
    // Bulk: 11 entries is too many; 3 creates succeed; paging over 4 entries with page size 3.
    let many: Vec<Value> = (0..11)
        .map(|i| json!({ "registrationId": format!("b{i}"), "attestation": { "type": "symmetricKey" } }))
        .collect();
    let (st, _, _) =
        svc(&c, &info, M::POST, "/enrollments", Some(json!({ "mode": "create", "enrollments": many }))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let three: Vec<Value> = (0..3)
        .map(|i| json!({ "registrationId": format!("b{i}"), "attestation": { "type": "symmetricKey" } }))
        .collect();
    let (st, r, _) =
        svc(&c, &info, M::POST, "/enrollments", Some(json!({ "mode": "create", "enrollments": three }))).await;
    assert_eq!((st, r["isSuccessful"].clone()), (StatusCode::OK, json!(true)), "{r}");
    let page = |cont: Option<String>| {
        let mut r = c
            .post(format!("{}/enrollments/query?{SVC}", info.provisioning_service.endpoint))
            .header("authorization", common::service_token(&info))
            .header("x-ms-max-item-count", "3")
            .json(&json!({ "query": "SELECT *" }));
        if let Some(t) = cont {
            r = r.header("x-ms-continuation", t);
        }
        r.send()
    };
    let p1 = page(None).await.expect("page 1");
    let cont = p1.headers().get("x-ms-continuation").and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(p1.json::<Vec<Value>>().await.expect("json").len(), 3);
    let p2 = page(Some(cont.expect("continuation"))).await.expect("page 2");
    assert!(p2.headers().get("x-ms-continuation").is_none());
    assert_eq!(p2.json::<Vec<Value>>().await.expect("json").len(), 1);
    // Unauthenticated and wrong-key requests.
    let r = c.get(format!("{}/enrollments/dev-a?{SVC}", info.provisioning_service.endpoint)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let bad = dps_operator::engine::sas::make_token(
        &info.provisioning_service.host_name,
        &dps_operator::engine::util::generate_key(),
        Some("provisioningserviceowner"),
        4_000_000_000,
    );
    let r = c
        .get(format!("{}/enrollments/dev-a?{SVC}", info.provisioning_service.endpoint))
        .header("authorization", bad)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Missing api-version and malformed JSON.
    let r = c
        .get(format!("{}/enrollments/dev-a", info.provisioning_service.endpoint))
        .header("authorization", common::service_token(&info))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .put(format!("{}/enrollments/x1?{SVC}", info.provisioning_service.endpoint))
        .header("authorization", common::service_token(&info))
        .body("{oops")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let big = "a".repeat(100 * 1024);
    let r = c
        .put(format!("{}/enrollments/x1?{SVC}", info.provisioning_service.endpoint))
        .header("authorization", common::service_token(&info))
        .body(big)
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Unknown method and path: Azure-shaped 405 and 404.
    let (st, _, h) = svc(&c, &info, M::PATCH, "/enrollments/dev-a", None).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    assert!(h.contains_key("x-ms-error-code"));
    let (st, _, h) = svc(&c, &info, M::GET, "/nothing/here", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(h.contains_key("x-ms-error-code"));
    // DELETE, then 404.
    let (st, _, _) = svc(&c, &info, M::DELETE, "/enrollments/dev-a", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _, _) = svc(&c, &info, M::GET, "/enrollments/dev-a", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn symmetric_key_registration_hub_device_and_refusals() {
    let (engine, dir) = common::start_engine("sym").await;
    let info = engine.info.clone();
    let c = common::client(&info, None);
    use reqwest::Method as M;
    let gkey = dps_operator::engine::util::generate_key();
    let group = json!({ "enrollmentGroupId": "grp", "attestation": { "type": "symmetricKey", "symmetricKey": { "primaryKey": gkey, "secondaryKey": gkey } },
                        "allocationPolicy": "static", "iotHubs": [info.hubs[1].host_name], "initialTwin": { "tags": { "site": "x" } } });
    assert_eq!(svc(&c, &info, M::PUT, "/enrollmentGroups/grp", Some(group)).await.0, StatusCode::OK);
    let dkey = dps_operator::engine::sas::derive_device_key(&gkey, "dev-1").expect("derive");
    let token = common::device_token(&info, "dev-1", &dkey);
    let (st, op) = register(&c, &info, "dev-1", Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "{op}");
    assert_eq!(op["status"], "assigned");
    assert_eq!(op["registrationState"]["assignedHub"], info.hubs[1].host_name.as_str());
    assert_eq!(op["registrationState"]["deviceId"], "dev-1");
    // The device exists in hub 2 with the derived key.
    let r = c
        .get(format!("{}/devices/dev-1?{HUB}", info.hubs[1].endpoint))
        .header("authorization", common::hub_token(&info, 1))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let d: Value = r.json().await.expect("json");
    assert_eq!(d["authentication"]["symmetricKey"]["primaryKey"], dkey.as_str());
    // The group's registrations list it.
    let (_, regs, _) = svc(&c, &info, M::POST, "/registrations/grp/query", None).await;
    assert_eq!(regs.as_array().map(Vec::len), Some(1));
    // A disabled individual enrollment with throw-away keys blocks the group device.
    let ind = json!({ "registrationId": "dev-1", "provisioningStatus": "disabled", "attestation": { "type": "symmetricKey" } });
    assert_eq!(svc(&c, &info, M::PUT, "/enrollments/dev-1", Some(ind)).await.0, StatusCode::OK);
    let (st, op) = register(&c, &info, "dev-1", Some(&token)).await;
    assert_eq!((st, op["status"].clone()), (StatusCode::OK, json!("disabled")), "{op}");
    // Wrong key and no credential: 401, counted.
    let wrong = common::device_token(&info, "dev-2", &dps_operator::engine::util::generate_key());
    assert_eq!(register(&c, &info, "dev-2", Some(&wrong)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(register(&c, &info, "dev-2", None).await.0, StatusCode::UNAUTHORIZED);
    let (st, refusal, _) = svc(&c, &info, M::GET, "/engine/refusals/dev-2", None).await;
    assert_eq!((st, refusal["attempts"].clone()), (StatusCode::OK, json!(2)), "{refusal}");
    let (_, all, _) = svc(&c, &info, M::GET, "/engine/refusals", None).await;
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    // Deleting the blocking entry re-admits through the group.
    assert_eq!(svc(&c, &info, M::DELETE, "/enrollments/dev-1", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(register(&c, &info, "dev-1", Some(&token)).await.1["status"], "assigned");
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn x509_chain_decision_order_over_mutual_tls() {
    let (engine, dir) = common::start_engine("x509").await;
    let info = engine.info.clone();
    let svc_client = common::client(&info, None);
    use reqwest::Method as M;
    let root = TestCa::root("root");
    let int = root.intermediate("intermediate");
    let leaf = int.leaf("dev-x");
    let leaf_pem = leaf.cert_pem.clone();
    let dev = common::client(&info, Some((&leaf.chain_pem, &leaf.key_pem)));
    let group = |cert: &str, enabled: bool| {
        json!({ "attestation": { "type": "x509", "x509": { "signingCertificates": { "primary": { "certificate": cert } } } },
                                                    "provisioningStatus": if enabled { "enabled" } else { "disabled" } })
    };
    let (st, g, _) =
        svc(&svc_client, &info, M::PUT, "/enrollmentGroups/root", Some(group(&root.cert_pem(), true))).await;
    assert_eq!(st, StatusCode::OK, "{g}");
    assert!(g["attestation"]["x509"]["signingCertificates"]["primary"]["info"]["sha256Thumbprint"].is_string());
    assert_eq!(register(&dev, &info, "dev-x", None).await.1["status"], "assigned");
    // A disabled intermediate group blocks although the root group is enabled.
    assert_eq!(
        svc(&svc_client, &info, M::PUT, "/enrollmentGroups/int", Some(group(&int.cert_pem(), false))).await.0,
        StatusCode::OK
    );
    assert_eq!(register(&dev, &info, "dev-x", None).await.1["status"], "disabled");
    assert_eq!(svc(&svc_client, &info, M::DELETE, "/enrollmentGroups/int", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(register(&dev, &info, "dev-x", None).await.1["status"], "assigned");
    // A disabled individual enrollment with the leaf blocks.
    let ind = json!({ "attestation": { "type": "x509", "x509": { "clientCertificates": { "primary": { "certificate": leaf_pem } } } }, "provisioningStatus": "disabled" });
    assert_eq!(svc(&svc_client, &info, M::PUT, "/enrollments/dev-x", Some(ind)).await.0, StatusCode::OK);
    assert_eq!(register(&dev, &info, "dev-x", None).await.1["status"], "disabled");
    // The leaf's CN must be the registration ID.
    assert_eq!(register(&dev, &info, "other", None).await.0, StatusCode::UNAUTHORIZED);
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn certificate_refusals_at_register_are_401_with_dps_error_code_401002() {
    let (engine, dir) = common::start_engine("x509-refusals").await;
    let info = engine.info.clone();
    let svc_client = common::client(&info, None);
    let root = TestCa::root("root");
    let int = root.intermediate("intermediate");
    let body = json!({ "attestation": { "type": "x509", "x509": { "signingCertificates": { "primary": { "certificate": root.cert_pem() } } } } });
    let (st, g, _) = svc(&svc_client, &info, reqwest::Method::PUT, "/enrollmentGroups/root", Some(body)).await;
    assert_eq!(st, StatusCode::OK, "{g}");
    let refused = [
        ("expired", int.leaf_with("expired", Validity::Expired)),
        ("early", int.leaf_with("early", Validity::NotYetValid)),
        ("forged", int.end_entity_as_issuer("stolen").leaf("forged")),
    ];
    for (id, leaf) in refused {
        let dev = common::client(&info, Some((&leaf.chain_pem, &leaf.key_pem)));
        let url = format!("{}/{}/registrations/{id}/register?{DEV}", info.device_endpoint, info.id_scope);
        let resp = dev.put(url).json(&json!({ "registrationId": id })).send().await.expect("register");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{id}");
        let code = resp.headers().get("x-ms-error-code").and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(code.as_deref(), Some("401002"), "{id}");
        let body: Value = resp.json().await.expect("error body");
        assert_eq!(body["errorCode"], 401002, "{id}: {body}");
    }
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn hub_registry_and_restart_persistence() {
    let (engine, dir) = common::start_engine("hub").await;
    let info = engine.info.clone();
    let c = common::client(&info, None);
    let url = |id: &str| format!("{}/devices/{id}?{HUB}", info.hubs[0].endpoint);
    let tok = common::hub_token(&info, 0);
    let r =
        c.put(url("d1")).header("authorization", &tok).json(&json!({ "deviceId": "d1" })).send().await.expect("put");
    assert_eq!(r.status(), StatusCode::OK);
    let d: Value = r.json().await.expect("json");
    let r =
        c.put(url("d1")).header("authorization", &tok).json(&json!({ "deviceId": "d1" })).send().await.expect("put");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(r.headers().get("iothub-errorcode").and_then(|v| v.to_str().ok()), Some("DeviceAlreadyExists"));
    let r = c
        .put(url("d1"))
        .header("authorization", &tok)
        .header("if-match", format!("\"{}\"", d["etag"].as_str().expect("etag")))
        .json(&json!({ "deviceId": "d1", "status": "disabled", "statusReason": "stolen" }))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::OK);
    // Other hub's token is refused.
    let r = c.get(url("d1")).header("authorization", common::hub_token(&info, 1)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .post(format!("{}/devices/query?{HUB}", info.hubs[0].endpoint))
        .header("authorization", &tok)
        .json(&json!({ "query": "SELECT * FROM devices WHERE status = 'disabled'" }))
        .send()
        .await
        .expect("query");
    let rows: Vec<Value> = r.json().await.expect("json");
    assert_eq!(rows.len(), 1);
    let too_many: Vec<Value> = (0..101).map(|i| json!({ "id": format!("b{i}"), "importMode": "create" })).collect();
    let r = c
        .post(format!("{}/devices?{HUB}", info.hubs[0].endpoint))
        .header("authorization", &tok)
        .json(&too_many)
        .send()
        .await
        .expect("bulk");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c.put(url("bad%20id")).header("authorization", &tok).json(&json!({})).send().await.expect("put");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r =
        c.delete(url("missing")).header("authorization", &tok).header("if-match", "*").send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Restart on the same directory and address: same keys, same data.
    let listen = engine.addresses[0];
    engine.shutdown().await;
    let mut cfg = dps_operator::engine::EngineConfig::new(&dir);
    cfg.listen = listen;
    let again = dps_operator::engine::start(cfg).await.expect("restart");
    assert_eq!(again.info, info);
    let c = common::client(&again.info, None);
    let r = c.get(url("d1")).header("authorization", &tok).send().await.expect("get");
    let d: Value = r.json().await.expect("json");
    assert_eq!(d["status"], "disabled");
    again.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn registering_again_into_the_same_hub_is_reprovisioned_to_initial_assignment() {
    let (engine, dir) = common::start_engine("substatus").await;
    let info = engine.info.clone();
    let c = common::client(&info, None);
    let key = dps_operator::engine::util::generate_key();
    let ind = json!({ "registrationId": "again-1", "attestation": { "type": "symmetricKey", "symmetricKey": { "primaryKey": key, "secondaryKey": key } } });
    assert_eq!(svc(&c, &info, reqwest::Method::PUT, "/enrollments/again-1", Some(ind)).await.0, StatusCode::OK);
    let token = common::device_token(&info, "again-1", &key);
    let (_, first) = register(&c, &info, "again-1", Some(&token)).await;
    assert_eq!(first["registrationState"]["substatus"], "initialAssignment", "{first}");
    let (_, again) = register(&c, &info, "again-1", Some(&token)).await;
    assert_eq!(again["registrationState"]["assignedHub"], first["registrationState"]["assignedHub"]);
    assert_eq!(again["registrationState"]["substatus"], "reprovisionedToInitialAssignment", "{again}");
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn disabled_result_has_no_error_code_and_names_its_group_only_inside_the_attestation() {
    let (engine, dir) = common::start_engine("disabled").await;
    let info = engine.info.clone();
    let c = common::client(&info, None);
    use reqwest::Method as M;
    let gkey = dps_operator::engine::util::generate_key();
    let group = |status: &str| {
        json!({ "enrollmentGroupId": "grp", "provisioningStatus": status,
                "attestation": { "type": "symmetricKey", "symmetricKey": { "primaryKey": gkey, "secondaryKey": gkey } } })
    };
    assert_eq!(svc(&c, &info, M::PUT, "/enrollmentGroups/grp", Some(group("enabled"))).await.0, StatusCode::OK);
    let dkey = dps_operator::engine::sas::derive_device_key(&gkey, "member-1").expect("derive");
    let token = common::device_token(&info, "member-1", &dkey);
    assert_eq!(register(&c, &info, "member-1", Some(&token)).await.1["status"], "assigned");
    let (_, before, _) = svc(&c, &info, M::GET, "/registrations/member-1", None).await;

    let (_, stored, _) = svc(&c, &info, M::GET, "/enrollmentGroups/grp", None).await;
    let req = c
        .put(format!("{}/enrollmentGroups/grp?{SVC}", info.provisioning_service.endpoint))
        .header("authorization", common::service_token(&info))
        .header("if-match", stored["etag"].as_str().expect("etag"))
        .json(&group("disabled"));
    assert_eq!(req.send().await.expect("disable").status(), StatusCode::OK);
    let (st, op) = register(&c, &info, "member-1", Some(&token)).await;
    assert_eq!((st, op["status"].clone()), (StatusCode::OK, json!("disabled")), "{op}");
    let state = &op["registrationState"];
    assert_eq!(state["status"], "disabled", "{op}");
    assert!(state.get("errorCode").is_none(), "Azure's disabled result has no errorCode: {op}");
    assert!(state.get("enrollmentGroupId").is_none(), "enrollmentGroupId belongs inside symmetricKey: {op}");
    assert_eq!(state["symmetricKey"]["enrollmentGroupId"], "grp", "{op}");

    // A refused attempt is not a registration: the record still shows the last successful one.
    let (st, after, _) = svc(&c, &info, M::GET, "/registrations/member-1", None).await;
    assert_eq!((st, &after), (StatusCode::OK, &before), "a refused attempt changed the registration record");
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn dps_if_match_must_be_the_quoted_etag_or_a_star() {
    let (engine, dir) = common::start_engine("ifmatch").await;
    let info = engine.info.clone();
    let c = common::client(&info, None);
    let body = json!({ "registrationId": "tagged-1", "attestation": { "type": "symmetricKey" } });
    let (st, created, _) = svc(&c, &info, reqwest::Method::PUT, "/enrollments/tagged-1", Some(body.clone())).await;
    assert_eq!(st, StatusCode::OK, "{created}");
    let quoted = created["etag"].as_str().expect("etag").to_string();
    assert!(quoted.starts_with('"') && quoted.ends_with('"'), "DPS etags are quoted: {quoted}");
    let bare = quoted.trim_matches('"').to_string();
    let url = format!("{}/enrollments/tagged-1?{SVC}", info.provisioning_service.endpoint);
    let put = |tag: String| {
        c.put(&url).header("authorization", common::service_token(&info)).header("if-match", tag).json(&body).send()
    };
    for tag in [bare.clone(), format!("W/{quoted}")] {
        let status = put(tag.clone()).await.expect("put").status();
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "If-Match {tag} matched {quoted}");
    }
    let delete = |tag: String| {
        c.delete(&url).header("authorization", common::service_token(&info)).header("if-match", tag).send()
    };
    assert_eq!(delete(bare).await.expect("delete").status(), StatusCode::PRECONDITION_FAILED);
    let updated = put(quoted).await.expect("put");
    assert_eq!(updated.status(), StatusCode::OK);
    assert_eq!(put("*".into()).await.expect("put").status(), StatusCode::OK);
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn dps_bulk_with_an_invalid_or_empty_id_in_any_item_is_refused_whole() {
    let (engine, dir) = common::start_engine("bulkid").await;
    let info = engine.info.clone();
    let c = common::client(&info, None);
    use reqwest::Method as M;
    let entry = |id: Option<&str>| match id {
        Some(id) => json!({ "registrationId": id, "attestation": { "type": "symmetricKey" } }),
        None => json!({ "attestation": { "type": "symmetricKey" } }),
    };
    for bad in [entry(Some("bad.")), entry(Some("")), entry(None)] {
        let req = json!({ "mode": "create", "enrollments": [entry(Some("fine-1")), bad] });
        let (st, r, _) = svc(&c, &info, M::POST, "/enrollments", Some(req)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{r}");
        let (st, _, _) = svc(&c, &info, M::GET, "/enrollments/fine-1", None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "a refused bulk request created its valid item");
    }
    let groups = json!({ "mode": "create", "enrollmentGroups": [{ "enrollmentGroupId": "g:", "attestation": { "type": "symmetricKey" } }] });
    assert_eq!(svc(&c, &info, M::POST, "/enrollmentGroups", Some(groups)).await.0, StatusCode::BAD_REQUEST);
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
