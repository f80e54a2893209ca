//! Command-line interface: the subcommands of the one binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{Error, Result, api, device, engine_connection, operator, telemetry};

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
            Command::Crds { out_dir } => print_crds(out_dir),
            Command::Device { command } => device::run(command).await,
            Command::EngineConnection(args) => engine_connection::print(&args),
        }
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
