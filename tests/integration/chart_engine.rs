//! The chart's in-cluster engine fits together: the engine, run with the StatefulSet's arguments and the two
//! Secrets the chart makes, serves every endpoint under its advertised name with the chart's certificate,
//! and accepts the connection strings the ProvisioningService is given. (No kubelet here: the engine runs as
//! a local process, with the Service's names resolved to it as cluster DNS would.)

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::Value;

use dps_operator::azure::connection_string::ConnectionString;

use super::chart::{documents, helm_template};
use crate::support::engine::{Engine, free_port};
use crate::support::raw::{token, unix_time};

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap_or_else(|| panic!("{kind}/{name}"))
}

/// Writes each `stringData` entry of `secret` as a file in `dir`, as a Secret volume mounts it.
fn mount(secret: &Value, dir: &Path) {
    std::fs::create_dir_all(dir).expect("mount directory");
    for (key, value) in secret["stringData"].as_object().expect("stringData") {
        std::fs::write(dir.join(key), value.as_str().expect("a string")).expect("mounted file");
    }
}

#[tokio::test]
async fn the_charts_engine_serves_its_advertised_names_with_the_charts_keys_and_certificate() {
    let docs = documents(&helm_template(&["--set", "engine.enabled=true"]));
    let credentials = find(&docs, "Secret", "dps-operator-engine-credentials");
    let tls = find(&docs, "Secret", "dps-operator-engine-tls");
    let statefulset = find(&docs, "StatefulSet", "dps-operator-engine");
    let service = find(&docs, "ProvisioningService", "local-dps");

    let mounts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("chart-engine-{}", std::process::id()));
    let (keys, certs) = (mounts.join("keys"), mounts.join("tls"));
    mount(credentials, &keys);
    mount(tls, &certs);
    // The StatefulSet's arguments, with the volumes' paths and a local port instead of the Service's.
    let port = free_port();
    let args: Vec<String> = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .filter(|a| *a != "engine" && !a.starts_with("--data-dir=") && !a.starts_with("--listen="))
        .map(|a| {
            if a.starts_with("--advertise-port=") {
                format!("--advertise-port={port}")
            } else {
                a.replace("=/keys", &format!("={}", keys.display())).replace("=/tls", &format!("={}", certs.display()))
            }
        })
        .collect();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let engine = Engine::start_with(port, &arg_refs);

    // The ProvisioningService's connection strings are the engine's own: same host names, same keys.
    let given = |key: &str| -> ConnectionString {
        credentials["stringData"][key].as_str().expect("connection string").parse().expect("parses")
    };
    let dps = given("dps");
    assert_eq!(engine.info.provisioning_service.connection_string, dps, "the DPS key comes from the Secret");
    for (index, hub) in engine.info.hubs.iter().enumerate() {
        assert_eq!(hub.connection_string, given(&hub.name), "hub {} key comes from the Secret", hub.name);
        assert_eq!(service["spec"]["hubs"][index]["hostName"], hub.host_name.as_str());
    }
    assert_eq!(
        service["spec"]["endpoint"].as_str().map(|e| e.replace(":443", &format!(":{port}"))),
        Some(engine.info.provisioning_service.endpoint.clone()),
        "the ProvisioningService calls the advertised DPS name"
    );

    // A client trusting only the chart's CA reaches each endpoint by its name and is let in with its key.
    let ca = credentials["stringData"]["ca.crt"].as_str().expect("ca.crt");
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA parses"));
    let hosts: Vec<String> =
        std::iter::once(dps.host_name.clone()).chain(engine.info.hubs.iter().map(|h| h.host_name.clone())).collect();
    for host in &hosts {
        builder = builder.resolve(host, engine.listen_addr());
    }
    let http = builder.build().expect("client");
    let sas = token(&dps, &dps.host_name, dps.policy.as_deref(), unix_time(3600));
    let url = format!("{}/enrollments/absent?api-version=2021-10-01", engine.info.provisioning_service.endpoint);
    let answer = http.get(url).header("Authorization", sas).send().await.expect("DPS answers over the chart's TLS");
    assert_eq!(answer.status(), StatusCode::NOT_FOUND, "DPS accepts the chart's key");
    for hub in &engine.info.hubs {
        let cs = given(&hub.name);
        let sas = token(&cs, &cs.host_name, Some("iothubowner"), unix_time(3600));
        let url = format!("{}/devices/absent?api-version=2021-04-12", hub.endpoint);
        let answer = http.get(url).header("Authorization", sas).send().await.expect("the hub answers");
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{} accepts the chart's key", hub.name);
        assert!(answer.headers().contains_key("iothub-errorcode"), "{} answers as a hub", hub.name);
    }
    drop(engine);
    let _ = std::fs::remove_dir_all(&mounts);
}
