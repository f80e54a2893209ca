//! The device simulator: registers with DPS the way a real device does.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::azure::device_registration::{
    DeviceAuth, DeviceRegistrationClient, DeviceRegistrationOptions, GLOBAL_DEVICE_ENDPOINT, RegistrationOutcome,
};
use crate::azure::{AzureError, EngineInfo, Secret};
use crate::{Error, Result};

/// `dps-operator device ...`.
#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// Register a device with DPS (or the local engine) and print the assigned hub and device ID.
    Register(Box<RegisterArgs>),
}

/// Output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// `assigned hub=<hub> deviceId=<id>`.
    #[default]
    Text,
    /// One JSON object.
    Json,
}

/// Arguments of `device register`.
#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// Read the ID scope, device endpoint and CA from the local engine's engine.json (flags override it).
    #[arg(long)]
    pub engine_json: Option<PathBuf>,
    /// Device registration endpoint.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The DPS ID scope.
    #[arg(long)]
    pub id_scope: Option<String>,
    /// The registration ID (the certificate CN for X.509).
    #[arg(long)]
    pub registration_id: String,
    /// The device's symmetric key (base64).
    #[arg(long, env = "DPS_DEVICE_SYMMETRIC_KEY", hide_env_values = true, conflicts_with_all = ["group_key", "cert"])]
    pub symmetric_key: Option<Secret>,
    /// The enrollment group key (base64); the device key is derived from it.
    #[arg(long, env = "DPS_DEVICE_GROUP_KEY", hide_env_values = true, conflicts_with = "cert")]
    pub group_key: Option<Secret>,
    /// Client certificate chain PEM (leaf first).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key PEM.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// JSON payload sent with the registration.
    #[arg(long)]
    pub payload: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Runs a device subcommand.
pub async fn run(command: DeviceCommand) -> Result<()> {
    match command {
        DeviceCommand::Register(args) => register(*args).await,
    }
}

async fn register(args: RegisterArgs) -> Result<()> {
    let engine = args.engine_json.as_ref().map(EngineInfo::load).transpose()?;
    let id_scope = args
        .id_scope
        .clone()
        .or_else(|| engine.as_ref().map(|e| e.id_scope.clone()))
        .ok_or_else(|| usage("--id-scope (or --engine-json) is required"))?;
    let endpoint = args
        .endpoint
        .clone()
        .or_else(|| engine.as_ref().map(|e| e.device_endpoint.clone()))
        .unwrap_or_else(|| GLOBAL_DEVICE_ENDPOINT.to_owned());
    let ca_certificate_pem = match (&args.ca_cert, &engine) {
        (Some(path), _) => Some(read(path)?),
        (None, Some(engine)) => engine.ca_pem()?,
        (None, None) => None,
    };
    let auth = if let Some(key) = args.symmetric_key.clone() {
        DeviceAuth::SymmetricKey(key)
    } else if let Some(key) = args.group_key.clone() {
        DeviceAuth::GroupKey(key)
    } else if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        let key_pem = String::from_utf8(read(key)?).map_err(|_| usage("--key is not a PEM text file"))?;
        DeviceAuth::X509 { cert_chain_pem: read(cert)?, key_pem: Secret::new(key_pem) }
    } else {
        return Err(usage("one of --symmetric-key, --group-key or --cert/--key is required"));
    };
    let payload = args
        .payload
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .map_err(|e| usage(&format!("--payload is not JSON: {e}")))?;
    let options = DeviceRegistrationOptions {
        endpoint,
        ca_certificate_pem,
        deadline: Duration::from_secs(args.timeout_secs),
        ..DeviceRegistrationOptions::default()
    };
    let client = DeviceRegistrationClient::new(&id_scope, &args.registration_id, auth, options)?;
    let outcome = client.register(payload).await?;
    print_outcome(&args.registration_id, &outcome, args.output);
    if outcome.is_assigned() { Ok(()) } else { Err(Error::RegistrationRefused(refusal(&outcome))) }
}

fn print_outcome(registration_id: &str, outcome: &RegistrationOutcome, output: OutputFormat) {
    let state = &outcome.state;
    match output {
        OutputFormat::Json => {
            let value = serde_json::json!({
                "registrationId": registration_id,
                "status": outcome.status,
                "assignedHub": state.assigned_hub,
                "deviceId": state.device_id,
                "substatus": state.substatus,
                "errorCode": state.error_code,
                "errorMessage": state.error_message,
                "operationId": outcome.operation_id,
            });
            println!("{value}");
        }
        OutputFormat::Text if outcome.is_assigned() => println!(
            "assigned hub={} deviceId={}",
            state.assigned_hub.as_deref().unwrap_or("-"),
            state.device_id.as_deref().unwrap_or("-")
        ),
        OutputFormat::Text => {}
    }
}

fn refusal(outcome: &RegistrationOutcome) -> String {
    let mut text = format!("{:?}", outcome.status).to_lowercase();
    if let Some(code) = outcome.state.error_code {
        text.push_str(&format!(" (error code {code})"));
    }
    if let Some(message) = &outcome.state.error_message {
        text.push_str(&format!(": {message}"));
    }
    text
}

fn read(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })
}

fn usage(message: &str) -> Error {
    Error::Azure(AzureError::Config(message.to_owned()))
}
