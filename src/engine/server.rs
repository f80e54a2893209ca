//! HTTPS listeners. Each listener has a default endpoint (its own, when routing by address); with advertised
//! host names the TLS SNI and the `Host` header pick the endpoint instead (see [`super::routing`]). Requests
//! carry the peer's client certificate chain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt as _;

use super::faults::DropConnection;
use super::routing::Routes;

/// The TLS client certificate chain of the connection (leaf first, DER), if the client sent one.
#[derive(Debug, Clone, Default)]
pub struct PeerChain(pub Option<Arc<Vec<Vec<u8>>>>);

/// Serves the endpoints of `routes` on `listener` with TLS until `stop` turns true, then lets open requests
/// finish (at most 10 s). Connections and requests that name no endpoint go to endpoint `default`.
pub async fn serve(listener: TcpListener, routes: Arc<Routes>, default: usize, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let _ = TokioExecutor::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (tcp, _peer): (_, SocketAddr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let routes = routes.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Some((tls, connection_endpoint)) = handshake(tcp, &routes, default).await else { return };
            let chain = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| Arc::new(c.iter().map(|d| d.as_ref().to_vec()).collect::<Vec<_>>()));
            let peer = PeerChain(chain);
            let svc = tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                let endpoint = req
                    .headers()
                    .get(axum::http::header::HOST)
                    .and_then(|h| routes.by_host_header(h))
                    .unwrap_or(connection_endpoint);
                req.extensions_mut().insert(peer.clone());
                if let Some(uri) = super::util::normalize_path(req.uri()) {
                    *req.uri_mut() = uri;
                }
                let router = routes.endpoint(endpoint).or(routes.endpoint(default)).map(|e| e.router.clone());
                async move {
                    let response = match router {
                        Some(router) => router.oneshot(req).await.unwrap_or_else(|never| match never {}),
                        None => axum::http::StatusCode::MISDIRECTED_REQUEST.into_response(),
                    };
                    // An error from the service makes hyper close the connection without writing anything:
                    // what a client sees when a server or the network dies mid-request.
                    if response.extensions().get::<DropConnection>().is_some() {
                        return Err(std::io::Error::other("connection dropped by an injected fault"));
                    }
                    Ok(response)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(svc));
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}

/// Reads the ClientHello, picks the endpoint its SNI names (else `default`) and completes the handshake with
/// that endpoint's TLS configuration, all within 10 s.
async fn handshake(tcp: TcpStream, routes: &Routes, default: usize) -> Option<(TlsStream<TcpStream>, usize)> {
    let handshake = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        let endpoint = start.client_hello().server_name().and_then(|n| routes.by_sni(n)).unwrap_or(default);
        let config = routes
            .endpoint(endpoint)
            .map(|e| e.tls.clone())
            .ok_or_else(|| std::io::Error::other("no endpoint for this listener"))?;
        let tls = start.into_stream(config).await?;
        Ok::<_, std::io::Error>((tls, endpoint))
    };
    match tokio::time::timeout(Duration::from_secs(10), handshake).await {
        Ok(Ok(accepted)) => Some(accepted),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}
