//! Talking to LangSmith: `GET /info`, and sending a batch of runs the way
//! the server's last `/info` asked for (multipart or batch, zstd or not).

use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use lookout_pipelines::{BuildError, ExportError};
use serde::Deserialize;

use super::run::Run;
use super::wire::{self, Body};
use crate::otlp::http::retry_after;

/// What `/info` says about ingestion (`LangSmithInfo` in the SDK).
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    pub use_multipart: bool,
    pub zstd: bool,
    /// Runs per request.
    pub size_limit: Option<usize>,
    /// Bytes per request.
    pub size_limit_bytes: Option<usize>,
    pub version: Option<String>,
}

impl Default for Info {
    /// The SDK's defaults when `/info` cannot be read.
    fn default() -> Info {
        Info {
            use_multipart: true,
            zstd: false,
            size_limit: None,
            size_limit_bytes: None,
            version: None,
        }
    }
}

#[derive(Deserialize, Default)]
struct InfoBody {
    version: Option<String>,
    #[serde(default)]
    batch_ingest_config: Option<BatchIngestConfig>,
    #[serde(default)]
    instance_flags: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize, Default)]
struct BatchIngestConfig {
    use_multipart_endpoint: Option<bool>,
    size_limit: Option<usize>,
    size_limit_bytes: Option<usize>,
}

impl From<InfoBody> for Info {
    fn from(body: InfoBody) -> Info {
        let ingest = body.batch_ingest_config.unwrap_or_default();
        let flag = |name: &str| {
            body.instance_flags
                .as_ref()
                .and_then(|flags| flags.get(name))
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false)
        };
        Info {
            use_multipart: ingest.use_multipart_endpoint.unwrap_or(true),
            zstd: flag("zstd_compression_enabled"),
            size_limit: ingest.size_limit.filter(|n| *n > 0),
            size_limit_bytes: ingest.size_limit_bytes.filter(|n| *n > 0),
            version: body.version,
        }
    }
}

/// How one request ended, beyond success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401 or 403: the API key or workspace is wrong.
    Unauthorized(StatusCode),
    /// Another 4xx: LangSmith will never take this batch.
    Rejected(StatusCode),
}

/// A sent batch: delivered, or a duplicate of one delivered before (409).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Accepted,
    Duplicate,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    info: RwLock<Info>,
}

impl Client {
    pub fn new(
        endpoint: &str,
        api_key: Option<&str>,
        workspace_id: Option<&str>,
    ) -> Result<Client, BuildError> {
        let base = endpoint.trim().trim_matches('"').trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(BuildError::at(
                &["endpoint"],
                "must start with http:// or https://",
            ));
        }
        let mut headers = HeaderMap::new();
        let mut secret = |name: &'static str, value: Option<&str>, key: &str| {
            if let Some(value) = value {
                let mut value = HeaderValue::try_from(value).map_err(|_| {
                    BuildError::at(&[key], "holds characters an HTTP header cannot carry")
                })?;
                value.set_sensitive(true);
                headers.insert(HeaderName::from_static(name), value);
            }
            Ok::<(), BuildError>(())
        };
        secret("x-api-key", api_key, "api_key")?;
        secret("x-tenant-id", workspace_id, "workspace_id")?;
        let user_agent = concat!("lookout/", env!("CARGO_PKG_VERSION"));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(user_agent)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|err| {
                BuildError::at(&["endpoint"], format!("cannot build an HTTP client: {err}"))
            })?;
        Ok(Client {
            http,
            base: base.to_string(),
            info: RwLock::new(Info::default()),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.base
    }

    pub fn info(&self) -> Info {
        self.info
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads `GET /info` and keeps what it says. On failure the previous
    /// settings stay (the SDK's defaults at first).
    pub async fn refresh_info(&self, timeout: Duration) -> Result<Info, String> {
        let response = self
            .http
            .get(format!("{}/info", self.base))
            .header(http::header::ACCEPT, "application/json")
            .timeout(timeout)
            .send()
            .await
            .map_err(|err| format!("GET /info failed: {}", without_url(err)))?;
        if !response.status().is_success() {
            return Err(format!("GET /info answered {}", response.status()));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|err| format!("GET /info failed: {}", without_url(err)))?;
        let body: InfoBody = serde_json::from_slice(&bytes)
            .map_err(|err| format!("GET /info gave JSON that is not LangSmith's: {err}"))?;
        let info = Info::from(body);
        *self.info.write().unwrap_or_else(PoisonError::into_inner) = info.clone();
        Ok(info)
    }

    /// Encodes `runs` for the endpoint `/info` chose.
    pub fn encode(&self, runs: &[Run]) -> (&'static str, Body) {
        let info = self.info();
        if !info.use_multipart {
            return ("/runs/batch", wire::batch(runs));
        }
        let body = wire::multipart(runs);
        (
            "/runs/multipart",
            if info.zstd { wire::zstd(body) } else { body },
        )
    }

    /// Sends one encoded request. Retryable failures are `Transient`;
    /// a refusal is `Err(Ok(refusal))` so that the caller can tell a bad
    /// key from a bad batch.
    pub async fn send(
        &self,
        path: &str,
        body: &Body,
        timeout: Duration,
    ) -> Result<Delivered, Result<Refusal, ExportError>> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, &body.content_type)
            .timeout(timeout);
        if let Some(uncompressed) = body.uncompressed_len {
            request = request
                .header(http::header::CONTENT_ENCODING, "zstd")
                .header("X-Pre-Compressed-Size", uncompressed.to_string())
                .header("X-Post-Compressed-Size", body.bytes.len().to_string());
        }
        let response = request
            .body(body.bytes.clone())
            .send()
            .await
            .map_err(|err| {
                Err(ExportError::transient(format!(
                    "POST {path} failed: {}",
                    without_url(err)
                )))
            })?;
        classify(path, response.status(), response.headers())
    }
}

/// What an answer means, as the SDK reads it: 409 is a duplicate, 429
/// and 408/425/5xx are retried (honouring Retry-After), 401/403 name the
/// key, and any other 4xx will never succeed.
fn classify(
    path: &str,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<Delivered, Result<Refusal, ExportError>> {
    if status.is_success() {
        return Ok(Delivered::Accepted);
    }
    match status.as_u16() {
        409 => Ok(Delivered::Duplicate),
        401 | 403 => Err(Ok(Refusal::Unauthorized(status))),
        408 | 425 | 429 | 500..=599 => Err(Err(ExportError::Transient {
            reason: format!("POST {path} answered {status}"),
            retry_after: retry_after(headers),
        })),
        _ => Err(Ok(Refusal::Rejected(status))),
    }
}

/// A reqwest error without its URL: the URL may carry credentials.
fn without_url(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_reads_ingest_config_and_flags() {
        let body: InfoBody = serde_json::from_str(
            r#"{"version":"0.10","batch_ingest_config":{"use_multipart_endpoint":false,
                "size_limit":50,"size_limit_bytes":1000,"scale_up_qsize_trigger":1000},
                "instance_flags":{"zstd_compression_enabled":true},"license_expiration_time":null}"#,
        )
        .unwrap();
        let info = Info::from(body);
        assert!(!info.use_multipart);
        assert!(info.zstd);
        assert_eq!(info.size_limit, Some(50));
        assert_eq!(info.size_limit_bytes, Some(1000));
        assert_eq!(Info::from(InfoBody::default()), Info::default());
    }

    #[test]
    fn answers_are_classified_as_the_sdk_does() {
        let mut headers = HeaderMap::new();
        let status = |code| StatusCode::from_u16(code).unwrap();
        assert_eq!(
            classify("/p", status(202), &headers),
            Ok(Delivered::Accepted)
        );
        assert_eq!(
            classify("/p", status(409), &headers),
            Ok(Delivered::Duplicate)
        );
        assert_eq!(
            classify("/p", status(401), &headers),
            Err(Ok(Refusal::Unauthorized(status(401))))
        );
        assert_eq!(
            classify("/p", status(422), &headers),
            Err(Ok(Refusal::Rejected(status(422))))
        );
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("2"));
        match classify("/p", status(429), &headers) {
            Err(Err(ExportError::Transient { retry_after, .. })) => {
                assert_eq!(retry_after, Some(Duration::from_secs(2)))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify("/p", status(503), &HeaderMap::new()),
            Err(Err(ExportError::Transient {
                retry_after: None,
                ..
            }))
        ));
    }

    #[test]
    fn a_bad_endpoint_or_key_is_a_build_error_that_hides_the_key() {
        assert!(Client::new("ftp://x", None, None).is_err());
        let err = Client::new("http://x", Some("bad\nkey"), None)
            .err()
            .unwrap();
        assert!(!err.to_string().contains("bad\nkey"));
    }
}
