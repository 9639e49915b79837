//! A local stand-in for the OpenAI API: `POST /v1/chat/completions`
//! answers with fixed usage per model, cached and reasoning tokens
//! included, so that costs can be computed by hand.

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};

/// Usage the fake server reports for a model: the response model, prompt
/// tokens (cached ones included), cached, completion tokens (reasoning
/// included), reasoning.
pub fn usage_of(model: &str) -> (&'static str, i64, i64, i64, i64) {
    match model {
        "o4-mini" => ("o4-mini-2025-04-16", 2000, 512, 800, 640),
        _ => ("gpt-4o-mini-2024-07-18", 1200, 1024, 300, 0),
    }
}

async fn chat(Json(request): Json<Value>) -> Json<Value> {
    let model = request["model"].as_str().unwrap_or_default();
    let (response_model, prompt, cached, completion, reasoning) = usage_of(model);
    Json(json!({
        "id": "chatcmpl-lookout-test",
        "object": "chat.completion",
        "created": 1_763_000_000,
        "model": response_model,
        "system_fingerprint": "fp_test",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0
            }
        }
    }))
}

/// Serves until the test ends; returns the base URL for the SDK.
pub async fn start() -> String {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind the fake OpenAI server");
    let address = listener.local_addr().expect("local address");
    let app = Router::new().route("/v1/chat/completions", post(chat));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/v1")
}
