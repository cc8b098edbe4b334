//! `wattle bench bill-latency`: reading-to-bill latency on a running platform (the sandbox, say):
//! from a meter's publish until the customer's running bill shows the reading, at the fleet's
//! steady rate, and where the time goes. Three observers run side by side:
//!
//! - an MQTT subscriber to the meter's reading topic: `t0`, when the broker hands the reading on
//!   (what the gateway sees, less one loopback hop);
//! - a long-poll of the ledger's public transaction stream: `t1`, when the entry holding the
//!   reading's digest is applied on that node (gateway verification, outbox, batching, the
//!   leader's re-verification and consensus);
//! - a poll of the ledger's `/healthz`: `ts`, when its signed index covers the entry (the
//!   signature transaction billing's feed waits for: it shows only what a receipt can prove);
//! - a poll of billing's `GET /v1/customers/{id}/bill`: `t2`, when `intervals_settled` counts it
//!   (billing's change feed: the long-poll's wake-up, re-reading the customer from the ledger,
//!   the SQL write; then the read);
//! - billing's live stream `GET /v1/customers/{id}/bill/stream`: `t3`, when a `bill` event counts
//!   it (what the customer's page shows, pushed rather than polled).
//!
//! Prints p50, p99 and the maximum of `t1 − t0`, `ts − t1`, `t2 − ts`, `t2 − t0` and `t3 − t0`
//! over `--samples`, then billing's own split of its feed pages (`/metrics`: reading customers
//! from the ledger, writing them to SQL) over the run.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use domain::api::TransactionPage;
use domain::reading::Envelope;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Readings timed first and left out of the figures: one published before the subscription may
/// be billed while a later one waits at the front, so the first few can read too short.
const WARM_UP_SAMPLES: usize = 3;

/// Options of `wattle bench bill-latency`.
#[derive(Debug, clap::Args)]
pub struct BillLatencyArgs {
    /// The MQTT broker the meters publish to (HOST:PORT).
    #[arg(long)]
    broker: String,
    /// A ledger node's client API (its public transaction stream).
    #[arg(long)]
    ledger: String,
    /// Billing's base URL.
    #[arg(long)]
    billing: String,
    /// File holding a billing token that may read the customer (the sandbox writes
    /// DATA_DIR/billing-operator.token).
    #[arg(long)]
    token_file: std::path::PathBuf,
    /// The meter to follow.
    #[arg(long, default_value = "WTL0000000000")]
    meter: String,
    /// Its customer (the only customer of that meter: each reading is one more settled interval).
    #[arg(long, default_value = "C0000000")]
    customer: String,
    /// Readings to time.
    #[arg(long, default_value_t = 60)]
    samples: usize,
    /// How often the bill is read (ms): the resolution of `t2`.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
}

/// One reading on its way.
#[derive(Debug, Clone)]
struct Sample {
    digest: String,
    published: Instant,
    applied: Option<Instant>,
    /// The entry's log index, and when the ledger's signed index covered it.
    index: Option<u64>,
    signed: Option<Instant>,
    billed: Option<Instant>,
    /// The bill's `intervals_settled` once it counted this reading.
    count: u64,
}

/// Readings seen on the broker, oldest first; finished ones move to `done`.
#[derive(Debug, Default)]
struct Samples {
    pending: VecDeque<Sample>,
    done: Vec<Sample>,
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * fraction).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn describe(name: &str, mut values: Vec<Duration>) -> String {
    values.sort();
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    format!(
        "{name:<44} p50 {:>8.1} ms   p99 {:>8.1} ms   max {:>8.1} ms",
        ms(percentile(&values, 0.50)),
        ms(percentile(&values, 0.99)),
        ms(values.last().copied().unwrap_or_default())
    )
}

async fn bill_settled(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<u64> {
    let bill: serde_json::Value = http.get(url).bearer_auth(token).send().await?.error_for_status()?.json().await?;
    bill["intervals_settled"].as_u64().context("the bill has no intervals_settled")
}

/// Runs the measurement and prints the figures.
pub async fn bill_latency(args: BillLatencyArgs) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading {}", args.token_file.display()))?
        .trim()
        .to_string();
    let (host, port) = args.broker.rsplit_once(':').context("--broker is HOST:PORT")?;
    let port: u16 = port.parse().context("--broker's port")?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?;
    let bill_url = format!("{}/v1/customers/{}/bill", args.billing, args.customer);
    let samples = Arc::new(Mutex::new(Samples::default()));
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);

    // t0: the broker hands the reading on.
    let mut options = MqttOptions::new(format!("wattle-bench-latency-{}", std::process::id()), host, port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut event_loop) = AsyncClient::new(options, 64);
    client.subscribe(format!("wattle/v1/+/{}/reading", args.meter), QoS::AtLeastOnce).await?;
    let subscriber = {
        let samples = samples.clone();
        tokio::spawn(async move {
            loop {
                let event = event_loop.poll().await.context("the MQTT connection failed")?;
                let Event::Incoming(Packet::Publish(publish)) = event else { continue };
                let published = Instant::now();
                let Ok(envelope) = Envelope::parse_json(&publish.payload) else { continue };
                if envelope.backfill {
                    continue;
                }
                let Ok(reading) = envelope.open() else { continue };
                let digest = reading.digest().to_string();
                let mut samples = samples.lock().expect("samples lock is never poisoned");
                samples.pending.push_back(Sample {
                    digest,
                    published,
                    applied: None,
                    index: None,
                    signed: None,
                    billed: None,
                    count: 0,
                });
            }
            #[allow(unreachable_code)]
            anyhow::Ok(())
        })
    };

    // t1: the ledger's stream shows the entry holding the digest.
    let follower = {
        let samples = samples.clone();
        let http = http.clone();
        let ledger = args.ledger.clone();
        tokio::spawn(async move {
            let health: serde_json::Value = http.get(format!("{ledger}/healthz")).send().await?.json().await?;
            let mut next = health["applied_index"].as_u64().unwrap_or(0) + 1;
            loop {
                let url = format!("{ledger}/v1/transactions?from={next}&wait_ms=1000");
                let page: TransactionPage = http.get(url).send().await?.error_for_status()?.json().await?;
                let now = Instant::now();
                let mut samples = samples.lock().expect("samples lock is never poisoned");
                for transaction in &page.transactions {
                    for sample in samples.pending.iter_mut().filter(|sample| sample.applied.is_none()) {
                        if transaction.reading_digests.contains(&sample.digest) {
                            sample.applied = Some(now);
                            sample.index = Some(transaction.index);
                        }
                    }
                }
                next = next.max(page.next);
            }
            #[allow(unreachable_code)]
            anyhow::Ok(())
        })
    };

    // ts: the ledger's signed index covers the entry.
    let signer = {
        let samples = samples.clone();
        let http = http.clone();
        let url = format!("{}/healthz", args.ledger);
        let poll = Duration::from_millis(args.poll_ms);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(poll).await;
                let health: serde_json::Value = http.get(&url).send().await?.json().await?;
                let now = Instant::now();
                let signed = health["signed_index"].as_u64().unwrap_or(0);
                let mut samples = samples.lock().expect("samples lock is never poisoned");
                for sample in samples.pending.iter_mut() {
                    if sample.signed.is_none() && sample.index.is_some_and(|index| index <= signed) {
                        sample.signed = Some(now);
                    }
                }
            }
            #[allow(unreachable_code)]
            anyhow::Ok(())
        })
    };

    // t3: the live stream's first `bill` event with each count.
    let streamed: Arc<Mutex<std::collections::HashMap<u64, Instant>>> = Arc::default();
    let streamer = {
        let streamed = streamed.clone();
        let url = format!("{}/v1/customers/{}/bill/stream", args.billing, args.customer);
        let token = token.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut response = client.get(url).bearer_auth(token).send().await?.error_for_status()?;
            let mut buffer = String::new();
            while let Some(chunk) = response.chunk().await? {
                let now = Instant::now();
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..end + 2).collect();
                    if !event.lines().any(|line| line == "event: bill") {
                        continue;
                    }
                    let data = event.lines().find_map(|line| line.strip_prefix("data: ")).unwrap_or_default();
                    let bill: serde_json::Value = serde_json::from_str(data)?;
                    if let Some(count) = bill["intervals_settled"].as_u64() {
                        streamed.lock().expect("stream lock is never poisoned").entry(count).or_insert(now);
                    }
                }
            }
            anyhow::Ok(())
        })
    };

    // t2: the bill counts it.
    // Billing may not know the customer yet (a platform just started): wait for its bill.
    let mut settled = loop {
        match bill_settled(&http, &bill_url, &token).await {
            Ok(settled) => break settled,
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(error = format!("{error:#}"), "waiting for the customer's bill");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.context("reading the bill")),
        }
    };
    let mut printed = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
        let now_settled = bill_settled(&http, &bill_url, &token).await?;
        let now = Instant::now();
        let mut guard = samples.lock().expect("samples lock is never poisoned");
        let state = &mut *guard;
        // Intervals counted before a reading was seen on the broker (a run started mid-interval)
        // are skipped; each further one finishes the oldest reading the ledger applied.
        for count in settled..now_settled {
            match state.pending.front() {
                Some(sample) if sample.applied.is_some() => {
                    let mut sample = state.pending.pop_front().expect("front exists");
                    sample.billed = Some(now);
                    sample.count = count + 1;
                    state.done.push(sample);
                }
                _ => {}
            }
        }
        settled = settled.max(now_settled);
        if state.done.len() >= printed + 10 {
            printed = state.done.len();
            println!("{printed} of {} readings timed", args.samples);
        }
        if state.done.len() >= args.samples + WARM_UP_SAMPLES {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} readings timed in time",
            state.done.len(),
            args.samples
        );
        anyhow::ensure!(!subscriber.is_finished(), "the MQTT subscriber stopped");
        anyhow::ensure!(!follower.is_finished(), "the ledger follower stopped");
    }
    // The stream's event for the last count may trail the poll by a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    subscriber.abort();
    follower.abort();
    signer.abort();
    if streamer.is_finished() {
        match streamer.await {
            Ok(Err(error)) => println!("the live stream failed: {error:#}"),
            Ok(Ok(())) => println!("the live stream ended early"),
            Err(error) => println!("the live stream task: {error}"),
        }
    } else {
        streamer.abort();
    }
    let streamed = std::mem::take(&mut *streamed.lock().expect("stream lock is never poisoned"));
    let mut done = std::mem::take(&mut samples.lock().expect("samples lock is never poisoned").done);
    done.drain(..WARM_UP_SAMPLES.min(done.len()));
    let span = |from: fn(&Sample) -> Option<Instant>, to: fn(&Sample) -> Option<Instant>| -> Vec<Duration> {
        done.iter().filter_map(|sample| Some(to(sample)?.saturating_duration_since(from(sample)?))).collect()
    };
    println!(
        "reading-to-bill latency of {} readings of {} (bill read every {} ms):",
        done.len(),
        args.meter,
        args.poll_ms
    );
    println!("{}", describe("broker → ledger applied (gateway + ledger)", span(|s| Some(s.published), |s| s.applied)));
    println!("{}", describe("ledger applied → bill shows it (signature + billing)", span(|s| s.applied, |s| s.billed)));
    println!("{}", describe("  applied → signed (the next signature)", span(|s| s.applied, |s| s.signed)));
    println!("{}", describe("  signed → bill shows it (billing's feed)", span(|s| s.signed, |s| s.billed)));
    println!("{}", describe("broker → bill shows it", span(|s| Some(s.published), |s| s.billed)));
    let pushed: Vec<Duration> = done
        .iter()
        .filter_map(|sample| Some(streamed.get(&sample.count)?.saturating_duration_since(sample.published)))
        .collect();
    println!("{}", describe(&format!("broker → live stream shows it ({} of them)", pushed.len()), pushed));
    match http.get(format!("{}/metrics", args.billing)).send().await {
        Ok(response) => print_feed_split(&response.text().await.unwrap_or_default()),
        Err(error) => println!("billing's /metrics: {error}"),
    }
    Ok(())
}

/// Billing's feed pages since it started, from its `/metrics` histograms: how many, their mean
/// read and write times, and how many took longer than 64 and 256 ms.
fn print_feed_split(metrics: &str) {
    let value = |name: &str| {
        metrics.lines().find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    for (stage, name) in [("reading customers", "feed_read_seconds"), ("SQL write", "feed_write_seconds")] {
        let metric = format!("wattle_billing_{name}");
        let count = value(&format!("{metric}_count "));
        let sum = value(&format!("{metric}_sum "));
        // Cumulative bucket counts by upper bound (the bounds print as floats: compare as floats).
        let bucket = format!("{metric}_bucket{{le=\"");
        let at_most = |bound: f64| {
            metrics
                .lines()
                .filter_map(|line| {
                    let (le, count) = line.strip_prefix(&bucket)?.split_once("\"} ")?;
                    Some((le.parse::<f64>().ok()?, count.trim().parse::<f64>().ok()?))
                })
                .find(|(le, _)| (le - bound).abs() < 1e-9)
                .map_or(0.0, |(_, count)| count)
        };
        println!(
            "billing's feed, {stage:<18} {count:>6.0} pages   mean {:>6.1} ms   over 64 ms {:>4.0}   over 256 ms {:>4.0}",
            if count > 0.0 { sum / count * 1000.0 } else { 0.0 },
            count - at_most(0.064),
            count - at_most(0.256),
        );
    }
    let pages = value("wattle_billing_feed_page_customers_count ");
    let customers = value("wattle_billing_feed_page_customers_sum ");
    if pages > 0.0 {
        println!("billing's feed, customers per page: mean {:.1}", customers / pages);
    }
}
