//! Prometheus metrics over HTTP, as every imageswarm process serves them.
//!
//! # Contract
//! [`serve`] answers every GET, whatever its path, with the registry in the
//! OpenMetrics text format, from one background thread, until the process
//! exits.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::{Error, Result};

/// Serves `registry` at `addr` until the process exits.
pub fn serve(addr: SocketAddr, registry: Registry) -> Result<()> {
    let server = tiny_http::Server::http(addr).map_err(|e| Error::Net(format!("metrics on {addr}: {e}")))?;
    let registry = Arc::new(registry);
    let content_type = tiny_http::Header::from_bytes(
        &b"Content-Type"[..],
        &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..],
    )
    .map_err(|()| Error::Net("metrics: bad content type".into()))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let mut body = String::new();
                let resp = match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) => tiny_http::Response::from_string(body).with_header(content_type.clone()),
                    Err(e) => tiny_http::Response::from_string(e.to_string()).with_status_code(500),
                };
                if let Err(e) = req.respond(resp) {
                    tracing::debug!(error = %e, "metrics client went away");
                }
            }
        })
        .map_err(|e| Error::Net(format!("metrics thread: {e}")))?;
    Ok(())
}
