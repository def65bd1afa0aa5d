//! The HTTP transport of the Blob Storage client: the workspace's own `reqwest` (one TLS stack,
//! one crypto provider, bounded timeouts) instead of the older `reqwest` the 0.21 Azure crates
//! bring with their `enable_reqwest*` features.

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::error::{Error, ErrorKind};
use azure_core::headers::{HeaderName, HeaderValue, Headers};
use azure_core::{Body, HttpClient, Request, Response, StatusCode, TransportOptions};
use futures::TryStreamExt;

/// Sends the Azure SDK's requests with a `reqwest::Client`.
#[derive(Clone, Debug)]
pub struct Transport(pub reqwest::Client);

impl Transport {
    /// Transport options for `ClientBuilder::transport`.
    pub fn options(client: reqwest::Client) -> TransportOptions {
        TransportOptions::new(Arc::new(Transport(client)))
    }
}

#[async_trait]
impl HttpClient for Transport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<Response> {
        let method = reqwest::Method::from_bytes(request.method().as_ref().as_bytes())
            .map_err(|e| Error::full(ErrorKind::DataConversion, e, "HTTP method"))?;
        let mut req = self.0.request(method, request.url().as_str());
        for (name, value) in request.headers().iter() {
            req = req.header(name.as_str(), value.as_str());
        }
        req = match request.body() {
            Body::Bytes(bytes) => req.body(bytes.clone()),
            // Nothing here streams a request body: blobs are uploaded by users through a SAS.
            Body::SeekableStream(_) => {
                return Err(Error::message(
                    ErrorKind::Other,
                    "streamed request bodies are not supported by this transport",
                ));
            }
        };
        let resp = req
            .send()
            .await
            .map_err(|e| Error::full(ErrorKind::Io, e, "sending the request"))?;
        let status = StatusCode::try_from(resp.status().as_u16()).map_err(|_| {
            Error::with_message(ErrorKind::DataConversion, || {
                format!("unknown HTTP status {}", resp.status())
            })
        })?;
        let headers: Headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                let v = v.to_str().ok()?;
                Some((
                    HeaderName::from(k.as_str().to_owned()),
                    HeaderValue::from(v.to_owned()),
                ))
            })
            .collect::<std::collections::HashMap<_, _>>()
            .into();
        let body = resp
            .bytes_stream()
            .map_err(|e| Error::full(ErrorKind::Io, e, "reading the response"));
        Ok(Response::new(status, headers, Box::pin(body)))
    }
}
