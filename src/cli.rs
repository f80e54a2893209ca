//! Command-line interface: the subcommands of the one binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{
    Error, Result, api, audit, chart_crds, device, engine, engine_connection, export, operator, revoke, telemetry,
};

/// Kubernetes operator for Azure IoT Hub Device Provisioning Service enrollments.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text", env = "DPS_OPERATOR_LOG_FORMAT")]
    pub log_format: telemetry::LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster config).
    Run(operator::RunArgs),
    /// Run the local engine: DPS service + device registration APIs and IoT Hub registries over HTTPS.
    Engine(EngineArgs),
    /// Print every CRD as YAML, or write one file per kind into a directory.
    Crds {
        /// Write `<kind>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Also write the Helm chart's CRD templates (`<kind>.yaml`) into this directory.
        #[arg(long)]
        chart_templates_dir: Option<PathBuf>,
    },
    /// Print the Secret and ProvisioningService that connect the operator to a local engine.
    EngineConnection(engine_connection::EngineConnectionArgs),
    /// Simulate a device (register with DPS or the local engine).
    Device {
        /// What the device does.
        #[command(subcommand)]
        command: device::DeviceCommand,
    },
    /// List DPS entries and hub devices no resource owns, and resources whose entry is missing.
    Audit(audit::AuditArgs),
    /// Revoke one device now: create its DeviceDeprovision and follow it to Completed (or print it).
    Revoke(revoke::RevokeArgs),
    /// Write a manifest per DPS entry and group, marked for adoption (onboarding an existing DPS to GitOps).
    Export(export::ExportArgs),
}

/// The file name kubectl looks for on PATH to run `kubectl dps ...` (its plugin naming).
pub const KUBECTL_PLUGIN_NAME: &str = "kubectl-dps";

impl Cli {
    /// Parses the process's arguments. Installed (or linked) as `kubectl-dps`, kubectl runs the binary
    /// for `kubectl dps ...` with the words after `dps`, which are the same subcommands; only help and
    /// usage text change, to name the command as the user typed it.
    pub fn from_env() -> Self {
        let mut args = std::env::args_os();
        let program = args.next().unwrap_or_default();
        Self::parse_as(program, args)
    }

    /// Parses `args` for the program named `program` (its path as run; see [`Self::from_env`]).
    pub fn parse_as(
        program: impl Into<std::ffi::OsString>,
        args: impl IntoIterator<Item = std::ffi::OsString>,
    ) -> Self {
        let program: std::ffi::OsString = program.into();
        let plugin = std::path::Path::new(&program).file_name().is_some_and(|n| n == KUBECTL_PLUGIN_NAME);
        let mut command = <Self as clap::CommandFactory>::command();
        if plugin {
            command = command.bin_name("kubectl dps");
        }
        let matches = command.get_matches_from(std::iter::once(program).chain(args));
        match <Self as clap::FromArgMatches>::from_arg_matches(&matches) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        }
    }

    /// Runs the chosen subcommand.
    pub async fn execute(self) -> Result<()> {
        telemetry::init(self.log_format);
        match self.command {
            Command::Run(args) => operator::run(args).await,
            Command::Engine(args) => engine::run(args.into_config()).await.map_err(|e| Error::Engine(e.to_string())),
            Command::Crds { out_dir, chart_templates_dir } => print_crds(out_dir, chart_templates_dir),
            Command::Device { command } => device::run(command).await,
            Command::EngineConnection(args) => engine_connection::print(&args),
            Command::Audit(args) => audit::run(args).await,
            Command::Revoke(args) => revoke::run(args).await,
            Command::Export(args) => export::run(args).await,
        }
    }
}

/// Arguments of `dps-operator engine`.
#[derive(clap::Args, Debug)]
pub struct EngineArgs {
    /// Directory for the database, keys, certificates and engine.json.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// DPS endpoint address; hub N listens on the N-th following IP address, same port (unless host names
    /// are advertised: then every endpoint is served here, told apart by TLS SNI and Host header).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: std::net::SocketAddr,
    /// ENDPOINT=HOST: engine.json names endpoint `dps` or a hub by this DNS name (SAS audience, HostName,
    /// certificate name) and the engine routes it by that name (repeat the flag).
    #[arg(long = "advertise-host", value_name = "ENDPOINT=HOST", value_parser = parse_advertised_host)]
    pub advertise_hosts: Vec<(String, String)>,
    /// Names every endpoint without an --advertise-host as `dps.DOMAIN` and `HUB.DOMAIN`.
    #[arg(long, value_name = "DOMAIN")]
    pub advertise_domain: Option<String>,
    /// The port engine.json tells clients to connect to (e.g. a Service port), when not the listen port.
    #[arg(long, value_name = "PORT")]
    pub advertise_port: Option<u16>,
    /// Hub names, in order (repeat the flag); default hub1 and hub2.
    #[arg(long = "hub")]
    pub hubs: Vec<String>,
    /// ID scope (generated once and kept in the data directory when omitted).
    #[arg(long)]
    pub id_scope: Option<String>,
    /// Behave like an Azure quota: beyond this many requests a minute per endpoint, answer 429 with
    /// Retry-After (off by default).
    #[arg(long)]
    pub throttle_per_minute: Option<u32>,
    /// Server certificate chain (PEM) instead of a generated one; needs --tls-key and --ca-cert.
    #[arg(long, requires_all = ["tls_key", "ca_cert"])]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, requires_all = ["tls_cert", "ca_cert"])]
    pub tls_key: Option<PathBuf>,
    /// CA certificate clients should trust (PEM), reported in engine.json.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub ca_cert: Option<PathBuf>,
    /// Directory with a connection string per endpoint (files `dps` and one per hub, e.g. a mounted
    /// Secret): their keys are used instead of generated ones.
    #[arg(long, value_name = "DIR")]
    pub keys_dir: Option<PathBuf>,
    /// Inject faults (testing only; repeat the flag, the first rule naming a request's API applies):
    /// comma-separated KEY=VALUE, keys as in `PUT /engine/faults`, e.g.
    /// `api=hub-registry,errorRate=0.2,status=429,retryAfterSeconds=2,latencyMs=100,dropRate=0.05,dropAfterApplyRate=0.05`.
    #[arg(long = "fault", value_name = "RULE", value_parser = engine::faults::FaultRule::parse_flag)]
    pub faults: Vec<engine::faults::FaultRule>,
    /// Seed of the fault draws: the same seed and the same requests give the same faults.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub fault_seed: u64,
}

impl EngineArgs {
    /// The engine configuration these arguments describe.
    pub fn into_config(self) -> engine::EngineConfig {
        let mut cfg = engine::EngineConfig::new(self.data_dir);
        cfg.listen = self.listen;
        if !self.hubs.is_empty() {
            cfg.hubs = self.hubs;
        }
        cfg.id_scope = self.id_scope;
        cfg.throttle_per_minute = self.throttle_per_minute;
        cfg.keys_dir = self.keys_dir;
        cfg.faults = engine::faults::FaultPlan { rules: self.faults, seed: self.fault_seed };
        cfg.advertise = engine::routing::Advertise {
            hosts: self.advertise_hosts.into_iter().collect(),
            domain: self.advertise_domain,
            port: self.advertise_port,
        };
        if let (Some(cert), Some(key), Some(ca)) = (self.tls_cert, self.tls_key, self.ca_cert) {
            cfg.tls_files = Some(engine::TlsFiles { cert, key, ca });
        }
        cfg
    }
}

fn parse_advertised_host(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((endpoint, host)) if !endpoint.is_empty() && !host.is_empty() => {
            Ok((endpoint.to_string(), host.to_string()))
        }
        _ => Err(format!("expected ENDPOINT=HOST (e.g. dps=dps.engine.svc), got '{text}'")),
    }
}

fn print_crds(out_dir: Option<PathBuf>, chart_templates_dir: Option<PathBuf>) -> Result<()> {
    for (file, crd) in api::crds() {
        if let Some(dir) = &chart_templates_dir {
            let path = dir.join(file);
            let template = chart_crds::crd_template(&crd)?;
            std::fs::write(&path, template).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        }
        let yaml = api::crd_yaml(&crd)?;
        match &out_dir {
            Some(dir) => {
                let path = dir.join(file);
                std::fs::write(&path, yaml).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
            }
            None if chart_templates_dir.is_none() => print!("{yaml}"),
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_flags_become_the_engines_host_names() {
        let cli = Cli::try_parse_from([
            "dps-operator",
            "engine",
            "--data-dir",
            "/tmp/x",
            "--advertise-host",
            "dps=dps.engine.svc",
            "--advertise-host",
            "hub1=hub1.engine.svc",
            "--advertise-domain",
            "example.org",
            "--advertise-port",
            "443",
        ])
        .expect("parses");
        let Command::Engine(args) = cli.command else { panic!("not the engine command") };
        let advertise = args.into_config().advertise;
        assert_eq!(advertise.hosts.get("dps").map(String::as_str), Some("dps.engine.svc"));
        assert_eq!(advertise.hosts.get("hub1").map(String::as_str), Some("hub1.engine.svc"));
        assert_eq!(advertise.domain.as_deref(), Some("example.org"));
        assert_eq!(advertise.port, Some(443));
        let bad = Cli::try_parse_from(["dps-operator", "engine", "--data-dir", "/x", "--advertise-host", "dps"]);
        assert!(bad.is_err(), "ENDPOINT=HOST is required");
    }

    #[test]
    fn fault_flags_become_the_engines_fault_plan() {
        let cli = Cli::try_parse_from([
            "dps-operator",
            "engine",
            "--data-dir",
            "/tmp/x",
            "--fault",
            "api=hub-registry,errorRate=0.25,status=429,retryAfterSeconds=2",
            "--fault",
            "dropAfterApplyRate=0.1",
            "--fault-seed",
            "42",
        ])
        .expect("parses");
        let Command::Engine(args) = cli.command else { panic!("not the engine command") };
        let plan = args.into_config().faults;
        assert_eq!(plan.seed, 42);
        assert_eq!(plan.rules.len(), 2);
        assert_eq!(plan.rules[0].api, engine::faults::Api::HubRegistry);
        assert_eq!((plan.rules[0].status, plan.rules[0].retry_after_seconds), (429, Some(2)));
        assert_eq!(plan.rules[1].drop_after_apply_rate, 0.1);
        let bad = Cli::try_parse_from(["dps-operator", "engine", "--data-dir", "/x", "--fault", "errorRate=2"]);
        assert!(bad.is_err(), "a rate above 1 is refused");
    }
}
