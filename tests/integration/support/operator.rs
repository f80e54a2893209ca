//! The operator under test: `dps-operator run` as a child process serving one test namespace, with the
//! local engine connected to that namespace through `engine-connection`'s Secret and ProvisioningService.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};

use dps_operator::api::ProvisioningService;
use dps_operator::controller::health;

use super::engine::Engine;
use super::{TestNamespace, client, ensure_crds, eventually, kubeconfig_path};

/// Name of the ProvisioningService every controller test uses.
pub const SERVICE: &str = "local-dps";

/// A running operator; killed (SIGKILL) when dropped. Its log is a file, kept when the test fails.
pub struct Operator {
    child: Option<Child>,
    namespace: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Where the operator writes its log.
    pub log_path: PathBuf,
    /// Keys its log must never show (checked when it is dropped after a passing test).
    pub known_keys: Vec<String>,
    /// The cluster it serves (the shared one unless a test brings its own).
    pub kubeconfig: PathBuf,
}

impl Operator {
    /// Starts one more operator process on `namespace`, logging to its own file named after `replica`,
    /// with extra `run` arguments (leader election, say).
    pub fn start_replica(namespace: &str, replica: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_on(kubeconfig_path(), namespace, replica, args, env)
    }

    /// Like [`Operator::start_replica`], on the cluster of the kubeconfig at `kubeconfig`.
    pub fn start_on(kubeconfig: &Path, namespace: &str, replica: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{replica}-{namespace}.log"));
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let args = args.iter().map(|a| a.to_string()).collect();
        let mut operator = Operator {
            child: None,
            namespace: namespace.to_string(),
            args,
            env,
            log_path,
            known_keys: Vec::new(),
            kubeconfig: kubeconfig.to_path_buf(),
        };
        operator.spawn();
        operator
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_dps-operator"))
            .args(["run", "--watch-namespace", &self.namespace])
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,dps_operator=debug,kube_runtime=debug")
            .env("DPS_OPERATOR_METRICS_ADDR", "127.0.0.1:0")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("operator starts");
        self.child = Some(child);
    }

    /// Waits (with a deadline) for the operator to exit by itself, as a failpoint makes it; its status code.
    pub async fn wait_for_exit(&mut self, deadline: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("running");
        let status = eventually("the operator to exit", deadline, || {
            let status = child.try_wait().expect("status is readable");
            async move { status }
        })
        .await;
        self.child = None;
        status.code()
    }

    /// Starts the operator again with `env` instead of the environment it had (an empty slice clears it).
    pub fn restart_with(&mut self, env: &[(&str, &str)]) {
        self.kill();
        self.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.spawn();
    }

    /// Sends SIGTERM, as Kubernetes does when it stops a pod, and waits (with a deadline) for the exit code.
    pub async fn terminate(&mut self, deadline: Duration) -> Option<i32> {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "SIGTERM could not be sent");
        self.wait_for_exit(deadline).await
    }

    /// SIGKILL now, as a node failure would; nothing is flushed or released (the lease included).
    pub fn kill_now(&mut self) {
        self.kill();
    }

    /// The process ID, while it runs (the fleet benchmark reads the operator's memory through it).
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit code if the operator has exited by itself (`Some(None)`: killed by a signal).
    pub fn exit_code(&mut self) -> Option<Option<i32>> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten().map(|status| status.code())
    }

    /// Everything the operator logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The address of `/metrics`, `/healthz` and `/readyz`, read from the operator's start-up log line.
    pub async fn metrics_address(&self) -> std::net::SocketAddr {
        eventually("the operator to log its metrics address", Duration::from_secs(30), || {
            let address = self.log().lines().find_map(logged_metrics_address);
            async move { address }
        })
        .await
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("operator log ({}):\n{}", self.log_path.display(), self.log());
        } else {
            // Every controller test doubles as a secret-hygiene check of the operator's log.
            super::secret_scan::assert_log_clean("operator log", &self.log(), &self.known_keys);
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

/// A controller test bed: an engine, a fresh namespace connected to it, and the operator serving it.
pub struct Bed {
    /// The local engine.
    pub engine: Engine,
    /// The Kubernetes client.
    pub client: Client,
    /// The test namespace.
    pub ns: TestNamespace,
    /// The operator.
    pub operator: Operator,
}

impl Bed {
    /// Starts everything and waits until the ProvisioningService is Ready.
    pub async fn start(prefix: &str) -> Self {
        Self::start_with(prefix, &[]).await
    }

    /// Like [`Bed::start`], with extra environment for the operator.
    pub async fn start_with(prefix: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with_args(prefix, &[], env).await
    }

    /// Like [`Bed::start_with`], with extra `run` arguments for the operator.
    pub async fn start_with_args(prefix: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let client = client().await;
        ensure_crds(&client).await;
        Self::start_in(client, kubeconfig_path(), prefix, args, env).await
    }

    /// Like [`Bed::start_with_args`], on the cluster of `client` and `kubeconfig` (CRDs already installed).
    pub async fn start_in(
        client: Client,
        kubeconfig: &Path,
        prefix: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let engine = Engine::start();
        let ns = TestNamespace::create(&client, prefix).await;
        let (secret, service) =
            dps_operator::engine_connection::manifests(&engine.info, SERVICE).expect("engine-connection manifests");
        Api::<Secret>::namespaced(client.clone(), &ns.name)
            .create(&PostParams::default(), &secret)
            .await
            .expect("Secret");
        Api::<ProvisioningService>::namespaced(client.clone(), &ns.name)
            .create(&PostParams::default(), &service)
            .await
            .expect("ProvisioningService");
        let mut operator = Operator::start_on(kubeconfig, &ns.name, "operator", args, env);
        operator.known_keys = engine.keys();
        let bed = Bed { engine, client, ns, operator };
        bed.wait_ready::<ProvisioningService>(SERVICE).await;
        bed
    }

    /// An `Api` for `K` in the test namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: crate::support::Namespaced,
    {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    /// Waits until `name` has condition `type_` with `status` ("True"/"False") at its current generation.
    pub async fn wait_condition<K>(&self, name: &str, type_: &str, status: &str) -> K
    where
        K: crate::support::Namespaced,
    {
        let api = self.api::<K>();
        let what = format!("{} {name} to have {type_}={status}", K::kind(&()));
        eventually(&what, Duration::from_secs(60), || {
            let api = api.clone();
            async move {
                let obj = api.get_opt(name).await.ok().flatten()?;
                let value = serde_json::to_value(&obj).ok()?;
                let generation = value.pointer("/metadata/generation").and_then(serde_json::Value::as_i64);
                let conditions = value.pointer("/status/conditions")?.as_array()?.clone();
                let observed = value.pointer("/status/observedGeneration").and_then(serde_json::Value::as_i64);
                let hit = conditions.iter().any(|c| c["type"] == type_ && c["status"] == status);
                (hit && observed == generation).then_some(obj)
            }
        })
        .await
    }

    /// Waits until `name` is Ready=True.
    pub async fn wait_ready<K>(&self, name: &str) -> K
    where
        K: crate::support::Namespaced,
    {
        self.wait_condition::<K>(name, health::READY, "True").await
    }

    /// Waits until `name` no longer exists.
    pub async fn wait_gone<K>(&self, name: &str)
    where
        K: crate::support::Namespaced,
    {
        let api = self.api::<K>();
        let what = format!("{} {name} to be deleted", K::kind(&()));
        eventually(&what, Duration::from_secs(60), || {
            let api = api.clone();
            async move { matches!(api.get_opt(name).await, Ok(None)).then_some(()) }
        })
        .await
    }
}

/// The `address` field of the "serving metrics" line, in text (possibly coloured) or JSON format.
fn logged_metrics_address(line: &str) -> Option<std::net::SocketAddr> {
    if !line.contains("serving metrics and health probes") {
        return None;
    }
    let plain = super::process::strip_colours(line);
    let rest = plain.split_once("address=").or_else(|| plain.split_once("\"address\":\""))?.1;
    rest.split(|c: char| c.is_whitespace() || c == '"').next()?.parse().ok()
}
