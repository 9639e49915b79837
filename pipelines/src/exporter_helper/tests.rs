use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::telemetry::health::Health;

/// Answers each attempt from a script, then succeeds.
struct Scripted {
    script: Mutex<Vec<Result<(), ExportError>>>,
    attempts: AtomicUsize,
    delivered: AtomicUsize,
}

impl Scripted {
    fn new(mut script: Vec<Result<(), ExportError>>) -> Arc<Scripted> {
        script.reverse();
        Arc::new(Scripted {
            script: Mutex::new(script),
            attempts: AtomicUsize::new(0),
            delivered: AtomicUsize::new(0),
        })
    }
}

struct Shared(Arc<Scripted>);

#[async_trait::async_trait]
impl Exporter for Shared {
    async fn export(&self, _payload: &Payload) -> Result<(), ExportError> {
        self.0.attempts.fetch_add(1, Ordering::SeqCst);
        let next = self.0.script.lock().unwrap().pop().unwrap_or(Ok(()));
        if next.is_ok() {
            self.0.delivered.fetch_add(1, Ordering::SeqCst);
        }
        next
    }
}

fn config(max_elapsed: Duration) -> ExporterHelperConfig {
    ExporterHelperConfig {
        timeout: Duration::from_secs(1),
        sending_queue: QueueConfig {
            num_consumers: 1,
            ..Default::default()
        },
        retry_on_failure: RetryConfig {
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(4),
            max_elapsed_time: max_elapsed,
            randomization_factor: 0.0,
            multiplier: 2.0,
            ..Default::default()
        },
    }
}

async fn run_one(
    script: Vec<Result<(), ExportError>>,
    config: ExporterHelperConfig,
) -> (Arc<Scripted>, Duration) {
    let scripted = Scripted::new(script);
    let health = Health::default();
    let running = start(
        ComponentId::parse("test").unwrap(),
        Box::new(Shared(scripted.clone())),
        config,
        health.reporter("exporter/test".into()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let began = Instant::now();
    running
        .handle()
        .enqueue(Arc::new(Payload::Traces(vec![])))
        .await;
    running.stop().await;
    (scripted, began.elapsed())
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_until_delivered_once() {
    let script = vec![
        Err(ExportError::transient("503")),
        Err(ExportError::transient("503")),
    ];
    let (scripted, elapsed) = run_one(script, config(Duration::from_secs(300))).await;
    assert_eq!(scripted.attempts.load(Ordering::SeqCst), 3);
    assert_eq!(scripted.delivered.load(Ordering::SeqCst), 1);
    assert_eq!(elapsed, Duration::from_secs(3), "waits of 1s then 2s");
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_when_longer_than_the_backoff() {
    let script = vec![Err(ExportError::Transient {
        reason: "429".into(),
        retry_after: Some(Duration::from_secs(20)),
    })];
    let (scripted, elapsed) = run_one(script, config(Duration::from_secs(300))).await;
    assert_eq!(scripted.delivered.load(Ordering::SeqCst), 1);
    assert_eq!(elapsed, Duration::from_secs(20));
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_not_retried() {
    let script = vec![Err(ExportError::permanent("400"))];
    let (scripted, _) = run_one(script, config(Duration::from_secs(300))).await;
    assert_eq!(scripted.attempts.load(Ordering::SeqCst), 1);
    assert_eq!(scripted.delivered.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn gives_up_at_max_elapsed_time() {
    let script = (0..100)
        .map(|_| Err(ExportError::transient("down")))
        .collect();
    let (scripted, elapsed) = run_one(script, config(Duration::from_secs(10))).await;
    assert_eq!(scripted.delivered.load(Ordering::SeqCst), 0);
    assert!(elapsed <= Duration::from_secs(10), "{elapsed:?}");
    // Waits of 1, 2, 4, 4: the next one would pass 10s.
    assert_eq!(scripted.attempts.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_that_hangs_times_out_and_is_retried() {
    struct HangsOnce(AtomicUsize);
    #[async_trait::async_trait]
    impl Exporter for HangsOnce {
        async fn export(&self, _payload: &Payload) -> Result<(), ExportError> {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                std::future::pending::<()>().await;
            }
            Ok(())
        }
    }
    let exporter = Arc::new(HangsOnce(AtomicUsize::new(0)));
    struct Handle(Arc<HangsOnce>);
    #[async_trait::async_trait]
    impl Exporter for Handle {
        async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
            self.0.export(payload).await
        }
    }
    let running = start(
        ComponentId::parse("test").unwrap(),
        Box::new(Handle(exporter.clone())),
        config(Duration::from_secs(300)),
        Health::default().reporter("exporter/test".into()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    running
        .handle()
        .enqueue(Arc::new(Payload::Traces(vec![])))
        .await;
    running.stop().await;
    assert_eq!(exporter.0.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_hard_stop_ends_retries_and_counts_what_is_left() {
    let script = (0..1000)
        .map(|_| Err(ExportError::transient("down")))
        .collect();
    let scripted = Scripted::new(script);
    let hard_stop = CancellationToken::new();
    let running = start(
        ComponentId::parse("test").unwrap(),
        Box::new(Shared(scripted.clone())),
        config(Duration::ZERO),
        Health::default().reporter("exporter/test".into()),
        hard_stop.clone(),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        running
            .handle()
            .enqueue(Arc::new(Payload::Traces(vec![])))
            .await;
    }
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        hard_stop.cancel();
    });
    running.stop().await;
    stopper.await.unwrap();
    assert_eq!(scripted.delivered.load(Ordering::SeqCst), 0);
}
