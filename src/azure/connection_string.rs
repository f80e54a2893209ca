//! Azure connection strings: `HostName=..;SharedAccessKeyName=..;SharedAccessKey=..`.
//!
//! The key (or pre-made signature) is held as a [`Secret`], so neither `Debug` nor `Display` of a
//! [`ConnectionString`] shows it, and parse errors name only the offending field, never a value.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::secret::Secret;

/// How a connection string authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// `SharedAccessKey=` (base64); tokens are signed from it.
    Key(Secret),
    /// `SharedAccessSignature=`: a ready-made token, used as it is until it expires.
    Signature(Secret),
}

/// A parsed service or device connection string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionString {
    /// `HostName=`: the DPS or hub host name, also the token audience.
    pub host_name: String,
    /// `SharedAccessKeyName=`: the access policy (absent in device strings).
    pub policy: Option<String>,
    /// `DeviceId=`: present in device connection strings.
    pub device_id: Option<String>,
    /// The key or the signature (exactly one).
    pub credential: Credential,
}

/// Why a connection string did not parse. Never carries a key or signature value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    /// Nothing to parse.
    #[error("connection string is empty")]
    Empty,
    /// A `;`-separated part has no `=`; the part is identified by position only.
    #[error("connection string part {0} is not of the form Name=Value")]
    Malformed(usize),
    /// The same field appears twice.
    #[error("connection string names {0} twice")]
    Duplicate(String),
    /// A required field is missing or empty.
    #[error("connection string lacks {0}")]
    Missing(&'static str),
    /// Both `SharedAccessKey` and `SharedAccessSignature` are given.
    #[error("connection string must have exactly one of SharedAccessKey and SharedAccessSignature")]
    KeyAndSignature,
    /// The key is not valid base64 (the value itself is not shown).
    #[error("SharedAccessKey is not valid base64")]
    KeyNotBase64,
    /// `SharedAccessSignature` does not start with `SharedAccessSignature `.
    #[error("SharedAccessSignature is not a SharedAccessSignature token")]
    SignatureMalformed,
}

impl ConnectionString {
    /// The whole string with its real secret, for writing it back (e.g. into engine.json). Keep it secret.
    pub fn to_secret_string(&self) -> Secret {
        let mut out = format!("HostName={}", self.host_name);
        if let Some(device) = &self.device_id {
            out.push_str(&format!(";DeviceId={device}"));
        }
        if let Some(policy) = &self.policy {
            out.push_str(&format!(";SharedAccessKeyName={policy}"));
        }
        match &self.credential {
            Credential::Key(key) => out.push_str(&format!(";SharedAccessKey={}", key.expose())),
            Credential::Signature(sig) => out.push_str(&format!(";SharedAccessSignature={}", sig.expose())),
        }
        Secret::new(out)
    }

    /// The decoded key bytes, when the string carries a key.
    pub fn key_bytes(&self) -> Option<Vec<u8>> {
        match &self.credential {
            Credential::Key(key) => STANDARD.decode(key.expose()).ok(),
            Credential::Signature(_) => None,
        }
    }
}

impl FromStr for ConnectionString {
    type Err = ConnectionStringError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut host = None;
        let mut policy = None;
        let mut device = None;
        let mut key: Option<Secret> = None;
        let mut signature: Option<Secret> = None;
        let mut any = false;
        for (index, part) in s.split(';').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            any = true;
            // Split at the first '=' only: base64 keys end in '='.
            let (name, value) = part.split_once('=').ok_or(ConnectionStringError::Malformed(index))?;
            let name = name.trim();
            let value = value.trim();
            let slot_is_set = match name {
                "HostName" => set(&mut host, value.to_owned()),
                "SharedAccessKeyName" => set(&mut policy, value.to_owned()),
                "DeviceId" => set(&mut device, value.to_owned()),
                "SharedAccessKey" => set(&mut key, Secret::new(value)),
                "SharedAccessSignature" => set(&mut signature, Secret::new(value)),
                // Tolerate fields we do not use (GatewayHostName, ModuleId, ...).
                _ => false,
            };
            if slot_is_set {
                return Err(ConnectionStringError::Duplicate(name.to_owned()));
            }
        }
        if !any {
            return Err(ConnectionStringError::Empty);
        }
        let host_name = host.filter(|h| !h.is_empty()).ok_or(ConnectionStringError::Missing("HostName"))?;
        let policy = policy.filter(|p| !p.is_empty());
        let device_id = device.filter(|d| !d.is_empty());
        let credential = match (key, signature) {
            (Some(_), Some(_)) => return Err(ConnectionStringError::KeyAndSignature),
            (None, None) => return Err(ConnectionStringError::Missing("SharedAccessKey or SharedAccessSignature")),
            (Some(key), None) => {
                if key.is_empty() {
                    return Err(ConnectionStringError::Missing("SharedAccessKey"));
                }
                if STANDARD.decode(key.expose()).is_err() {
                    return Err(ConnectionStringError::KeyNotBase64);
                }
                if policy.is_none() && device_id.is_none() {
                    return Err(ConnectionStringError::Missing("SharedAccessKeyName or DeviceId"));
                }
                Credential::Key(key)
            }
            (None, Some(sig)) => {
                if !sig.expose().starts_with("SharedAccessSignature ") {
                    return Err(ConnectionStringError::SignatureMalformed);
                }
                Credential::Signature(sig)
            }
        };
        Ok(ConnectionString { host_name, policy, device_id, credential })
    }
}

/// Stores `value` unless the slot is already taken; returns whether it was.
fn set<T>(slot: &mut Option<T>, value: T) -> bool {
    if slot.is_some() {
        return true;
    }
    *slot = Some(value);
    false
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostName={}", self.host_name)?;
        if let Some(device) = &self.device_id {
            write!(f, ";DeviceId={device}")?;
        }
        if let Some(policy) = &self.policy {
            write!(f, ";SharedAccessKeyName={policy}")?;
        }
        match &self.credential {
            Credential::Key(key) => write!(f, ";SharedAccessKey={key}"),
            Credential::Signature(sig) => write!(f, ";SharedAccessSignature={sig}"),
        }
    }
}

impl Serialize for ConnectionString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.to_secret_string().expose())
    }
}

impl<'de> Deserialize<'de> for ConnectionString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Secret::deserialize(deserializer)?;
        raw.expose().parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0LWtleS1ieXRlcy0xMjM0NTY3ODkwYWJjZGVm";

    #[test]
    fn parses_service_string() {
        let s = format!("HostName=dps.example.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={KEY}");
        let cs: ConnectionString = s.parse().expect("parses");
        assert_eq!(cs.host_name, "dps.example.net");
        assert_eq!(cs.policy.as_deref(), Some("provisioningserviceowner"));
        assert_eq!(cs.credential, Credential::Key(Secret::new(KEY)));
        assert_eq!(cs.to_secret_string().expose(), s);
        assert!(cs.key_bytes().is_some());
    }

    #[test]
    fn parses_device_string_and_signature_string() {
        let cs: ConnectionString =
            format!("HostName=hub.example.net;DeviceId=dev-1;SharedAccessKey={KEY}").parse().expect("parses");
        assert_eq!(cs.device_id.as_deref(), Some("dev-1"));
        assert_eq!(cs.policy, None);
        let sig = "SharedAccessSignature sr=hub.example.net&sig=abc%3D&se=1&skn=iothubowner";
        let cs: ConnectionString =
            format!("HostName=hub.example.net;SharedAccessKeyName=iothubowner;SharedAccessSignature={sig}")
                .parse()
                .expect("parses");
        assert_eq!(cs.credential, Credential::Signature(Secret::new(sig)));
    }

    #[test]
    fn debug_and_display_never_show_the_key() {
        let s = format!("HostName=h;SharedAccessKeyName=p;SharedAccessKey={KEY}");
        let cs: ConnectionString = s.parse().expect("parses");
        for shown in [format!("{cs:?}"), format!("{cs:#?}"), format!("{cs}")] {
            assert!(!shown.contains(KEY), "{shown}");
            assert!(shown.contains("[REDACTED]"), "{shown}");
        }
        let sig = "SharedAccessSignature sr=h&sig=TOPSECRET&se=1";
        let cs: ConnectionString = format!("HostName=h;SharedAccessSignature={sig}").parse().expect("parses");
        assert!(!format!("{cs:?}{cs}").contains("TOPSECRET"));
    }

    #[test]
    fn errors_never_echo_the_key() {
        let bad = [
            format!("HostName=h;SharedAccessKeyName=p;SharedAccessKey=!!{KEY}"),
            format!("HostName=h;SharedAccessKeyName=p;SharedAccessKey={KEY};SharedAccessKey={KEY}"),
            format!(
                "HostName=h;SharedAccessKeyName=p;SharedAccessKey={KEY};SharedAccessSignature=SharedAccessSignature {KEY}"
            ),
            format!("SharedAccessKeyName=p;SharedAccessKey={KEY}"),
            format!("HostName=h;SharedAccessKey={KEY}"),
            format!("HostName=h;{KEY}"),
            format!("HostName=h;SharedAccessSignature={KEY}"),
        ];
        for s in bad {
            let err = s.parse::<ConnectionString>().expect_err("must fail");
            assert!(!format!("{err} {err:?}").contains(KEY), "{err:?}");
        }
        assert_eq!("".parse::<ConnectionString>(), Err(ConnectionStringError::Empty));
    }

    #[test]
    fn serde_round_trip_keeps_the_key() {
        let s = format!("HostName=h;SharedAccessKeyName=p;SharedAccessKey={KEY}");
        let cs: ConnectionString = serde_json::from_value(serde_json::Value::String(s.clone())).expect("parses");
        assert_eq!(serde_json::to_value(&cs).expect("serialises"), serde_json::Value::String(s));
    }
}
