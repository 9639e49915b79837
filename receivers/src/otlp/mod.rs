//! The `otlp` receiver: OTLP/HTTP (protobuf and JSON, gzip) and OTLP/gRPC,
//! for traces, metrics and logs.
//!
//! ```yaml
//! receivers:
//!   otlp:
//!     protocols:
//!       http:                          # present = enabled
//!         endpoint: 0.0.0.0:4318
//!         max_request_body_size: 20971520   # bytes, compressed and decompressed
//!       grpc:
//!         endpoint: 0.0.0.0:4317
//!         max_recv_msg_size_mib: 4
//!     retry_after: 1s                  # what a refusal (429) asks clients to wait
//! ```

mod decode;
mod grpc;
mod http;

use std::time::Duration;

use async_trait::async_trait;
use lookout_pipelines::component::{ServeFuture, parse_config};
use lookout_pipelines::telemetry::metrics::ReceiverMetrics;
use lookout_pipelines::{
    BuildError, ComponentId, Consumer, Payload, Receiver, ReceiverContext, ReceiverFactory,
    Refused, Signal,
};
use serde::{Deserialize, Deserializer};

pub fn factory() -> ReceiverFactory {
    ReceiverFactory {
        kind: "otlp",
        signals: &Signal::OTLP,
        build: |_id: &ComponentId, raw| {
            let config: OtlpReceiverConfig = parse_config(raw)?;
            config.check()?;
            Ok(Box::new(OtlpReceiver { config }))
        },
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_http_endpoint")]
    pub endpoint: String,
    #[serde(default = "default_max_request_body_size")]
    pub max_request_body_size: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: default_http_endpoint(),
            max_request_body_size: default_max_request_body_size(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    #[serde(default = "default_grpc_endpoint")]
    pub endpoint: String,
    #[serde(default = "default_max_recv_msg_size_mib")]
    pub max_recv_msg_size_mib: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: default_grpc_endpoint(),
            max_recv_msg_size_mib: default_max_recv_msg_size_mib(),
        }
    }
}

fn default_http_endpoint() -> String {
    "0.0.0.0:4318".into()
}

fn default_grpc_endpoint() -> String {
    "0.0.0.0:4317".into()
}

fn default_max_request_body_size() -> usize {
    20 * 1024 * 1024
}

fn default_max_recv_msg_size_mib() -> usize {
    4
}

fn default_retry_after() -> Duration {
    Duration::from_secs(1)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    #[serde(default, deserialize_with = "present_means_enabled")]
    pub http: Option<HttpConfig>,
    #[serde(default, deserialize_with = "present_means_enabled")]
    pub grpc: Option<GrpcConfig>,
}

/// `http:` with nothing under it enables the protocol with its defaults,
/// as in the collector; leaving the key out disables it.
fn present_means_enabled<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(
        Option::<T>::deserialize(deserializer)?.unwrap_or_default(),
    ))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    pub protocols: Protocols,
    #[serde(default = "default_retry_after", with = "humantime_serde")]
    pub retry_after: Duration,
}

impl OtlpReceiverConfig {
    fn check(&self) -> Result<(), BuildError> {
        if self.protocols.http.is_none() && self.protocols.grpc.is_none() {
            return Err(BuildError::at(
                &["protocols"],
                "enable at least one protocol: `http:` or `grpc:`",
            ));
        }
        if let Some(http) = &self.protocols.http
            && http.max_request_body_size == 0
        {
            return Err(BuildError::at(
                &["protocols", "http", "max_request_body_size"],
                "must be above zero",
            ));
        }
        Ok(())
    }
}

pub struct OtlpReceiver {
    config: OtlpReceiverConfig,
}

#[async_trait]
impl Receiver for OtlpReceiver {
    async fn start(self: Box<Self>, ctx: ReceiverContext) -> anyhow::Result<ServeFuture> {
        let config = self.config;
        let http = match &config.protocols.http {
            Some(http_config) => Some(http::start(http_config, config.retry_after, &ctx).await?),
            None => None,
        };
        let grpc = match &config.protocols.grpc {
            Some(grpc_config) => Some(grpc::start(grpc_config, config.retry_after, &ctx).await?),
            None => None,
        };
        ctx.health.ok();
        // Both servers run at once; the receiver is done when both are.
        let servers: Vec<_> = [http, grpc]
            .into_iter()
            .flatten()
            .map(tokio::spawn)
            .collect();
        Ok(Box::pin(async move {
            for server in servers {
                server.await??;
            }
            Ok(())
        }))
    }
}

/// Pushes a decoded request into the pipelines, after taking out what is
/// invalid. Shared by both transports so that they count and refuse alike.
fn ingest(
    consumer: &Consumer,
    metrics: &ReceiverMetrics,
    mut payload: Payload,
) -> Result<decode::Rejected, Refused> {
    let signal = payload.signal();
    let rejected = decode::reject_invalid(&mut payload);
    if rejected.count > 0 {
        metrics.rejected(signal, rejected.count);
    }
    let items = payload.item_count();
    if items == 0 {
        return Ok(rejected);
    }
    match consumer.try_send(payload) {
        Ok(()) => {
            metrics.accepted(signal, items);
            Ok(rejected)
        }
        Err(refused) => {
            metrics.refused(signal, items);
            Err(refused)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<OtlpReceiverConfig, BuildError> {
        let config: OtlpReceiverConfig = parse_config(serde_yaml::from_str(yaml).unwrap())?;
        config.check().map(|()| config)
    }

    #[test]
    fn an_empty_protocol_key_enables_it_with_defaults() {
        let config = parse("protocols:\n  http:\n").unwrap();
        assert_eq!(config.protocols.http.unwrap().endpoint, "0.0.0.0:4318");
        assert!(config.protocols.grpc.is_none());
    }

    #[test]
    fn no_protocol_is_an_error() {
        assert!(parse("protocols: {}\n").is_err());
    }

    #[test]
    fn a_typo_is_reported_with_its_path() {
        let err = parse("protocols:\n  grpc:\n    endpont: x\n").unwrap_err();
        assert_eq!(err.path, vec!["protocols", "grpc", "endpont"]);
    }
}
