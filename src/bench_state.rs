//! `wattle bench state`: how state, snapshots and history grow with meters and readings, and what
//! a receipt costs, at store level: the real `Store` over RocksDB (fsync on) in a temporary
//! directory, fed committed entries as openraft applies them (`ledger::driver`), no cluster.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use ledger::driver::{self, Driver};
use ledger::kv::Cf;
use rand::Rng;

/// Options of `wattle bench state`.
#[derive(Debug, clap::Args)]
pub struct StateBenchArgs {
    /// Meters (one customer each).
    #[arg(long, default_value_t = 100)]
    meters: u32,
    /// Readings per meter (sequences 1..=N, one per 15-minute interval).
    #[arg(long, default_value_t = 1_000)]
    readings_per_meter: u64,
    /// Readings per transaction (one raft entry each), as a gateway batches them.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Tick entries added after the readings, to measure receipts over a longer log.
    #[arg(long, default_value_t = 0)]
    pad_entries: u64,
    /// Receipts to build at random leaves (plus the first and the last).
    #[arg(long, default_value_t = 200)]
    receipts: u32,
    /// Settle by this tariff version (TOML, docs/tariffs/), every meter bound to it (rules
    /// version 2), instead of the flat price: compare the two runs' apply times for
    /// settlement's share of the apply path.
    #[arg(long)]
    tariff: Option<std::path::PathBuf>,
    /// Where to keep the database (a temporary directory by default).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

/// Key and value bytes, and key count, of one column family.
fn family_size(store: &ledger::store::Store, cf: Cf) -> anyhow::Result<(u64, u64)> {
    let (mut keys, mut bytes) = (0u64, 0u64);
    store.kv().scan(cf, &[], &mut |key, value| {
        keys += 1;
        bytes += (key.len() + value.len()) as u64;
        true
    })?;
    Ok((keys, bytes))
}

pub async fn state(args: StateBenchArgs) -> anyhow::Result<()> {
    let temporary = tempfile::tempdir()?;
    let dir = args.data_dir.clone().unwrap_or_else(|| temporary.path().to_path_buf());
    run(&args, &dir).await
}

async fn run(args: &StateBenchArgs, dir: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch > 0 && args.meters > 0, "--batch and --meters must be positive");
    let store = ledger::store::Store::open(dir, std::sync::Arc::new(ledger::secrets::LedgerSecrets::generate()))?;
    let mut driver = Driver::new(store.clone()).await?;
    driver.configure(args.meters, rust_decimal::Decimal::new(3127, 4)).await?;
    if let Some(path) = &args.tariff {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let tariff = domain::tariff::parse_toml(&text).with_context(|| format!("tariff {}", path.display()))?;
        driver.bind_all(args.meters, &tariff).await?;
        println!("settling by tariff {} from {} (rules version 2)", tariff.id, tariff.valid_from);
    }
    let readings_total = u64::from(args.meters) * args.readings_per_meter;
    println!(
        "bench state: {} meters x {} readings = {readings_total} readings, {} per entry; RocksDB with fsync in {}",
        args.meters,
        args.readings_per_meter,
        args.batch,
        dir.display()
    );
    // Interval by interval, every meter's next reading, in batches of --batch.
    let started = Instant::now();
    let (mut signing, mut applying) = (Duration::ZERO, Duration::ZERO);
    let mut pending = Vec::with_capacity(args.batch);
    let mut bodies = Vec::new();
    let mut applied = 0u64;
    for sequence in 1..=args.readings_per_meter {
        for meter in 0..args.meters {
            pending.push((meter, driver::reading(meter, sequence, 250 + u64::from(meter % 7))));
            let last = sequence == args.readings_per_meter && meter + 1 == args.meters;
            if pending.len() == args.batch || last {
                let at = Instant::now();
                bodies.push(driver::readings_body(&pending));
                signing += at.elapsed();
                applied += pending.len() as u64;
                pending.clear();
            }
            // Up to ~10,000 readings per apply call, as openraft hands over committed entries.
            if (bodies.len() * args.batch >= 10_000 || last) && !bodies.is_empty() {
                let at = Instant::now();
                let results = driver.apply(std::mem::take(&mut bodies)).await?;
                applying += at.elapsed();
                for result in results {
                    let refused = result.readings.iter().find(|r| **r != ledger::state::ReadingResult::Accepted);
                    anyhow::ensure!(refused.is_none(), "a reading was refused: {refused:?}");
                }
            }
        }
        if sequence % (args.readings_per_meter / 10).max(1) == 0 {
            println!("  {applied} readings applied ({:.0} s)", started.elapsed().as_secs_f64());
        }
    }
    let mut padded = 0;
    while padded < args.pad_entries {
        let count = (args.pad_entries - padded).min(1_000);
        driver.apply((0..count).map(|_| domain::tx::TxBody::Tick).collect()).await?;
        padded += count;
    }
    let marker = driver.sign().await?;
    let entries = marker + 1;
    println!(
        "applied {readings_total} readings in {:.1} s (signing and verifying them: {:.1} s, applying: {:.1} s); \
         {entries} log entries signed",
        started.elapsed().as_secs_f64(),
        signing.as_secs_f64(),
        applying.as_secs_f64()
    );

    // Sizes: what a snapshot carries (state) against what only the history keeps.
    let meters = u64::from(args.meters);
    println!("{:<18} {:>10} {:>14} {:>16} {:>16}", "family", "keys", "bytes", "bytes per meter", "bytes/reading");
    for (name, cf) in [
        ("public (state)", Cf::Public),
        ("private (state)", Cf::Private),
        ("sm_meta (state)", Cf::SmMeta),
        ("history", Cf::History),
        ("history_readings", Cf::Readings),
        ("history_tree", Cf::Tree),
    ] {
        let (keys, bytes) = family_size(&store, cf)?;
        println!(
            "{name:<18} {keys:>10} {bytes:>14} {:>16.1} {:>16.2}",
            bytes as f64 / meters as f64,
            bytes as f64 / readings_total.max(1) as f64
        );
    }
    let at = Instant::now();
    let snapshot_bytes = driver.snapshot_bytes().await?;
    println!(
        "snapshot: {snapshot_bytes} bytes ({:.1} per meter, {:.3} per reading), built in {:.2} s",
        snapshot_bytes as f64 / meters as f64,
        snapshot_bytes as f64 / readings_total.max(1) as f64,
        at.elapsed().as_secs_f64()
    );

    // Receipts: the first leaf, the last, and random ones, each verified.
    let service_key = driver.service_public_key();
    let mut rng = rand::thread_rng();
    let mut leaves = vec![0, marker];
    leaves.extend((0..args.receipts).map(|_| rng.gen_range(0..=marker)));
    let mut times = Vec::with_capacity(leaves.len());
    for &leaf in &leaves {
        let at = Instant::now();
        let receipt =
            ledger::receipts::build(&store, leaf).map_err(|error| anyhow::anyhow!("receipt {leaf}: {error:?}"))?;
        times.push(at.elapsed());
        receipt.verify(&service_key, None).map_err(|error| anyhow::anyhow!("receipt {leaf}: {error}"))?;
    }
    let first = times[0];
    times.sort();
    let median = times[times.len() / 2];
    let max = *times.last().context("receipts")?;
    println!(
        "receipts over {entries} entries: leaf 0 {:.1} us, median {:.1} us, max {:.1} us ({} built and verified)",
        first.as_secs_f64() * 1e6,
        median.as_secs_f64() * 1e6,
        max.as_secs_f64() * 1e6,
        leaves.len()
    );
    // What a receipt for leaf 0 cost before subtrees were kept: reading every leaf.
    let at = Instant::now();
    let mut leaves_read = 0u64;
    store.kv().scan(Cf::History, &[], &mut |_, value| {
        leaves_read += u64::from(value.len() >= 64);
        true
    })?;
    println!(
        "for comparison, reading all {leaves_read} history records (the old receipt's cost): {:.1} ms",
        at.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
