#![forbid(unsafe_code)]

use dps_operator::cli::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match Cli::from_env().execute().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "dps-operator failed");
            eprintln!("dps-operator: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
