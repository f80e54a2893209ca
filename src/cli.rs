//! Command-line interface: the subcommands of the one binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{Error, Result, api, device, engine, engine_connection, operator, telemetry};

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
    },
    /// Print the Secret and ProvisioningService that connect the operator to a local engine.
    EngineConnection(engine_connection::EngineConnectionArgs),
    /// Simulate a device (register with DPS or the local engine).
    Device {
        /// What the device does.
        #[command(subcommand)]
        command: device::DeviceCommand,
    },
}

impl Cli {
    /// Runs the chosen subcommand.
    pub async fn execute(self) -> Result<()> {
        telemetry::init(self.log_format);
        match self.command {
            Command::Run(args) => operator::run(args).await,
            Command::Engine(args) => engine::run(args.into_config()).await.map_err(|e| Error::Engine(e.to_string())),
            Command::Crds { out_dir } => print_crds(out_dir),
            Command::Device { command } => device::run(command).await,
            Command::EngineConnection(args) => engine_connection::print(&args),
        }
    }
}

/// Arguments of `dps-operator engine`.
#[derive(clap::Args, Debug)]
pub struct EngineArgs {
    /// Directory for the database, keys, certificates and engine.json.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// DPS endpoint address; hub N listens on the N-th following IP address, same port.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: std::net::SocketAddr,
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
        if let (Some(cert), Some(key), Some(ca)) = (self.tls_cert, self.tls_key, self.ca_cert) {
            cfg.tls_files = Some(engine::TlsFiles { cert, key, ca });
        }
        cfg
    }
}

fn print_crds(out_dir: Option<PathBuf>) -> Result<()> {
    for (file, crd) in api::crds() {
        let yaml = api::crd_yaml(&crd)?;
        match &out_dir {
            Some(dir) => {
                let path = dir.join(file);
                std::fs::write(&path, yaml).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
            }
            None => print!("{yaml}"),
        }
    }
    Ok(())
}
