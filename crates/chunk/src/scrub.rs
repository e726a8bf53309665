//! Background verification: re-reads every chunk of a disk at a fixed rate and checks each
//! block's CRC, so silent corruption is found (and the copy replaced) before a client needs
//! the data. One task per disk, like MooseFS's `HDD_TEST_SPEED`.

use crate::store::{blocking, Store};
use mfsha_proto::types::BLOCK_BYTES;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Bytes verified per step (whole blocks); the rate limit sleeps between steps.
const STEP_BYTES: u64 = 16 * BLOCK_BYTES;

/// Scrubs disk `disk` at `bytes_per_sec` until `shutdown`. Returns at once for a rate of 0.
pub async fn scrub_disk(
    store: Arc<Store>,
    disk: usize,
    bytes_per_sec: f64,
    mut shutdown: watch::Receiver<bool>,
) {
    if bytes_per_sec <= 0.0 {
        return;
    }
    loop {
        if store.disks[disk].is_damaged() {
            return;
        }
        let ids = store.chunks_on(disk);
        let mut checked = 0u64;
        for id in ids {
            let Ok((version, length)) = store.stat(id) else { continue };
            let mut offset = 0u64;
            while offset < length.max(1) {
                let result =
                    blocking(&store, move |s| s.verify_blocking(id, version, offset, STEP_BYTES))
                        .await;
                let n = match result {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                offset += n;
                checked += n;
                let wait = Duration::from_secs_f64(n as f64 / bytes_per_sec);
                if pause(wait, &mut shutdown).await {
                    return;
                }
            }
        }
        tracing::debug!(disk = %store.disks[disk].path.display(), checked, "scrub pass done");
        // Nothing to check (no chunks, or all changed under us): don't spin.
        if checked == 0 && pause(Duration::from_secs(1), &mut shutdown).await {
            return;
        }
    }
}

/// Sleeps for `wait`; true if shutdown was requested meanwhile.
async fn pause(wait: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = shutdown.changed() => true,
    }
}
