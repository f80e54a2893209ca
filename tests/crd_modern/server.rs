//! A current CRD machinery on loopback: etcd plus the standalone `apiextensions-apiserver` (Kubernetes
//! 1.36) that deploy/local/prepare-apiextensions.sh builds. It serves only `apiextensions.k8s.io` and custom
//! resources (no namespaces, so any namespace name works for custom resources).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde_json::Value;

/// How long the apiserver gets to become ready; it takes about 2 seconds on an idle machine.
const READY_DEADLINE: Duration = Duration::from_secs(120);

/// A running etcd + apiextensions-apiserver, stopped (by PID) when dropped.
pub struct ModernApiserver {
    dir: PathBuf,
    etcd_data: PathBuf,
    children: Vec<Child>,
    base: String,
    http: reqwest::Client,
    /// A kube client authenticated with a certificate in `system:masters`.
    pub client: kube::Client,
}

/// Where prepare-apiextensions.sh caches the binary (the same default as the script).
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("DPS_APIEXTENSIONS_APISERVER") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("DPS_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"));
        base.join("dps-operator")
    });
    cache.join("apiextensions-apiserver/bin/apiextensions-apiserver")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a loopback port").local_addr().expect("local address").port()
}

fn unique_dir(parent: &Path, what: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = parent.join(format!("dps-{what}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// A CA, the apiserver's serving certificate and a client certificate in group `system:masters`.
struct Certificates {
    ca_pem: String,
    server_pem: String,
    server_key: String,
    client_pem: String,
    client_key: String,
}

fn certificates() -> Certificates {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list is valid");
    ca.distinguished_name.push(DnType::CommonName, "dps-operator-crd-test-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key generates")).expect("CA signs itself");

    let mut server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("loopback names are valid SANs");
    server.distinguished_name.push(DnType::CommonName, "apiextensions-apiserver");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().expect("key generates");
    let server_cert = server.signed_by(&server_key, &ca).expect("server certificate signed");

    // The apiserver maps the certificate's O to groups: system:masters may do anything.
    let mut client = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list is valid");
    client.distinguished_name.push(DnType::CommonName, "crd-test-admin");
    client.distinguished_name.push(DnType::OrganizationName, "system:masters");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().expect("key generates");
    let client_cert = client.signed_by(&client_key, &ca).expect("client certificate signed");

    Certificates {
        ca_pem: ca.pem(),
        server_pem: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_pem: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    }
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn spawn(command: &mut Command, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("create a log file");
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {:?}: {e}", command.get_program()))
}

impl ModernApiserver {
    /// Starts etcd and the apiserver and waits until the apiserver is ready.
    pub async fn start() -> Self {
        let binary = binary();
        assert!(
            binary.is_file(),
            "{} is missing: run deploy/local/prepare-apiextensions.sh (deploy/local/test.sh does)",
            binary.display()
        );
        let dir = unique_dir(&std::env::temp_dir(), "crd-modern");
        // etcd in memory when it can: disk syncs on a loaded 2-core machine made etcd time requests out.
        let shm = Path::new("/dev/shm");
        let etcd_data = if shm.is_dir() { unique_dir(shm, "crd-modern-etcd") } else { dir.join("etcd") };
        let mut bed = Self::launch(&binary, dir, etcd_data).await;
        bed.wait_ready().await;
        bed
    }

    async fn launch(binary: &Path, dir: PathBuf, etcd_data: PathBuf) -> Self {
        let certs = certificates();
        for (file, contents) in [
            ("ca.crt", &certs.ca_pem),
            ("server.crt", &certs.server_pem),
            ("server.key", &certs.server_key),
            ("admin.crt", &certs.client_pem),
            ("admin.key", &certs.client_key),
        ] {
            write(&dir.join(file), contents);
        }
        let (port, etcd_port, etcd_peer_port) = (free_port(), free_port(), free_port());
        let base = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.join("kubeconfig");
        write(
            &kubeconfig,
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {base}\n    certificate-authority: {d}/ca.crt\nusers:\n- name: admin\n  user:\n    client-certificate: {d}/admin.crt\n    client-key: {d}/admin.key\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: admin\ncurrent-context: local\n",
                d = dir.display()
            ),
        );

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        let mut children = vec![spawn(
            Command::new("etcd")
                .arg("--data-dir")
                .arg(&etcd_data)
                .args(["--name", "local", "--listen-client-urls", &etcd_url, "--advertise-client-urls", &etcd_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .arg(format!("--initial-cluster=local={peer_url}")),
            &dir.join("etcd.log"),
        )];
        children.push(spawn(
            Command::new(binary)
                .args(["--etcd-servers", &etcd_url, "--secure-port", &port.to_string(), "--bind-address", "127.0.0.1"])
                .arg("--tls-cert-file")
                .arg(dir.join("server.crt"))
                .arg("--tls-private-key-file")
                .arg(dir.join("server.key"))
                .arg("--client-ca-file")
                .arg(dir.join("ca.crt"))
                // The server reads its own API through these; with system:masters no review call is needed.
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("--authentication-kubeconfig")
                .arg(&kubeconfig)
                .arg("--authorization-kubeconfig")
                .arg(&kubeconfig)
                .args(["--authentication-skip-lookup", "--enable-priority-and-fairness=false"])
                // These plugins need APIs (namespaces, webhooks, policies) this server does not serve.
                .arg("--disable-admission-plugins=NamespaceLifecycle,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,MutatingAdmissionPolicy"),
            &dir.join("apiserver.log"),
        ));

        let identity = reqwest::Identity::from_pem(format!("{}{}", certs.client_pem, certs.client_key).as_bytes())
            .expect("client identity");
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(certs.ca_pem.as_bytes()).expect("CA certificate"))
            .identity(identity)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        let config = Kubeconfig::read_from(&kubeconfig).expect("kubeconfig reads");
        let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig is usable");
        let client = kube::Client::try_from(config).expect("kube client");
        Self { dir, etcd_data, children, base, http, client }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("apiserver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Plain `/readyz` never turns 200 here: its informer-sync check waits for core Services, which this
    /// server does not serve.
    async fn wait_ready(&mut self) {
        let give_up = tokio::time::Instant::now() + READY_DEADLINE;
        let url = format!("{}/readyz?exclude=informer-sync", self.base);
        loop {
            if let Ok(response) = self.http.get(&url).send().await
                && response.status().is_success()
            {
                return;
            }
            for child in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{:?} exited with {status} before the apiserver was ready:\n{}",
                        child.id(),
                        self.log_tail()
                    );
                }
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "apiserver not ready after {READY_DEADLINE:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The server's `gitVersion`, e.g. `v1.36.4`.
    pub async fn version(&self) -> String {
        let version: Value = self
            .http
            .get(format!("{}/version", self.base))
            .send()
            .await
            .expect("GET /version")
            .json()
            .await
            .expect("version JSON");
        version["gitVersion"].as_str().unwrap_or_default().to_string()
    }

    /// Creates or replaces a CRD (given as JSON) and returns the warnings the server sent with it
    /// (the `Warning` response headers, which kubectl prints as "Warning: ...").
    pub async fn apply_crd(&self, crd: &Value) -> Vec<String> {
        let name = crd["metadata"]["name"].as_str().expect("CRD has a name");
        let collection = format!("{}/apis/apiextensions.k8s.io/v1/customresourcedefinitions", self.base);
        let existing = self.http.get(format!("{collection}/{name}")).send().await.expect("GET CRD");
        let response = if existing.status().is_success() {
            let existing: Value = existing.json().await.expect("CRD JSON");
            let mut crd = crd.clone();
            crd["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"].clone();
            self.http.put(format!("{collection}/{name}")).json(&crd).send().await
        } else {
            self.http.post(&collection).json(crd).send().await
        }
        .expect("CRD write");
        let warnings = response
            .headers()
            .get_all("warning")
            .iter()
            .map(|w| String::from_utf8_lossy(w.as_bytes()).into_owned())
            .collect();
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "the apiserver refused CRD {name}: {status} {body}");
        warnings
    }

    /// Waits until the CRD is Established (its resources are served).
    pub async fn wait_established(&self, name: &str) {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let crd = api.get(name).await.expect("GET CRD");
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                return;
            }
            assert!(tokio::time::Instant::now() < give_up, "CRD {name} not Established after 60s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kept for callers that need a dry-run create (to see whether a rule is in force yet).
    pub fn dry_run() -> PostParams {
        PostParams { dry_run: true, ..Default::default() }
    }
}

impl Drop for ModernApiserver {
    fn drop(&mut self) {
        // Apiserver first, then etcd (reverse start order), each by its own PID.
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.etcd_data);
        if std::thread::panicking() {
            eprintln!("apiextensions-apiserver logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
