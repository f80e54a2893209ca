//! Helpers shared by the engine's integration tests and its benchmark: start the engine in-process on a
//! fresh loopback address with a free port, build HTTPS clients that trust its CA, make SAS tokens.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use dps_operator::engine::{self, EngineConfig, EngineInfo, RunningEngine, sas};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh data directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "dps-engine-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Starts the engine on `127.0.<a>.<b>` (distinct per call and process) with a free port.
pub async fn start_engine(tag: &str) -> (RunningEngine, PathBuf) {
    let dir = temp_dir(tag);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    // Spread across 127.64.0.0/10 so parallel test binaries rarely collide; the port is free anyway.
    let a = 64 + (pid % 128) as u8;
    let b = ((n * 4) % 240 + 1) as u8;
    let listen: SocketAddr = SocketAddr::from(([127, a, (pid / 128 % 250) as u8, b], 0));
    let mut cfg = EngineConfig::new(&dir);
    cfg.listen = listen;
    let running = engine::start(cfg).await.expect("engine starts");
    (running, dir)
}

/// An HTTP/1.1 client trusting the engine's CA, optionally presenting a client certificate chain (PEM).
pub fn client(info: &EngineInfo, identity: Option<(&str, &str)>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&info.ca_certificate).expect("ca file") {
        roots.add(c.expect("ca cert")).expect("add root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut cfg = match identity {
        Some((chain, key)) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<_, _>>().expect("chain");
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
            builder.with_client_auth_cert(certs, key).expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .http1_only()
        .pool_max_idle_per_host(1024)
        .build()
        .expect("client")
}

/// The key in a connection string.
pub fn key_of(connection_string: &str) -> String {
    connection_string
        .split(';')
        .find_map(|p| p.strip_prefix("SharedAccessKey="))
        .expect("key in connection string")
        .to_string()
}

fn expiry() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0) + 3600
}

/// A `provisioningserviceowner` token.
pub fn service_token(info: &EngineInfo) -> String {
    let ps = &info.provisioning_service;
    sas::make_token(&ps.host_name, &key_of(&ps.connection_string), Some("provisioningserviceowner"), expiry())
}

/// An `iothubowner` token for hub `i`.
pub fn hub_token(info: &EngineInfo, i: usize) -> String {
    let h = &info.hubs[i];
    sas::make_token(&h.host_name, &key_of(&h.connection_string), Some("iothubowner"), expiry())
}

/// A device registration token.
pub fn device_token(info: &EngineInfo, registration_id: &str, key: &str) -> String {
    sas::make_token(&format!("{}/registrations/{registration_id}", info.id_scope), key, Some("registration"), expiry())
}

/// Runs `dps-operator engine --data-dir DIR ARGS...` as a process of its own (so it can be killed with -9)
/// and waits for its ready line; returns the process and the engine.json it wrote.
pub fn spawn_engine_process(dir: &std::path::Path, args: &[&str]) -> (std::process::Child, EngineInfo) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dps-operator"))
        .args(["engine", "--data-dir"])
        .arg(dir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn engine");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).expect("ready line");
    assert!(line.starts_with("engine ready "), "{line}");
    let info: EngineInfo =
        serde_json::from_slice(&std::fs::read(dir.join("engine.json")).expect("engine.json")).expect("parse");
    (child, info)
}
