//! Running a job at a fixed concurrency for a bounded number of iterations, and the latencies
//! of each of its steps.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Latencies of one step, in microseconds.
#[derive(Debug, Default)]
pub struct Samples(Vec<u64>);

impl Samples {
    fn add(&mut self, d: Duration) {
        self.0.push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Percentile `p` (0 to 1) in milliseconds, nearest rank.
    fn percentile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i] as f64 / 1000.0
    }

    fn summary(&mut self) -> Value {
        self.0.sort_unstable();
        json!({"count": self.0.len(), "p50_ms": self.percentile(0.50), "p95_ms": self.percentile(0.95),
               "p99_ms": self.percentile(0.99), "max_ms": self.percentile(1.0)})
    }
}

/// What one iteration reports: the time of each named step, in order.
pub type Steps = Vec<(&'static str, Duration)>;

/// The outcome of a [`drive`].
#[derive(Debug, Default)]
pub struct Outcome {
    steps: BTreeMap<&'static str, Samples>,
    order: Vec<&'static str>,
    completed: usize,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
}

impl Outcome {
    /// Completed iterations per second.
    pub fn rate(&self) -> f64 {
        self.completed as f64 / self.seconds.max(f64::EPSILON)
    }

    /// The report of this run, as JSON.
    pub fn report(&mut self, what: &str, concurrency: usize) -> Value {
        let rate = self.rate();
        let steps: serde_json::Map<String, Value> =
            self.order.iter().map(|name| ((*name).to_owned(), self.steps.entry(name).or_default().summary())).collect();
        json!({"what": what, "concurrency": concurrency, "completed": self.completed, "errors": self.errors,
               "first_error": self.first_error, "seconds": self.seconds, "per_second": rate, "steps": steps})
    }
}

/// Prints a report made by [`Outcome::report`].
pub fn print(report: &Value) {
    println!(
        "{}: {} in {:.2} s = {:.0}/s at concurrency {} ({} errors)",
        report["what"].as_str().unwrap_or_default(),
        report["completed"],
        report["seconds"].as_f64().unwrap_or_default(),
        report["per_second"].as_f64().unwrap_or_default(),
        report["concurrency"],
        report["errors"],
    );
    if let Some(steps) = report["steps"].as_object() {
        for (name, v) in steps {
            println!(
                "  {name:<20} p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
                v["p50_ms"].as_f64().unwrap_or_default(),
                v["p95_ms"].as_f64().unwrap_or_default(),
                v["p99_ms"].as_f64().unwrap_or_default(),
                v["max_ms"].as_f64().unwrap_or_default(),
            );
        }
    }
    if let Some(e) = report["first_error"].as_str() {
        println!("  first error: {e}");
    }
}

/// Runs `job(worker, iteration)` from `concurrency` workers until `total` iterations have
/// started. Each worker runs its iterations one after another; `iteration` counts per worker.
pub async fn drive<F, Fut>(concurrency: usize, total: usize, job: F) -> Outcome
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Steps>> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (job, next) = (job.clone(), next.clone());
        workers.spawn(async move {
            let mut results = Vec::new();
            let mut iteration = 0;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                results.push(job(worker, iteration).await);
                iteration += 1;
            }
            results
        });
    }
    let mut outcome = Outcome::default();
    while let Some(joined) = workers.join_next().await {
        for result in joined.unwrap_or_else(|e| vec![Err(anyhow::anyhow!("worker failed: {e}"))]) {
            match result {
                Ok(steps) => {
                    outcome.completed += 1;
                    for (name, took) in steps {
                        if !outcome.order.contains(&name) {
                            outcome.order.push(name);
                        }
                        outcome.steps.entry(name).or_default().add(took);
                    }
                }
                Err(e) => {
                    outcome.errors += 1;
                    outcome.first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}
