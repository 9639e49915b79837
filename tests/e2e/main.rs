//! End-to-end tests: the real `lookout` binary, real clients, real sockets
//! on loopback. Each test starts its own daemon on free ports in a temp
//! directory.

mod harness;

mod alert_receivers;
mod alerts;
mod backpressure;
mod cost;
mod fake_openai;
mod forward;
mod genai;
mod http_protocol;
mod langsmith;
mod langsmith_server;
mod pii;
mod postgres_server;
mod prometheus;
mod python_sdk;
mod retry;
mod self_telemetry;
mod shutdown;
mod store;
mod validate;
