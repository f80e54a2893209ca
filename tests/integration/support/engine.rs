//! The local engine as a child process on its own block of loopback addresses, one per test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dps_operator::azure::dps::DpsServiceClient;
use dps_operator::azure::engine_info::EngineInfo;
use dps_operator::azure::hub::HubRegistryClient;
use dps_operator::azure::rate::RateBudget;

use super::Lines;

/// A running engine; stopped (SIGKILL) when dropped, its data directory removed unless the test failed.
pub struct Engine {
    /// What the engine wrote to `engine.json`.
    pub info: EngineInfo,
    /// Its data directory.
    pub data_dir: PathBuf,
    listen: String,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl Engine {
    /// Starts an engine with a fresh data directory on a free port.
    pub fn start() -> Self {
        Self::start_with(free_port(), &[])
    }

    /// Starts an engine with a fresh data directory on `port` (443 for SDKs that cannot take a port).
    pub fn start_on_port(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// Starts an engine with a fresh data directory on `port`, with extra command-line arguments.
    pub fn start_with(port: u16, extra_args: &[&str]) -> Self {
        static ENGINES: AtomicUsize = AtomicUsize::new(0);
        let n = ENGINES.fetch_add(1, Ordering::Relaxed);
        // A block of addresses of our own: the DPS endpoint on .1, the hubs on .2, .3, ...
        let listen = format!("127.{}.{}.1:{port}", 20 + std::process::id() % 200, n % 250);
        let data_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("engine-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        let (child, info) = spawn(&data_dir, &listen, &extra_args);
        Self { info, data_dir, listen, extra_args, child: Some(child) }
    }

    /// Stops the engine with SIGKILL (no chance to flush anything) and starts it again on the same data.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        let (child, info) = spawn(&self.data_dir, &self.listen, &self.extra_args);
        self.child = Some(child);
        self.info = info;
    }

    /// Stops the engine for good (SIGKILL), as a DPS instance that no longer exists.
    pub fn stop(&mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The address the engine listens on: the DPS endpoint's, and with advertised host names every endpoint's.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        self.listen.parse().expect("the listen address parses")
    }

    /// The path of `engine.json`.
    pub fn engine_json(&self) -> PathBuf {
        self.data_dir.join("engine.json")
    }

    /// A DPS service API client with the engine's service credentials.
    pub fn dps(&self) -> DpsServiceClient {
        let mut options = self.info.dps_options().expect("engine CA is readable");
        options.rate_budget = Some(local_budget());
        DpsServiceClient::new(&self.info.provisioning_service.connection_string, options).expect("client builds")
    }

    /// A registry client for the engine's hub number `index` (0-based).
    pub fn hub(&self, index: usize) -> HubRegistryClient {
        let hub = &self.info.hubs[index];
        let mut options = self.info.hub_options(hub).expect("engine CA is readable");
        options.rate_budget = Some(local_budget());
        HubRegistryClient::new(&hub.connection_string, options).expect("client builds")
    }

    /// Everything the engine has logged so far (standard error, at debug level).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("engine.log")).unwrap_or_default()
    }

    /// The engine's CA certificate (PEM).
    pub fn ca_pem(&self) -> Vec<u8> {
        self.info.ca_pem().expect("CA readable").expect("engine.json names its CA")
    }
}

impl Engine {
    /// The service and hub keys of this engine, which nothing may ever log.
    pub fn keys(&self) -> Vec<String> {
        std::iter::once(&self.info.provisioning_service.connection_string)
            .chain(self.info.hubs.iter().map(|h| &h.connection_string))
            .map(|cs| match &cs.credential {
                dps_operator::azure::Credential::Key(k) | dps_operator::azure::Credential::Signature(k) => {
                    k.expose().to_string()
                }
            })
            .collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
        // A failed test keeps the data and the engine's log for a post-mortem.
        if !std::thread::panicking() {
            // Every test that starts an engine doubles as a secret-hygiene check of its log.
            super::secret_scan::assert_log_clean("engine log", &self.log(), &self.keys());
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

fn spawn(data_dir: &Path, listen: &str, extra_args: &[String]) -> (Child, EngineInfo) {
    std::fs::create_dir_all(data_dir).expect("data dir is creatable");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("engine.log"))
        .expect("engine log is writable");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dps-operator"))
        .args(["engine", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", listen])
        .args(extra_args)
        // Debug logging, so the no-secrets-in-logs test sees everything the engine could print.
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("engine starts");
    let mut out = Lines::new(child.stdout.take().expect("stdout is piped"));
    let ready = out.wait_for(Duration::from_secs(60), |line| line.strip_prefix("engine ready ").map(PathBuf::from));
    let Some(path) = ready else {
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(data_dir.join("engine.log")).unwrap_or_default();
        panic!("engine did not report ready; it printed:\n{}\n{log}", out.seen.join("\n"));
    };
    let info = EngineInfo::load(&path).expect("engine.json is readable");
    (child, info)
}

/// The engine has no quotas; Azure's defaults (100 registry operations a minute) would only slow tests down.
fn local_budget() -> std::sync::Arc<RateBudget> {
    std::sync::Arc::new(RateBudget::new(1_000_000))
}

/// A port free on 127.0.0.1, and in practice on the other loopback addresses too.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").port()
}
