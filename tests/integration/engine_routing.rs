//! One address, many names: with advertised host names the engine serves DPS and every hub on its listen
//! address alone, told apart by TLS SNI and the Host header, as it is inside a cluster behind one Service.
//! The clients resolve every name to that one address, as cluster DNS would.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::certs::TestCa;
use crate::support::engine::{Engine, free_port};
use crate::support::raw::{token, unix_time};

const DPS: &str = "dps.engine.test";
const HUB1: &str = "hub1.engine.test";
const HUB2: &str = "hub2.engine.test";

fn named_engine() -> Engine {
    let flags = [format!("dps={DPS}"), format!("hub1={HUB1}"), format!("hub2={HUB2}")];
    let args: Vec<&str> = flags.iter().flat_map(|f| ["--advertise-host", f.as_str()]).collect();
    Engine::start_with(free_port(), &args)
}

/// A client trusting the engine's CA that reaches every advertised name at the engine's one listen address.
fn client_by_name(engine: &Engine, identity: Option<reqwest::Identity>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&engine.ca_pem()).expect("engine CA parses");
    let mut builder = reqwest::Client::builder().tls_built_in_root_certs(false).add_root_certificate(ca);
    for name in [DPS, HUB1, HUB2] {
        builder = builder.resolve(name, engine.listen_addr());
    }
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().expect("client builds")
}

fn dps_auth(engine: &Engine) -> String {
    let cs = &engine.info.provisioning_service.connection_string;
    token(cs, &cs.host_name, cs.policy.as_deref(), unix_time(3600))
}

fn hub_auth(engine: &Engine, index: usize) -> String {
    let hub = &engine.info.hubs[index];
    token(&hub.connection_string, &hub.host_name, Some("iothubowner"), unix_time(3600))
}

fn device_url(engine: &Engine, index: usize, device_id: &str) -> String {
    format!("{}/devices/{device_id}?api-version=2021-04-12", engine.info.hubs[index].endpoint)
}

#[tokio::test]
async fn dps_and_two_hubs_are_served_on_one_address_by_name() {
    let engine = named_engine();
    let port = engine.listen_addr().port();
    let info = &engine.info;
    assert_eq!(info.provisioning_service.host_name, DPS);
    assert_eq!(info.provisioning_service.endpoint, format!("https://{DPS}:{port}"));
    assert_eq!(info.provisioning_service.connection_string.host_name, DPS);
    assert_eq!(info.device_endpoint, format!("https://{DPS}:{port}"));
    for (hub, name) in info.hubs.iter().zip([HUB1, HUB2]) {
        assert_eq!((hub.host_name.as_str(), hub.connection_string.host_name.as_str()), (name, name));
        assert_eq!(hub.endpoint, format!("https://{name}:{port}"));
    }
    let http = client_by_name(&engine, None);

    let created = http
        .put(device_url(&engine, 0, "by-name"))
        .header("Authorization", hub_auth(&engine, 0))
        .json(&json!({"deviceId": "by-name"}))
        .send()
        .await
        .expect("answered");
    assert!(created.status().is_success(), "hub1 did not create the device: {}", created.status());
    let in_hub1 = http.get(device_url(&engine, 0, "by-name")).header("Authorization", hub_auth(&engine, 0));
    assert_eq!(in_hub1.send().await.expect("answered").status(), StatusCode::OK, "hub1 serves its device");
    let in_hub2 = http.get(device_url(&engine, 1, "by-name")).header("Authorization", hub_auth(&engine, 1));
    let in_hub2 = in_hub2.send().await.expect("answered");
    assert_eq!(in_hub2.status(), StatusCode::NOT_FOUND, "hub2 is another registry");
    assert!(in_hub2.headers().contains_key("iothub-errorcode"), "hub2 answers as a hub");

    // The audience is the name: hub1's token is no good at hub2's name.
    let wrong_audience = http.get(device_url(&engine, 1, "by-name")).header("Authorization", hub_auth(&engine, 0));
    assert_eq!(wrong_audience.send().await.expect("answered").status(), StatusCode::UNAUTHORIZED);

    let enrollment = format!("{}/enrollments/nobody?api-version=2021-10-01", info.provisioning_service.endpoint);
    let dps = http.get(&enrollment).header("Authorization", dps_auth(&engine)).send().await.expect("answered");
    assert_eq!(dps.status(), StatusCode::NOT_FOUND);
    assert!(dps.headers().contains_key("x-ms-error-code"), "DPS answers as DPS");
}

#[tokio::test]
async fn a_domain_and_a_service_port_name_every_endpoint_in_engine_json() {
    let engine = Engine::start_with(
        free_port(),
        &["--advertise-domain", "engine.svc", "--advertise-host", "hub2=other.example"],
    );
    let info = &engine.info;
    let port = engine.listen_addr().port();
    assert_eq!(info.provisioning_service.endpoint, format!("https://dps.engine.svc:{port}"));
    let hosts: Vec<&str> = info.hubs.iter().map(|h| h.connection_string.host_name.as_str()).collect();
    assert_eq!(hosts, ["hub1.engine.svc", "other.example"]);

    let behind_a_service =
        Engine::start_with(free_port(), &["--advertise-domain", "engine.svc", "--advertise-port", "443"]);
    assert_eq!(behind_a_service.info.device_endpoint, "https://dps.engine.svc:443");
    assert_eq!(behind_a_service.info.hubs[0].endpoint, "https://hub1.engine.svc:443");
}

#[tokio::test]
async fn the_host_header_routes_requests_that_carry_no_sni() {
    let engine = named_engine();
    let ca = reqwest::Certificate::from_pem(&engine.ca_pem()).expect("engine CA parses");
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .expect("client builds");
    // An IP host sends no SNI, and the certificate names the listen IP.
    let url = format!("https://{}/devices/nobody?api-version=2021-04-12", engine.listen_addr());
    let by_host = http.get(&url).header("Host", HUB2).header("Authorization", hub_auth(&engine, 1));
    let by_host = by_host.send().await.expect("answered");
    assert_eq!(by_host.status(), StatusCode::NOT_FOUND, "hub2 looked the device up");
    assert!(by_host.headers().contains_key("iothub-errorcode"), "the Host header picked hub2");

    // Without a known name the listen address is the DPS endpoint, as when routing by address.
    let unnamed = http.get(&url).header("Authorization", hub_auth(&engine, 1)).send().await.expect("answered");
    assert!(unnamed.headers().contains_key("x-ms-error-code"), "an unnamed request reaches DPS");
}

#[tokio::test]
async fn the_sni_routes_requests_whose_host_header_names_no_endpoint() {
    let engine = named_engine();
    let http = client_by_name(&engine, None);
    let url = device_url(&engine, 0, "nobody");
    let request =
        http.get(url).header("Host", engine.listen_addr().to_string()).header("Authorization", hub_auth(&engine, 0));
    let response = request.send().await.expect("answered");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.headers().contains_key("iothub-errorcode"), "the SNI picked hub1");
}

#[tokio::test]
async fn x509_devices_register_by_name_over_mutual_tls() {
    let engine = named_engine();
    let ca = TestCa::root("Routing Root CA");
    let leaf = ca.leaf("named-x509");
    let http = client_by_name(&engine, None);
    let enrollment = json!({"registrationId": "named-x509", "attestation": {"type": "x509",
        "x509": {"clientCertificates": {"primary": {"certificate": leaf.cert_pem}}}}});
    let url = format!("{}/enrollments/named-x509?api-version=2021-10-01", engine.info.provisioning_service.endpoint);
    let created = http.put(url).header("Authorization", dps_auth(&engine)).json(&enrollment).send().await;
    assert!(created.expect("answered").status().is_success(), "enrollment created by name");

    let identity = reqwest::Identity::from_pem(format!("{}{}", leaf.chain_pem, leaf.key_pem).as_bytes())
        .expect("device identity parses");
    let device = client_by_name(&engine, Some(identity));
    let base = format!("{}/{}/registrations/named-x509", engine.info.device_endpoint, engine.info.id_scope);
    let started = device
        .put(format!("{base}/register?api-version=2021-06-01"))
        .json(&json!({"registrationId": "named-x509"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(started.status(), StatusCode::ACCEPTED, "the device's certificate reached DPS");
    let started: Value = started.json().await.expect("JSON");
    let operation = started["operationId"].as_str().expect("operation ID");
    let polled = device.get(format!("{base}/operations/{operation}?api-version=2021-06-01")).send().await;
    let polled: Value = polled.expect("answered").json().await.expect("JSON");
    assert_eq!(polled["status"], "assigned", "{polled}");
    let hub = polled["registrationState"]["assignedHub"].as_str().expect("assigned hub");
    let index = engine.info.hubs.iter().position(|h| h.host_name == hub).expect("assigned to a named hub");
    let in_hub = http.get(device_url(&engine, index, "named-x509")).header("Authorization", hub_auth(&engine, index));
    assert_eq!(in_hub.send().await.expect("answered").status(), StatusCode::OK, "the device is in {hub}");
}
