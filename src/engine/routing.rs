//! Which endpoint (DPS or a hub) serves a connection or a request.
//!
//! By address (the default): every endpoint has its own listener, and whatever arrives there is its.
//! By name (`--advertise-host`, `--advertise-domain`): every endpoint is reached on the one listen address
//! under its own DNS name, as behind a single Kubernetes Service. The TLS SNI picks the endpoint of a
//! connection (and so whether a client certificate is asked for); a request's `Host` header naming another
//! endpoint wins for that request. Clients that send neither a known SNI nor a known `Host` (IP hosts send no
//! SNI) reach the listener's own endpoint: DPS on the listen address.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use axum::http::HeaderValue;

/// What `--advertise-host dps=NAME` calls the DPS endpoint (hubs are called by their hub names).
pub const DPS_ENDPOINT: &str = "dps";

/// DNS names for engine.json instead of endpoint IP addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertise {
    /// Explicit names: `dps` or a hub name -> DNS host name.
    pub hosts: BTreeMap<String, String>,
    /// Names every endpoint without an explicit one: `dps.<domain>`, `<hub>.<domain>`.
    pub domain: Option<String>,
    /// The port clients connect to (a Service port), when it is not the listen port.
    pub port: Option<u16>,
}

impl Advertise {
    /// The host names of the DPS endpoint and of each hub, in that order; `None` when no name is advertised
    /// (routing by address). Every endpoint must get exactly one distinct name.
    pub fn names(&self, hubs: &[String]) -> Result<Option<Vec<String>>, String> {
        if self.hosts.is_empty() && self.domain.is_none() {
            return Ok(None);
        }
        if hubs.iter().any(|h| h == DPS_ENDPOINT) {
            return Err(format!("a hub cannot be called '{DPS_ENDPOINT}' when host names are advertised"));
        }
        if let Some(unknown) = self.hosts.keys().find(|k| *k != DPS_ENDPOINT && !hubs.contains(k)) {
            return Err(format!("--advertise-host names '{unknown}', which is neither '{DPS_ENDPOINT}' nor a hub"));
        }
        let mut names = Vec::with_capacity(hubs.len() + 1);
        for endpoint in std::iter::once(DPS_ENDPOINT).chain(hubs.iter().map(String::as_str)) {
            let name = match (self.hosts.get(endpoint), &self.domain) {
                (Some(host), _) => host.clone(),
                (None, Some(domain)) => format!("{endpoint}.{domain}"),
                (None, None) => return Err(format!("no host name is advertised for '{endpoint}'")),
            };
            let name = name.to_ascii_lowercase();
            check_dns_name(&name)?;
            if names.contains(&name) {
                return Err(format!("two endpoints are advertised as '{name}'"));
            }
            names.push(name);
        }
        Ok(Some(names))
    }
}

/// A bare DNS name: what a connection string's `HostName`, a SAS audience, SNI and a certificate's DNS SAN
/// can all carry (no port, no scheme, not an IP address: SNI never carries addresses).
fn check_dns_name(name: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || name.parse::<IpAddr>().is_ok() || !name.split('.').all(label_ok) {
        return Err(format!("'{name}' is not a DNS host name"));
    }
    Ok(())
}

/// One endpoint: its request router and its TLS configuration.
#[derive(Clone)]
pub struct Endpoint {
    /// The endpoint's API (with its error shape and throttle).
    pub router: axum::Router,
    /// DPS asks for a client certificate; hubs do not.
    pub tls: Arc<rustls::ServerConfig>,
}

/// Every endpoint, and the host names that reach each.
pub struct Routes {
    endpoints: Vec<Endpoint>,
    by_name: HashMap<String, usize>,
}

impl Routes {
    /// `names[i]` (lower-case) reaches `endpoints[i]`; with no names, routing is by listener only.
    pub fn new(endpoints: Vec<Endpoint>, names: &[String]) -> Self {
        let by_name = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        Routes { endpoints, by_name }
    }

    /// Endpoint `index`. Indices come from the engine's own listeners and names, so they are in range.
    pub fn endpoint(&self, index: usize) -> Option<&Endpoint> {
        self.endpoints.get(index)
    }

    /// The endpoint a TLS SNI names.
    pub fn by_sni(&self, server_name: &str) -> Option<usize> {
        self.by_name.get(&server_name.to_ascii_lowercase()).copied()
    }

    /// The endpoint a `Host` header (`name` or `name:port`) names.
    pub fn by_host_header(&self, value: &HeaderValue) -> Option<usize> {
        if self.by_name.is_empty() {
            return None;
        }
        let host = value.to_str().ok()?;
        // A bracketed IPv6 literal never names an endpoint; anything else may carry a port.
        let name = if host.starts_with('[') { host } else { host.rsplit_once(':').map_or(host, |(n, _)| n) };
        self.by_name.get(&name.to_ascii_lowercase()).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hubs() -> Vec<String> {
        vec!["hub1".into(), "hub2".into()]
    }

    #[test]
    fn no_advertised_names_means_routing_by_address() {
        assert_eq!(Advertise::default().names(&hubs()), Ok(None));
    }

    #[test]
    fn a_domain_names_every_endpoint_and_explicit_hosts_override_it() {
        let advertise = Advertise {
            hosts: BTreeMap::from([("hub2".into(), "Other.Example".into())]),
            domain: Some("engine.svc".into()),
            port: None,
        };
        let names = advertise.names(&hubs()).expect("valid").expect("named");
        assert_eq!(names, ["dps.engine.svc", "hub1.engine.svc", "other.example"]);
    }

    #[test]
    fn advertised_names_must_cover_every_endpoint_once_and_be_dns_names() {
        let hosts = |pairs: &[(&str, &str)]| Advertise {
            hosts: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Advertise::default()
        };
        let all = [("dps", "d.x"), ("hub1", "h1.x"), ("hub2", "h2.x")];
        assert!(hosts(&all).names(&hubs()).is_ok());
        assert!(hosts(&all[..2]).names(&hubs()).is_err(), "hub2 has no name");
        assert!(hosts(&[("dps", "d.x"), ("hub1", "d.x"), ("hub2", "h2.x")]).names(&hubs()).is_err(), "duplicate");
        assert!(hosts(&[("dps", "d.x"), ("hub1", "h1.x"), ("hub2", "h2.x"), ("hub3", "h3.x")]).names(&hubs()).is_err());
        for bad in ["127.0.0.1", "d.x:443", "https://d.x", "-d.x", "d..x", "d;x"] {
            assert!(hosts(&[("dps", bad), ("hub1", "h1.x"), ("hub2", "h2.x")]).names(&hubs()).is_err(), "{bad}");
        }
        let domain = Advertise { domain: Some("x".into()), ..Advertise::default() };
        assert!(domain.names(&["dps".into()]).is_err(), "a hub called dps would be ambiguous");
    }

    #[test]
    fn host_headers_name_endpoints_with_or_without_a_port() {
        let routes = Routes::new(Vec::new(), &["dps.x".into(), "hub1.x".into()]);
        let host = |v: &'static str| routes.by_host_header(&HeaderValue::from_static(v));
        assert_eq!(host("dps.x"), Some(0));
        assert_eq!(host("HUB1.x:8443"), Some(1));
        assert_eq!(host("127.0.0.1:8443"), None);
        assert_eq!(host("[::1]:8443"), None);
        assert_eq!(routes.by_sni("Hub1.X"), Some(1));
        assert_eq!(Routes::new(Vec::new(), &[]).by_host_header(&HeaderValue::from_static("dps.x")), None);
    }
}
