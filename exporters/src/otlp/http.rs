//! OTLP/HTTP with protobuf bodies.

use std::io::Write;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use lookout_pipelines::{BuildError, ExportError, Payload, Signal};

use super::{Compression, OtlpExporterConfig, invalid};

pub struct HttpTransport {
    client: reqwest::Client,
    urls: [String; 3],
    compression: Compression,
}

impl HttpTransport {
    pub fn new(config: &OtlpExporterConfig) -> Result<HttpTransport, BuildError> {
        let base = config.endpoint.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(invalid("endpoint", "must start with http:// or https://"));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|err| BuildError::at(&["headers", name], err.to_string()))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|err| BuildError::at(&["headers", name.as_str()], err.to_string()))?;
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|err| invalid("endpoint", format!("cannot build an HTTP client: {err}")))?;
        Ok(HttpTransport {
            client,
            urls: Signal::OTLP.map(|signal| format!("{base}/v1/{signal}")),
            compression: config.compression,
        })
    }

    pub async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        let url = self
            .urls
            .get(payload.signal() as usize)
            .ok_or_else(|| ExportError::permanent("alerts are not an OTLP signal"))?;
        let mut body = payload.encode_request();
        let mut request = self.client.post(url);
        request = request.header(http::header::CONTENT_TYPE, "application/x-protobuf");
        if self.compression == Compression::Gzip {
            body = gzip(&body);
            request = request.header(http::header::CONTENT_ENCODING, "gzip");
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|err| ExportError::transient(format!("request failed: {err}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = retry_after(response.headers());
        let reason = format!("server answered {status}");
        match status {
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Err(ExportError::Transient {
                reason,
                retry_after,
            }),
            _ => Err(ExportError::permanent(reason)),
        }
    }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default()
}

/// `Retry-After` in seconds. (The HTTP-date form is rare from collectors
/// and falls back to the exporter's own backoff.)
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}
