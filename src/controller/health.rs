//! What one reconcile concluded, and the kstatus conditions (`Ready`, `Reconciling`, `Stalled`) that say
//! so to `kubectl wait`, Flux and Argo CD.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::Error;
use crate::azure::AzureError;

/// Condition type: the outside world matches the spec.
pub const READY: &str = "Ready";
/// Condition type: work is in progress (including deletion steps).
pub const RECONCILING: &str = "Reconciling";
/// Condition type: no progress without a person's change.
pub const STALLED: &str = "Stalled";

/// The state a reconcile leaves a resource in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Ready=True.
    Ready {
        /// PascalCase reason.
        reason: &'static str,
        /// What is true now.
        message: String,
    },
    /// Ready=False, Reconciling=True: work in progress or a transient failure being retried.
    Progressing {
        /// PascalCase reason.
        reason: &'static str,
        /// What is happening.
        message: String,
    },
    /// Ready=False, Stalled=True: a person must change something.
    Stalled {
        /// PascalCase reason.
        reason: &'static str,
        /// What to fix.
        message: String,
    },
}

impl Health {
    /// Ready with a reason and message.
    pub fn ready(reason: &'static str, message: impl Into<String>) -> Self {
        Health::Ready { reason, message: message.into() }
    }

    /// In progress with a reason and message.
    pub fn progressing(reason: &'static str, message: impl Into<String>) -> Self {
        Health::Progressing { reason, message: message.into() }
    }

    /// Stalled with a reason and message.
    pub fn stalled(reason: &'static str, message: impl Into<String>) -> Self {
        Health::Stalled { reason, message: message.into() }
    }

    /// How an error leaves the resource: bad input and rejected credentials stall it, everything else is
    /// retried (throttling, outages, a dependency not ready yet).
    pub fn from_error(err: &Error) -> Self {
        let message = err.to_string();
        match err {
            Error::Invalid { reason, .. } => Health::Stalled { reason, message },
            Error::Waiting { reason, .. } => Health::Progressing { reason, message },
            Error::Azure(azure) => match azure {
                AzureError::Unauthorized(_) => Health::Stalled { reason: "CredentialsRejected", message },
                AzureError::Invalid(_) => Health::Stalled { reason: "RequestRejected", message },
                AzureError::Conflict(_) => Health::Stalled { reason: "Conflict", message },
                AzureError::Config(_) | AzureError::ConnectionString(_) | AzureError::Sas(_) => {
                    Health::Stalled { reason: "BadCredentials", message }
                }
                other => Health::Progressing { reason: other.reason(), message },
            },
            other => Health::Progressing { reason: other.reason(), message },
        }
    }

    /// The kstatus conditions for this health at `generation`, keeping each condition's
    /// `lastTransitionTime` from `previous` unless its status flips (so unchanged status is a no-op patch).
    pub fn conditions(&self, generation: Option<i64>, previous: &[Condition]) -> Vec<Condition> {
        let (ready, reconciling, stalled, reason, message) = match self {
            Health::Ready { reason, message } => (true, false, false, *reason, message.as_str()),
            Health::Progressing { reason, message } => (false, true, false, *reason, message.as_str()),
            Health::Stalled { reason, message } => (false, false, true, *reason, message.as_str()),
        };
        vec![
            condition(READY, ready, reason, message, generation, previous),
            condition(
                RECONCILING,
                reconciling,
                if reconciling { reason } else { "Idle" },
                msg(reconciling, message),
                generation,
                previous,
            ),
            condition(
                STALLED,
                stalled,
                if stalled { reason } else { "NotStalled" },
                msg(stalled, message),
                generation,
                previous,
            ),
        ]
    }

    /// The PascalCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Health::Ready { reason, .. } | Health::Progressing { reason, .. } | Health::Stalled { reason, .. } => {
                reason
            }
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Health::Ready { message, .. } | Health::Progressing { message, .. } | Health::Stalled { message, .. } => {
                message
            }
        }
    }
}

/// The message of a condition that is not active; never empty (the apiserver refuses a null message).
fn msg(active: bool, message: &str) -> &str {
    if active { message } else { "-" }
}

/// One condition, keeping the previous transition time while its status is unchanged.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(now);
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: if message.is_empty() { "-".to_string() } else { message.to_string() },
        observed_generation: generation,
        last_transition_time,
    }
}

/// The current time, to the second (what the apiserver stores), so a re-read status compares equal.
pub fn now() -> Time {
    let second = jiff::Timestamp::now().as_second();
    Time(jiff::Timestamp::from_second(second).unwrap_or_else(|_| jiff::Timestamp::now()))
}

/// Whether a resource was already Stalled at `generation`: the same complaint again is not worth a new
/// Warning event.
pub fn already_stalled(conditions: &[Condition], observed: Option<i64>, generation: Option<i64>) -> bool {
    is_true(conditions, STALLED) && observed == generation
}

/// Whether `conditions` hold `type_` with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_health_keeps_the_transition_times() {
        let first = Health::ready("EntryInSync", "ok").conditions(Some(1), &[]);
        let again = Health::ready("EntryInSync", "ok").conditions(Some(1), &first);
        assert_eq!(first, again);
    }

    #[test]
    fn bad_input_stalls_and_outages_are_retried() {
        let stalled = Health::from_error(&Error::invalid("SecretNotFound", "Secret x not found"));
        assert!(matches!(stalled, Health::Stalled { reason: "SecretNotFound", .. }));
        let waiting = Health::from_error(&Error::waiting("ProvisioningServiceNotReady", "dps not ready"));
        assert!(matches!(waiting, Health::Progressing { .. }));
        let conds = stalled.conditions(Some(3), &[]);
        assert!(is_true(&conds, STALLED) && !is_true(&conds, READY) && !is_true(&conds, RECONCILING));
        assert!(conds.iter().all(|c| c.observed_generation == Some(3)));
    }
}
