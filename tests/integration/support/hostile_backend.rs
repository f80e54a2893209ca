//! A backend that answers every request with one fixed raw HTTP response over HTTPS: bodies that are not
//! JSON, truncated JSON, bare status codes. It stands in for a broken proxy or a misbehaving service in
//! front of DPS, which the engine (always well-formed) cannot play.

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A running hostile backend; it stops with the test's runtime.
pub struct HostileBackend {
    /// `https://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The CA that signed its certificate (PEM), for a ProvisioningService's `caBundle`.
    pub ca_pem: String,
}

impl HostileBackend {
    /// Serves `status` (e.g. `"500 Internal Server Error"`) with `headers` (`Name: value` lines) and `body`.
    pub async fn start(status: &str, headers: &[&str], body: &str) -> Self {
        let ca_key = KeyPair::generate().expect("key generates");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA signs itself");
        let key = KeyPair::generate().expect("key generates");
        let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("server params");
        let cert = params.signed_by(&key, &ca).expect("server certificate signed");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::try_from(key.serialize_der()).expect("key DER"),
            )
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let address: SocketAddr = listener.local_addr().expect("bound");
        let mut response = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
        for header in headers {
            response.push_str(header);
            response.push_str("\r\n");
        }
        response.push_str("\r\n");
        response.push_str(body);
        let response = Arc::new(response.into_bytes());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, response) = (acceptor.clone(), response.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else { return };
                    read_request(&mut tls).await;
                    let _ = tls.write_all(&response).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        HostileBackend { endpoint: format!("https://{address}"), ca_pem: ca.pem() }
    }
}

/// Reads one request (head and `Content-Length` body), so the answer never races the client's upload.
async fn read_request<S: AsyncReadExt + Unpin>(stream: &mut S) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while seen.len() < head_end + length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}
