//! Starts etcd + kube-apiserver + kube-controller-manager once per test binary (via
//! `deploy/local/control-plane.sh serve`), or uses the cluster named by `DPS_KUBECONFIG`.
//!
//! The script stops the processes by PID when its standard input closes, which happens when this test
//! process exits, however it exits.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

/// Environment variable naming the kubeconfig of a cluster to use instead of a local control plane.
pub const TEST_KUBECONFIG_ENV: &str = "DPS_KUBECONFIG";

struct ControlPlane {
    kubeconfig: PathBuf,
    /// Holding the child (and so its stdin pipe) keeps the control plane up until the process exits.
    _server: Option<Child>,
}

fn control_plane() -> &'static ControlPlane {
    static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();
    CONTROL_PLANE.get_or_init(|| match std::env::var_os(TEST_KUBECONFIG_ENV) {
        Some(path) => ControlPlane { kubeconfig: PathBuf::from(path), _server: None },
        None => start_local(),
    })
}

fn start_local() -> ControlPlane {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("control-plane-{}", std::process::id()));
    let mut child = Command::new(root.join("deploy/local/control-plane.sh"))
        .arg("serve")
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("control-plane.sh starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    // The script has its own deadlines; if it gives up it exits and the loop sees end of file.
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("control-plane.sh output is readable");
        if let Some(path) = line.strip_prefix("ready ") {
            return ControlPlane { kubeconfig: PathBuf::from(path), _server: Some(child) };
        }
    }
    let status = child.wait();
    panic!("control-plane.sh exited ({status:?}) before the control plane was ready; see its log above");
}

/// The kubeconfig of the cluster under test.
pub fn kubeconfig_path() -> &'static Path {
    &control_plane().kubeconfig
}

/// A client for the cluster under test, bound to the calling test's runtime.
pub async fn client() -> Client {
    client_for(kubeconfig_path()).await
}

/// A client for the cluster of the kubeconfig at `path`.
pub async fn client_for(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig is readable");
    let config =
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kubeconfig is valid");
    Client::try_from(config).expect("client builds")
}

/// `kubectl` against the cluster under test, with a discovery cache of its own: a shared cache can
/// predate the CRDs and hide their category.
pub fn kubectl() -> Command {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kubectl-cache-{}", std::process::id()))
        .join(CALLS.fetch_add(1, Ordering::Relaxed).to_string());
    let mut command = Command::new("kubectl");
    command.arg("--kubeconfig").arg(kubeconfig_path()).arg("--cache-dir").arg(cache);
    command
}

/// Installs (or updates) the operator's CRDs once per test process and waits until each is Established.
pub async fn ensure_crds(client: &Client) {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED.get_or_init(|| install_crds(client)).await;
}

/// Installs (or updates) the operator's CRDs on the cluster of `client` and waits until each is Established.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in dps_operator::api::crds() {
        let name = crd.metadata.name.clone().expect("generated CRDs are named");
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let existing = api.get(&name).await.expect("existing CRD is readable");
                let mut updated = crd.clone();
                updated.metadata.resource_version = existing.metadata.resource_version;
                if existing.spec != updated.spec {
                    api.replace(&name, &PostParams::default(), &updated).await.expect("CRD updates");
                }
            }
            Err(err) => panic!("creating CRD {name} failed: {err}"),
        }
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .unwrap_or_else(|_| panic!("CRD {name} not Established within 30s"))
            .expect("watching the CRD works");
    }
}

/// A control plane of the calling test's own (`control-plane.sh start`), so the test may restart its
/// apiserver without failing tests that share the binary's control plane. Stopped when dropped.
pub struct OwnControlPlane {
    dir: PathBuf,
    /// Its kubeconfig.
    pub kubeconfig: PathBuf,
}

impl OwnControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager in a directory named after `name`.
    pub fn start(name: &str) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("own-control-plane-{name}-{}", std::process::id()));
        let status = Command::new(root.join("deploy/local/control-plane.sh"))
            .arg("start")
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .expect("control-plane.sh runs");
        assert!(status.success(), "control-plane.sh start failed; see {}/logs", dir.display());
        let kubeconfig = dir.join("kubeconfig");
        OwnControlPlane { dir, kubeconfig }
    }

    /// Kills kube-apiserver with SIGKILL and starts it again with the same arguments (etcd keeps the state),
    /// then waits until it answers.
    pub async fn restart_apiserver(&self) {
        let pids = std::fs::read_to_string(self.dir.join("pids")).expect("pids file");
        let (pid, args) = pids
            .lines()
            .filter_map(|pid| {
                let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let args: Vec<String> = raw
                    .split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into())
                    .collect();
                args.first().is_some_and(|a| a.ends_with("kube-apiserver")).then(|| (pid.to_string(), args))
            })
            .next()
            .expect("a running kube-apiserver");
        let killed = Command::new("kill").args(["-KILL", &pid]).status();
        assert!(killed.is_ok_and(|s| s.success()), "kube-apiserver could not be killed");
        // The thread-group leader turns zombie before the last thread lets the socket go: wait for the port.
        let port = args.iter().position(|a| a == "--secure-port").and_then(|i| args.get(i + 1)).cloned();
        let port: u16 = port.and_then(|p| p.parse().ok()).expect("the apiserver's --secure-port");
        super::eventually("the killed kube-apiserver to free its port", Duration::from_secs(30), || {
            let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
            async move { free.then_some(()) }
        })
        .await;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("logs/kube-apiserver.log"))
            .expect("apiserver log");
        let child = {
            use std::os::unix::process::CommandExt as _;
            Command::new(&args[0])
                .args(&args[1..])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .process_group(0)
                .spawn()
                .expect("kube-apiserver starts again")
        };
        let mut pids_file =
            std::fs::OpenOptions::new().append(true).open(self.dir.join("pids")).expect("pids file is writable");
        std::io::Write::write_all(&mut pids_file, format!("{}\n", child.id()).as_bytes()).expect("pid recorded");
        let kubeconfig = self.kubeconfig.clone();
        super::eventually("the restarted kube-apiserver to answer", Duration::from_secs(90), || {
            let kubeconfig = kubeconfig.clone();
            async move {
                // Ready means the custom resources are served again, not only the built-in ones.
                let client = client_for(&kubeconfig).await;
                let readyz = axum::http::Request::get("/readyz").body(Vec::new()).ok()?;
                (client.request_text(readyz).await.ok()? == "ok").then_some(())?;
                let api: Api<dps_operator::api::DeviceDeprovision> = Api::all(client);
                api.list(&Default::default()).await.ok().map(|_| ())
            }
        })
        .await;
    }
}

impl Drop for OwnControlPlane {
    fn drop(&mut self) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let _ = Command::new(root.join("deploy/local/control-plane.sh")).arg("stop").arg(&self.dir).status();
    }
}
