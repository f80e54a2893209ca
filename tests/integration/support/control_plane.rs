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
    let path = kubeconfig_path();
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

async fn install_crds(client: &Client) {
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
