//! The disk budget: watches the database's size, stops intake above the budget, reclaims space;
//! and the garbage store's retention.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::limits::*;
use crate::Shared;

/// Bytes of the files under `dir` (the RocksDB directory: a handful of files).
pub(crate) fn directory_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => directory_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Watches the database's size against the disk budget; while over it, gives space back as the
/// outbox drains (at most every `DISK_RECLAIM_INTERVAL`).
pub(crate) async fn disk_loop(shared: Shared) {
    let mut last_reclaim: Option<(Instant, u64)> = None;
    let mut last_prune: Option<Instant> = None;
    loop {
        if shared.metrics.over_disk_budget.load(Ordering::Relaxed) {
            let depth = shared.store.outbox_depth();
            let due =
                last_reclaim.is_none_or(|(at, depth_then)| at.elapsed() >= DISK_RECLAIM_INTERVAL && depth < depth_then);
            if due {
                let store = shared.store.clone();
                match tokio::task::spawn_blocking(move || store.reclaim()).await {
                    Ok(Ok(())) => tracing::info!(outbox_depth = depth, "over the disk budget: space reclaimed"),
                    Ok(Err(error)) => tracing::warn!(%error, "reclaiming disk space failed"),
                    Err(error) => tracing::warn!(%error, "reclaim task failed"),
                }
                last_reclaim = Some((Instant::now(), depth));
            }
        }
        // The budget covers the database of good readings (`db`); garbage lives in its own
        // bounded database (`garbage`), so no amount of it can stop intake.
        let (db, garbage) = (shared.config.data_dir.join("db"), shared.config.data_dir.join("garbage"));
        let (bytes, garbage_bytes) =
            tokio::task::spawn_blocking(move || (directory_bytes(&db), directory_bytes(&garbage)))
                .await
                .unwrap_or((0, 0));
        shared.metrics.disk_bytes.set(bytes);
        shared.metrics.garbage_bytes.set(garbage_bytes);
        if last_prune.is_none_or(|at| at.elapsed() >= GARBAGE_PRUNE_INTERVAL) {
            let (store, now_ms) = (shared.store.clone(), shared.config.clock.now().0);
            match tokio::task::spawn_blocking(move || store.prune_garbage(now_ms)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(dropped)) => tracing::info!(dropped, "garbage past its retention dropped"),
                Ok(Err(error)) => tracing::warn!(%error, "pruning garbage failed"),
                Err(error) => tracing::warn!(%error, "prune task failed"),
            }
            last_prune = Some(Instant::now());
        }
        // Hysteresis: stop at the budget, take readings again only below 90 % of it.
        let was_over = shared.metrics.over_disk_budget.load(Ordering::Relaxed);
        let resume_below = shared.config.disk_budget_bytes / 10 * DISK_RESUME_TENTHS;
        let over = if was_over { bytes >= resume_below } else { bytes >= shared.config.disk_budget_bytes };
        if shared.metrics.over_disk_budget.swap(over, Ordering::Relaxed) != over {
            if over {
                tracing::error!(
                    bytes,
                    budget = shared.config.disk_budget_bytes,
                    "disk budget reached: readings are no longer taken; gap recovery fetches them once there is room"
                );
            } else {
                tracing::info!(bytes, "below the disk budget again: taking readings");
            }
        }
        tokio::time::sleep(DISK_CHECK_INTERVAL).await;
    }
}
