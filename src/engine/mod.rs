//! The local engine (`dps-operator engine`): a single-node server speaking Azure's wire format for the DPS
//! service API, the DPS device registration API and the IoT Hub identity registry API over HTTPS, with
//! SQLite storage, so the operator and the official Azure IoT SDKs work without an Azure account.
//!
//! By default every endpoint has its own loopback address on the same port, counting up from the listen
//! address: the DPS endpoint (service and device APIs) on the listen IP, hub 1 on IP+1, hub 2 on IP+2, ...
//! With advertised host names ([`routing::Advertise`]) every endpoint is served on the listen address alone
//! and told apart by name. Start it in-process with [`start`]; see `docs/engine.md`.

pub mod auth;
pub mod bulk_requests;
pub mod certificate_uniqueness;
pub mod certs;
pub mod decision;
pub mod device_registration;
pub mod dps_service;
pub mod error;
pub mod faults;
pub mod hub_registry;
pub mod model;
pub mod refusals;
pub mod routing;
pub mod sas;
pub mod server;
pub mod storage;
pub mod throttle;
pub mod tls;
pub mod util;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::azure::connection_string::{ConnectionString, Credential};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use tls::TlsFiles;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Certificates or TLS configuration.
    #[error("TLS: {0}")]
    Tls(String),
    /// The database.
    #[error("storage: {0}")]
    Storage(#[from] rusqlite::Error),
    /// Binding a listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Invalid settings.
    #[error("invalid engine configuration: {0}")]
    Config(String),
}

/// How to run the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Directory for the database, keys, certificates and `engine.json`.
    pub data_dir: PathBuf,
    /// DPS endpoint address; hubs take the following IP addresses on the same port, unless host names are
    /// advertised (then every endpoint is served here). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Host names to put in engine.json (and route by) instead of endpoint IP addresses.
    pub advertise: routing::Advertise,
    /// Hub names, in order (default `hub1`, `hub2`).
    pub hubs: Vec<String>,
    /// ID scope; generated once and kept in the data directory when not given.
    pub id_scope: Option<String>,
    /// Use these certificate files instead of generating a CA.
    pub tls_files: Option<TlsFiles>,
    /// Answer 429 with `Retry-After` beyond this many requests a minute per endpoint (off when `None`).
    pub throttle_per_minute: Option<u32>,
    /// A directory (a mounted Kubernetes Secret) with a connection string per endpoint, in files named
    /// `dps` and after each hub: their keys replace the generated ones, so whoever made that Secret can
    /// hand it to the operator as it is.
    pub keys_dir: Option<PathBuf>,
    /// Faults to inject from the start (none by default); `PUT /engine/faults` replaces them at run time.
    pub faults: faults::FaultPlan,
}

impl EngineConfig {
    /// Defaults: `127.0.0.1:8443`, hubs `hub1` and `hub2`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            hubs: vec!["hub1".into(), "hub2".into()],
            id_scope: None,
            tls_files: None,
            throttle_per_minute: None,
            advertise: routing::Advertise::default(),
            keys_dir: None,
            faults: faults::FaultPlan::default(),
        }
    }
}

/// `engine.json`: how clients reach the engine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EngineInfo {
    /// The DPS ID scope.
    pub id_scope: String,
    /// Absolute path of the CA certificate to trust.
    pub ca_certificate: String,
    /// The DPS service API.
    pub provisioning_service: ServiceInfo,
    /// The device registration API base URL.
    pub device_endpoint: String,
    /// The hubs.
    pub hubs: Vec<HubEndpointInfo>,
}

/// The DPS service endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInfo {
    /// Host name (bare IP, or the advertised DNS name; SAS audience).
    pub host_name: String,
    /// `https://HOST:PORT`.
    pub endpoint: String,
    /// `HostName=..;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=..`.
    pub connection_string: String,
}

/// A hub endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HubEndpointInfo {
    /// Hub name.
    pub name: String,
    /// Host name (bare IP, or the advertised DNS name; SAS audience).
    pub host_name: String,
    /// `https://HOST:PORT`.
    pub endpoint: String,
    /// `HostName=..;SharedAccessKeyName=iothubowner;SharedAccessKey=..`.
    pub connection_string: String,
}

/// Keys and ID scope kept across restarts in `DIR/secrets.json`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Secrets {
    id_scope: String,
    provisioning_service_key: String,
    #[serde(default)]
    hub_keys: std::collections::BTreeMap<String, String>,
}

/// One hub served by the engine.
#[derive(Debug, Clone)]
pub struct Hub {
    /// Name.
    pub name: String,
    /// Host name (bare IP, or the advertised DNS name).
    pub host_name: String,
    /// `iothubowner` key.
    pub key: String,
}

/// State shared by every handler.
pub struct Shared {
    /// The database.
    pub store: storage::Store,
    /// The ID scope.
    pub id_scope: String,
    /// DPS host name (bare IP, or the advertised DNS name).
    pub dps_host: String,
    /// `provisioningserviceowner` key.
    pub dps_key: String,
    /// Hubs in order.
    pub hubs: Vec<Hub>,
    /// Recent registration operations (operation ID -> result), bounded.
    pub operations: Mutex<device_registration::Operations>,
    /// Recent bulk requests (engine-only `/engine/bulk-requests`), bounded.
    pub bulk_requests: bulk_requests::BulkRequests,
    /// Injected faults (engine-only `/engine/faults`).
    pub faults: Arc<faults::Faults>,
}

impl Shared {
    /// Host names of all hubs.
    pub fn hub_hosts(&self) -> Vec<String> {
        self.hubs.iter().map(|h| h.host_name.clone()).collect()
    }
}

/// A running engine.
pub struct RunningEngine {
    /// What `engine.json` says.
    pub info: EngineInfo,
    /// Absolute path of `engine.json`.
    pub info_path: PathBuf,
    /// The bound addresses: DPS first, then the hubs; only the listen address when host names are advertised.
    pub addresses: Vec<SocketAddr>,
    faults: Arc<faults::Faults>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningEngine {
    /// The fault plan in force, to change or read in-process (what `/engine/faults` does over HTTPS).
    pub fn faults(&self) -> &faults::Faults {
        &self.faults
    }

    /// Stops accepting connections, lets open requests finish (at most 10 s) and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn nth_ip(base: IpAddr, n: u32) -> Result<IpAddr, EngineError> {
    match base {
        IpAddr::V4(v4) => u32::from(v4)
            .checked_add(n)
            .map(|x| IpAddr::V4(Ipv4Addr::from(x)))
            .ok_or_else(|| EngineError::Config("listen address overflows".into())),
        IpAddr::V6(v6) => u128::from(v6)
            .checked_add(u128::from(n))
            .map(|x| IpAddr::V6(Ipv6Addr::from(x)))
            .ok_or_else(|| EngineError::Config("listen address overflows".into())),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io { path: path.display().to_string(), source }
}

/// The `SharedAccessKey` of the connection string in `dir/endpoint`, if that file exists. Errors name the
/// file and the field at fault, never the key.
fn given_key(dir: &Path, endpoint: &str) -> Result<Option<String>, EngineError> {
    let path = dir.join(endpoint);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let parsed: ConnectionString =
        text.trim().parse().map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?;
    match parsed.credential {
        Credential::Key(key) if parsed.key_bytes().is_some() => Ok(Some(key.expose().to_string())),
        _ => Err(EngineError::Config(format!("{}: needs a SharedAccessKey of base64", path.display()))),
    }
}

fn load_secrets(
    dir: &Path,
    hubs: &[String],
    id_scope: Option<&str>,
    keys_dir: Option<&Path>,
) -> Result<Secrets, EngineError> {
    let path = dir.join("secrets.json");
    let mut s: Secrets = match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Secrets::default(),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let before = serde_json::to_string(&s).unwrap_or_default();
    if let Some(scope) = id_scope {
        s.id_scope = scope.to_string();
    }
    if s.id_scope.is_empty() {
        s.id_scope = format!("0ne{}", util::hex(&util::random_bytes(4)).to_ascii_uppercase());
    }
    if s.provisioning_service_key.is_empty() {
        s.provisioning_service_key = util::generate_key();
    }
    for h in hubs {
        s.hub_keys.entry(h.clone()).or_insert_with(util::generate_key);
    }
    if let Some(keys) = keys_dir {
        // A mount that is missing must not quietly mean "generate new keys" nobody else knows.
        if !keys.is_dir() {
            return Err(EngineError::Config(format!("--keys-dir {} is not a directory", keys.display())));
        }
        if let Some(key) = given_key(keys, "dps")? {
            s.provisioning_service_key = key;
        }
        for h in hubs {
            if let Some(key) = given_key(keys, h)? {
                s.hub_keys.insert(h.clone(), key);
            }
        }
    }
    let after = serde_json::to_string_pretty(&s).map_err(|e| EngineError::Config(e.to_string()))?;
    if before != serde_json::to_string(&s).unwrap_or_default() {
        atomic_write(&path, after.as_bytes())?;
    }
    Ok(s)
}

/// Writes `data` (owner-readable only: it holds keys) to a temporary file and renames it over `path`.
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<(), EngineError> {
    let tmp = path.with_extension("tmp");
    tls::write_private(&tmp, data)?;
    if let Ok(f) = std::fs::File::open(&tmp) {
        let _ = f.sync_all();
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Starts the engine: binds every listener, writes `DIR/engine.json` and serves until
/// [`RunningEngine::shutdown`]. Use port 0 in `listen` for a free port (all endpoints share it).
pub async fn start(config: EngineConfig) -> Result<RunningEngine, EngineError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    // The directory holds every key (database, secrets.json, engine.json): owner only.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
    }
    let dir = std::path::absolute(dir).map_err(io_err(dir))?;
    if config.hubs.is_empty() {
        return Err(EngineError::Config("at least one hub is required".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for h in &config.hubs {
        if h.is_empty() || !seen.insert(h) {
            return Err(EngineError::Config(format!("hub names must be unique and non-empty: '{h}'")));
        }
    }
    let names = config.advertise.names(&config.hubs).map_err(EngineError::Config)?;
    // Bind the DPS listener first (it settles a free port), then, when routing by address, each hub on the
    // next address.
    let dps_listener =
        TcpListener::bind(config.listen).await.map_err(|source| EngineError::Bind { addr: config.listen, source })?;
    let port = dps_listener.local_addr().map_err(|source| EngineError::Bind { addr: config.listen, source })?.port();
    let mut listeners = vec![dps_listener];
    let mut addresses = vec![SocketAddr::new(config.listen.ip(), port)];
    if names.is_none() {
        for i in 1..=config.hubs.len() {
            let addr = SocketAddr::new(nth_ip(config.listen.ip(), i as u32)?, port);
            let l = TcpListener::bind(addr).await.map_err(|source| EngineError::Bind { addr, source })?;
            listeners.push(l);
            addresses.push(addr);
        }
    }
    // An unspecified listen address (0.0.0.0) is no name a client could check.
    let ips: Vec<IpAddr> = addresses.iter().map(SocketAddr::ip).filter(|ip| !ip.is_unspecified()).collect();
    let identity = tls::load_or_generate(&dir, &ips, names.as_deref().unwrap_or_default(), config.tls_files.as_ref())?;
    let secrets = load_secrets(&dir, &config.hubs, config.id_scope.as_deref(), config.keys_dir.as_deref())?;
    let store = storage::Store::open(&dir.join("engine.db"))?;

    // Host names (SAS audiences, connection strings' HostName) and where clients connect, DPS first.
    let client_port = config.advertise.port.unwrap_or(port);
    let (hosts, endpoints): (Vec<String>, Vec<String>) = match &names {
        Some(names) => names.iter().map(|n| (n.clone(), format!("https://{n}:{client_port}"))).unzip(),
        None => addresses
            .iter()
            .map(|a| (a.ip().to_string(), format!("https://{}", SocketAddr::new(a.ip(), client_port))))
            .unzip(),
    };
    let dps_host = hosts.first().cloned().unwrap_or_default();
    let dps_endpoint = endpoints.first().cloned().unwrap_or_default();
    let hubs: Vec<Hub> = config
        .hubs
        .iter()
        .zip(hosts.iter().skip(1))
        .map(|(name, host)| Hub {
            name: name.clone(),
            host_name: host.clone(),
            key: secrets.hub_keys.get(name).cloned().unwrap_or_default(),
        })
        .collect();
    let shared = Arc::new(Shared {
        store,
        id_scope: secrets.id_scope.clone(),
        dps_host: dps_host.clone(),
        dps_key: secrets.provisioning_service_key.clone(),
        hubs: hubs.clone(),
        operations: Mutex::new(device_registration::Operations::default()),
        bulk_requests: bulk_requests::BulkRequests::default(),
        faults: Arc::new(faults::Faults::new(config.faults.clone())),
    });

    let info = EngineInfo {
        id_scope: secrets.id_scope.clone(),
        ca_certificate: identity.ca_path.display().to_string(),
        provisioning_service: ServiceInfo {
            host_name: dps_host.clone(),
            endpoint: dps_endpoint.clone(),
            connection_string: format!(
                "HostName={dps_host};SharedAccessKeyName={};SharedAccessKey={}",
                auth::DPS_POLICY,
                secrets.provisioning_service_key
            ),
        },
        device_endpoint: dps_endpoint,
        hubs: hubs
            .iter()
            .zip(endpoints.iter().skip(1))
            .map(|(h, endpoint)| HubEndpointInfo {
                name: h.name.clone(),
                host_name: h.host_name.clone(),
                endpoint: endpoint.clone(),
                connection_string: format!(
                    "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
                    h.host_name,
                    auth::HUB_POLICY,
                    h.key
                ),
            })
            .collect(),
    };

    // Endpoint 0 is DPS (service, device and engine-only APIs; asks for client certificates), then the hubs.
    let dps_router = dps_service::router(shared.clone())
        .merge(device_registration::router(shared.clone()))
        .merge(refusals::router(shared.clone()))
        .merge(bulk_requests::router(shared.clone()))
        .merge(faults::router(shared.clone()));
    let fault_layer = |api| faults::FaultLayer {
        faults: shared.faults.clone(),
        api,
        flavor: if api == Some(faults::Api::HubRegistry) { error::Flavor::Hub } else { error::Flavor::Dps },
    };
    let mut endpoints = vec![routing::Endpoint {
        router: finish(dps_router, error::Flavor::Dps, config.throttle_per_minute, Some(fault_layer(None))),
        tls: tls::server_config(&identity, true)?,
    }];
    let hub_tls = tls::server_config(&identity, false)?;
    for i in 0..hubs.len() {
        let router = finish(
            hub_registry::router(shared.clone(), i),
            error::Flavor::Hub,
            config.throttle_per_minute,
            Some(fault_layer(Some(faults::Api::HubRegistry))),
        );
        endpoints.push(routing::Endpoint { router, tls: hub_tls.clone() });
    }
    let routes = Arc::new(routing::Routes::new(endpoints, names.as_deref().unwrap_or_default()));
    let (stop, stop_rx) = watch::channel(false);
    // Listener i defaults to endpoint i: its own when routing by address; the one listener defaults to DPS.
    let tasks = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| tokio::spawn(server::serve(l, routes.clone(), i, stop_rx.clone())))
        .collect();

    let info_path = dir.join("engine.json");
    let json = serde_json::to_string_pretty(&info).map_err(|e| EngineError::Config(e.to_string()))?;
    // engine.json carries the owner connection strings.
    atomic_write(&info_path, json.as_bytes())?;
    Ok(RunningEngine { info, info_path, addresses, faults: shared.faults.clone(), stop, tasks })
}

/// Logs each request's method, path (never the query, which may hold nothing secret today but could) and
/// answer at debug level: the sequence of calls a client made, for post-mortems and closing notes.
async fn log_request(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let method = request.method().clone();
    let host = request.headers().get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    tracing::debug!(%method, %host, %path, status = response.status().as_u16(), "request");
    response
}

/// Adds the catch-all 404 and panic-to-500 layers in the endpoint's error shape, the endpoint's own
/// throttle when one is configured, and fault injection outside the request log (so the log lists the
/// requests that reached a handler: a write dropped after it was applied is there, one dropped before is not).
fn finish(
    router: axum::Router,
    flavor: error::Flavor,
    throttle_per_minute: Option<u32>,
    fault_layer: Option<faults::FaultLayer>,
) -> axum::Router {
    let not_found = move || async move {
        let e = error::ApiError::new(error::ErrorKind::NotFound, "no such resource or operation");
        if flavor == error::Flavor::Hub { e.hub() } else { e }
    };
    let not_allowed = move || async move {
        let e = error::ApiError::new(error::ErrorKind::MethodNotAllowed, "the method is not allowed on this resource");
        if flavor == error::Flavor::Hub { e.hub() } else { e }
    };
    let router = match throttle_per_minute {
        Some(per_minute) => {
            let state =
                throttle::ThrottleLayerState { throttle: Arc::new(throttle::Throttle::new(per_minute)), flavor };
            router.layer(axum::middleware::from_fn_with_state(state, throttle::enforce))
        }
        None => router,
    };
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .layer(axum::middleware::from_fn(log_request));
    let router = match fault_layer {
        Some(layer) => router.layer(axum::middleware::from_fn_with_state(layer, faults::inject)),
        None => router,
    };
    router.layer(tower_http::catch_panic::CatchPanicLayer::custom(move |_: Box<dyn std::any::Any + Send>| {
        use axum::response::IntoResponse as _;
        let e = error::ApiError::internal("internal error");
        let e = if flavor == error::Flavor::Hub { e.hub() } else { e };
        e.into_response()
    }))
}

/// Runs the engine until SIGTERM or SIGINT; prints `engine ready DIR/engine.json` once serving.
pub async fn run(config: EngineConfig) -> Result<(), EngineError> {
    let engine = start(config).await?;
    println!("engine ready {}", engine.info_path.display());
    tracing::info!(addresses = ?engine.addresses, "engine serving");
    wait_for_signal().await;
    tracing::info!("engine shutting down");
    engine.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn panics_become_azure_shaped_500s() {
        #[allow(clippy::panic)]
        async fn boom() -> &'static str {
            panic!("handler bug")
        }
        for (flavor, header) in [(error::Flavor::Dps, "x-ms-error-code"), (error::Flavor::Hub, "iothub-errorcode")] {
            let app = finish(axum::Router::new().route("/boom", axum::routing::get(boom)), flavor, None, None);
            let req = axum::http::Request::get("/boom").body(axum::body::Body::empty()).expect("request");
            let resp = app.oneshot(req).await.expect("response");
            assert_eq!(resp.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
            assert!(resp.headers().contains_key(header));
        }
    }

    #[test]
    fn keys_given_as_connection_strings_replace_the_generated_ones() {
        let root = std::env::temp_dir().join(format!("engine-keys-{}", std::process::id()));
        let (data, keys) = (root.join("data"), root.join("keys"));
        for dir in [&data, &keys] {
            std::fs::create_dir_all(dir).expect("dir");
        }
        let dps_key = util::generate_key();
        let conn = |host: &str, policy: &str, key: &str| {
            format!("HostName={host};SharedAccessKeyName={policy};SharedAccessKey={key}\n")
        };
        std::fs::write(keys.join("dps"), conn("dps.x", "provisioningserviceowner", &dps_key)).expect("write");
        let hubs = ["hub1".to_string(), "hub2".to_string()];
        let generated = load_secrets(&data, &hubs, None, None).expect("generated");
        let given = load_secrets(&data, &hubs, None, Some(&keys)).expect("given");
        assert_eq!(given.provisioning_service_key, dps_key);
        assert_ne!(generated.provisioning_service_key, dps_key);
        assert_eq!(given.hub_keys["hub1"], generated.hub_keys["hub1"], "a hub without a file keeps its key");
        std::fs::write(keys.join("hub2"), conn("hub2.x", "iothubowner", "not base64!")).expect("write");
        let refused = load_secrets(&data, &hubs, None, Some(&keys)).expect_err("a bad key is refused");
        assert!(!refused.to_string().contains("not base64"), "the key stays out of errors: {refused}");
        assert!(load_secrets(&data, &hubs, None, Some(&root.join("absent"))).is_err(), "a missing directory");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn endpoint_addresses_count_up() {
        let base: IpAddr = "127.0.0.1".parse().expect("ip");
        assert_eq!(nth_ip(base, 2).ok(), "127.0.0.3".parse().ok());
        assert!(nth_ip("255.255.255.255".parse().expect("ip"), 1).is_err());
    }
}
