/*!
systemd service notifications (`sd_notify(3)`) for the mfsha daemons.

The units in `systemd/` are `Type=notify` with `WatchdogSec=`: each daemon says
[`ready`] once its listeners are bound and its store is open, [`stopping`] when it begins to
shut down, and runs [`watchdog`] beside its main loop. Every call is a no-op when the daemon was
not started by systemd (no `NOTIFY_SOCKET`, or no `WATCHDOG_USEC` for this process), so the
daemons call them unconditionally and a daemon run by hand behaves as before.

Why a probe instead of a plain timer: a timer on the async runtime proves only that the runtime
schedules tasks. The probe lets each daemon add what its main loop is — the master's Raft
thread ticking, the chunkserver's data port still accepting — so systemd restarts a daemon
whose essential loop died or hung while the process lived on.
*/

use std::convert::Infallible;
use std::time::Duration;

/// `READY=1`: the daemon serves (listeners bound, store open).
pub fn ready() {
    send(sd_notify::NotifyState::Ready);
}

/// `STOPPING=1`: the daemon has begun its clean shutdown.
pub fn stopping() {
    send(sd_notify::NotifyState::Stopping);
}

/// How often to send `WATCHDOG=1`: half the `WATCHDOG_USEC` systemd set for this process, as
/// `sd_watchdog_enabled(3)` recommends, so one late ping is not yet a missed deadline. `None`
/// when systemd asked for no watchdog (or asked it of another process: `WATCHDOG_PID`).
pub fn watchdog_period() -> Option<Duration> {
    let mut usec = 0;
    // false: keep the variables; the watchdog task reads them after start-up.
    match sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        true => Some(Duration::from_micros(usec) / 2),
        false => None,
    }
}

/// Sends `WATCHDOG=1` every [`watchdog_period`] while `alive` answers `Ok`; a round where it
/// answers `Err(what is stuck)` is logged and sends nothing, so systemd restarts the daemon
/// once the problem outlasts `WatchdogSec`. Never returns (it waits forever when systemd set no
/// watchdog), so it can be an arm of the daemon's `select!`: `never = watchdog(..) => match
/// never {}`. It runs on the daemon's runtime, so a runtime that stops scheduling tasks stops
/// the pings too.
pub async fn watchdog(mut alive: impl FnMut() -> Result<(), String>) -> Infallible {
    let Some(period) = watchdog_period() else {
        return std::future::pending().await;
    };
    tracing::info!(period_ms = period.as_millis() as u64, "systemd watchdog: pinging");
    let mut every = tokio::time::interval(period);
    // After a stall, ping once and go on: a burst of pings would hide nothing and help nobody.
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match alive() {
            Ok(()) => send(sd_notify::NotifyState::Watchdog),
            Err(stuck) => tracing::error!(%stuck,
                "systemd watchdog: not pinging; systemd restarts the daemon if this lasts"),
        }
    }
}

fn send(state: sd_notify::NotifyState) {
    // false: keep NOTIFY_SOCKET for the notifications that follow (watchdog, stopping).
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

#[cfg(test)]
mod tests;
