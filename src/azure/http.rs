//! The HTTP layer shared by the clients: one reqwest client (rustls), SAS header, base-URL override,
//! retries, rate budget, paging and etag quoting.

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::AzureError;
use super::rate::RateBudget;
use super::retry::RetryPolicy;
use super::sas::TokenCache;
use super::wire::QuerySpecification;

/// Request header naming the page size of a query.
pub const MAX_ITEM_COUNT: &str = "x-ms-max-item-count";
/// Request and response header carrying the query continuation token.
pub const CONTINUATION: &str = "x-ms-continuation";

/// Characters escaped inside one path segment (IDs may hold `%`, `?`, `#`, spaces and the like).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// Escapes an ID for use as one URL path segment.
pub fn path_segment(id: &str) -> String {
    utf8_percent_encode(id, SEGMENT).to_string()
}

/// Quotes an etag for `If-Match` unless it is `*` or already quoted (`"..."` or `W/"..."`).
pub fn quote_etag(etag: &str) -> String {
    let etag = etag.trim();
    let quoted = etag.len() >= 2 && etag.starts_with('"') && etag.ends_with('"');
    if etag == "*" || quoted || etag.starts_with("W/\"") { etag.to_owned() } else { format!("\"{etag}\"") }
}

/// Options common to the service clients.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Send requests here (e.g. `https://127.0.0.1:8443`) instead of `https://{HostName}`; the token audience
    /// stays the connection string's host name.
    pub endpoint: Option<String>,
    /// Extra CA certificates (PEM bundle) trusted on top of the system roots.
    pub ca_certificate_pem: Option<Vec<u8>>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Operations-per-minute budget; `None` uses the service's default quota (a budget of its own).
    pub rate_budget: Option<Arc<RateBudget>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            endpoint: None,
            ca_certificate_pem: None,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            rate_budget: None,
        }
    }
}

/// Builds the one reqwest client: rustls, HTTPS only, system + bundled roots plus `ca_pem`, and an optional
/// TLS client identity (X.509 device registration).
pub fn build_client(
    ca_pem: Option<&[u8]>,
    identity: Option<reqwest::Identity>,
    timeout: Duration,
) -> Result<reqwest::Client, AzureError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(true)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .user_agent(concat!("dps-operator/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| AzureError::Config(format!("CA bundle is not PEM: {}", e.without_url())))?;
        if certs.is_empty() {
            return Err(AzureError::Config("CA bundle holds no certificate".into()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().map_err(|e| AzureError::Config(format!("cannot build the HTTP client: {}", e.without_url())))
}

/// Normalises a base URL: `https://host[:port]` without a trailing slash. A bare host gets `https://`.
pub fn base_url(endpoint: Option<&str>, host: &str) -> Result<String, AzureError> {
    let raw = endpoint.map(str::trim).filter(|e| !e.is_empty()).unwrap_or(host);
    let with_scheme = if raw.contains("://") { raw.to_owned() } else { format!("https://{raw}") };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| AzureError::Config(format!("endpoint {raw:?}: {e}")))?;
    if url.scheme() != "https" || url.host_str().is_none() {
        return Err(AzureError::Config(format!("endpoint {raw:?} must be an https:// URL")));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A page of query results and the token for the next one (`None` at the end).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// `x-ms-continuation` of the answer.
    pub continuation: Option<String>,
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, AzureError> {
        serde_json::from_slice(&self.body).map_err(|e| AzureError::Decode(e.to_string()))
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
    }
}

/// One request before it is sent.
pub(crate) struct Request {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
    pub cost: u32,
}

impl Request {
    pub(crate) fn new(method: Method, path: String) -> Self {
        Request { method, path, headers: Vec::new(), body: None, cost: 1 }
    }

    pub(crate) fn json(mut self, body: &impl Serialize) -> Result<Self, AzureError> {
        self.body = Some(serde_json::to_vec(body).map_err(|e| AzureError::Config(format!("cannot encode body: {e}")))?);
        Ok(self)
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Whether the request only reads: a GET, or one of the POSTs that query or fetch attestation keys.
    pub(crate) fn is_read(&self) -> bool {
        self.method == Method::GET
            || (self.method == Method::POST
                && (self.path.ends_with("/query") || self.path.ends_with("/attestationmechanism")))
    }

    pub(crate) fn cost(mut self, cost: usize) -> Self {
        self.cost = u32::try_from(cost).unwrap_or(u32::MAX).max(1);
        self
    }
}

/// The transport of one client: where, how authenticated, how retried and rate limited.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    client: reqwest::Client,
    base: String,
    api_version: &'static str,
    tokens: Option<Arc<TokenCache>>,
    retry: RetryPolicy,
    rate: Option<Arc<RateBudget>>,
}

impl Transport {
    pub(crate) fn new(
        client: reqwest::Client,
        base: String,
        api_version: &'static str,
        tokens: Option<Arc<TokenCache>>,
        retry: RetryPolicy,
        rate: Option<Arc<RateBudget>>,
    ) -> Self {
        Transport { client, base, api_version, tokens, retry, rate }
    }

    /// The base URL requests go to.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Sends with retries; returns the answer for any status that is not retried (the caller maps it).
    pub(crate) async fn send_raw(&self, request: &Request) -> Result<Answer, AzureError> {
        let mut retry = 0u32;
        loop {
            if let Some(rate) = &self.rate {
                rate.acquire(request.cost, request.is_read()).await;
            }
            let started = std::time::Instant::now();
            let outcome = self.send_once(request).await;
            if let Some(metrics) = crate::metrics::global() {
                let operation = super::operation::operation_name(request.method.as_str(), &request.path);
                let status = outcome.as_ref().ok().map(|answer| answer.status.as_u16());
                metrics.backend_call(operation, status, started.elapsed());
            }
            let err = match outcome {
                Ok(answer) if !is_retryable_status(answer.status) => return Ok(answer),
                Ok(answer) => AzureError::from_response(answer.status, &answer.headers, &answer.body),
                Err(err) => err,
            };
            if !err.is_retryable() {
                return Err(err);
            }
            let Some(delay) = self.retry.delay(retry, err.retry_after(), fastrand::f64()) else {
                return Err(err);
            };
            tracing::debug!(method = %request.method, path = %request.path, reason = err.reason(), ?delay, "retrying");
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    /// Sends with retries; any non-2xx answer becomes an error.
    pub(crate) async fn send(&self, request: &Request) -> Result<Answer, AzureError> {
        let answer = self.send_raw(request).await?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(AzureError::from_response(answer.status, &answer.headers, &answer.body))
        }
    }

    async fn send_once(&self, request: &Request) -> Result<Answer, AzureError> {
        let sep = if request.path.contains('?') { '&' } else { '?' };
        let url = format!("{}{}{sep}api-version={}", self.base, request.path, self.api_version);
        let mut builder = self.client.request(request.method.clone(), url).header("Accept", "application/json");
        if let Some(tokens) = &self.tokens {
            let mut value = HeaderValue::from_str(tokens.token().expose())
                .map_err(|_| AzureError::Config("token is not a valid header value".into()))?;
            value.set_sensitive(true);
            builder = builder.header(reqwest::header::AUTHORIZATION, value);
        }
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.header("Content-Type", "application/json; charset=utf-8").body(body.clone());
        }
        let response = builder.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok(Answer { status, headers, body })
    }

    /// GET a JSON resource.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: String) -> Result<T, AzureError> {
        self.send(&Request::new(Method::GET, path)).await?.json()
    }

    /// DELETE; a 404 counts as done. `if_match` is sent quoted when given.
    pub(crate) async fn delete(&self, path: String, if_match: Option<&str>) -> Result<(), AzureError> {
        let mut request = Request::new(Method::DELETE, path);
        if let Some(etag) = if_match {
            request = request.header("If-Match", quote_etag(etag));
        }
        match self.send(&request).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_not_found() => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// One page of a `POST .../query`.
    pub(crate) async fn query_page<T: DeserializeOwned>(
        &self,
        path: String,
        query: Option<&QuerySpecification>,
        page_size: Option<u32>,
        continuation: Option<&str>,
    ) -> Result<Page<T>, AzureError> {
        let mut request = Request::new(Method::POST, path);
        request = match query {
            Some(query) => request.json(query)?,
            None => {
                request.body = Some(Vec::new());
                request
            }
        };
        if let Some(size) = page_size {
            request = request.header(MAX_ITEM_COUNT, size.to_string());
        }
        if let Some(token) = continuation {
            request = request.header(CONTINUATION, token);
        }
        let answer = self.send(&request).await?;
        let items = if answer.body.iter().all(u8::is_ascii_whitespace) { Vec::new() } else { answer.json()? };
        Ok(Page { items, continuation: answer.header(CONTINUATION) })
    }

    /// Every page of a query, following continuation tokens.
    pub(crate) async fn query_all<T: DeserializeOwned>(
        &self,
        path: String,
        query: Option<&QuerySpecification>,
        page_size: Option<u32>,
    ) -> Result<Vec<T>, AzureError> {
        let mut all = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let page = self.query_page::<T>(path.clone(), query, page_size, continuation.as_deref()).await?;
            all.extend(page.items);
            match page.continuation {
                None => return Ok(all),
                Some(next) if continuation.as_deref() == Some(next.as_str()) => {
                    return Err(AzureError::Decode("query returned the same continuation token twice".into()));
                }
                next => continuation = next,
            }
        }
    }
}

/// Statuses the transport retries itself (when the policy allows).
fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT || status.is_server_error()
}

/// Splits `items` into chunks of at most `max` (at least 1) for bulk calls.
pub fn bulk_chunks<T>(items: &[T], max: usize) -> std::slice::Chunks<'_, T> {
    items.chunks(max.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_once() {
        assert_eq!(quote_etag("abc"), "\"abc\"");
        assert_eq!(quote_etag("\"abc\""), "\"abc\"");
        assert_eq!(quote_etag("W/\"abc\""), "W/\"abc\"");
        assert_eq!(quote_etag("*"), "*");
        assert_eq!(quote_etag("\""), "\"\"\"");
    }

    #[test]
    fn path_segments_escape_reserved_characters() {
        assert_eq!(path_segment("dev-1.a_b:c"), "dev-1.a_b:c");
        assert_eq!(path_segment("a%b?c#d/e f"), "a%25b%3Fc%23d%2Fe%20f");
        assert_eq!(path_segment("x!(),=@$'*"), "x!(),=@$'*");
    }

    #[test]
    fn base_urls() {
        assert_eq!(base_url(None, "dps.example.net").expect("ok"), "https://dps.example.net");
        assert_eq!(base_url(Some("https://127.0.0.1:8443/"), "h").expect("ok"), "https://127.0.0.1:8443");
        assert_eq!(base_url(Some(" "), "h").expect("ok"), "https://h");
        assert!(base_url(Some("http://127.0.0.1:8080"), "h").is_err());
        assert!(base_url(Some("https://"), "h").is_err());
    }

    #[test]
    fn chunks_of_ten_and_hundred() {
        let items: Vec<u32> = (0..25).collect();
        let sizes: Vec<usize> = bulk_chunks(&items, 10).map(<[u32]>::len).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let items: Vec<u32> = (0..200).collect();
        assert_eq!(bulk_chunks(&items, 100).count(), 2);
        assert_eq!(bulk_chunks(&[] as &[u32], 10).count(), 0);
    }

    #[test]
    fn retryable_statuses() {
        for (code, retry) in
            [(429, true), (408, true), (500, true), (503, true), (400, false), (404, false), (412, false)]
        {
            assert_eq!(is_retryable_status(StatusCode::from_u16(code).expect("status")), retry, "{code}");
        }
    }
}
