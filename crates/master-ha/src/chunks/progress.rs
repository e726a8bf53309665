//! Progress of the engine's long work: re-replication after copies were lost (a server or a
//! disk gone) and the drain of disks marked for removal. Each is an *episode*: it starts when
//! the engine first counts chunks short of their goal, its total is the most it counted, it
//! ends when none is left. Shown by `mfsha status`, the page, and a log line every
//! [`LOG_EVERY`].

use mfsha_proto::client::LongWork;
use std::time::{Duration, Instant};

/// How often an episode under way logs its progress.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// One kind of long work and its episode, if one is under way.
#[derive(Debug)]
pub struct Episode {
    what: &'static str,
    run: Option<Run>,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    started: Instant,
    /// The most chunks short at once during the episode.
    peak: u64,
    remaining: u64,
    logged: Instant,
}

impl Episode {
    pub const fn new(what: &'static str) -> Episode {
        Episode { what, run: None }
    }

    /// A pass counted `remaining` chunks still short.
    pub fn observe(&mut self, remaining: u64) {
        let now = Instant::now();
        let what = self.what;
        match (&mut self.run, remaining) {
            (None, 0) => {}
            (None, n) => {
                tracing::info!(chunks = n, "{what} started: {n} chunks short of their goal");
                self.run = Some(Run { started: now, peak: n, remaining: n, logged: now });
            }
            (Some(run), 0) => {
                let secs = run.started.elapsed().as_secs_f64();
                tracing::info!(chunks = run.peak, secs, "{what} finished");
                self.run = None;
            }
            (Some(run), n) => {
                run.peak = run.peak.max(n);
                run.remaining = n;
                if run.logged.elapsed() >= LOG_EVERY {
                    run.logged = now;
                    let view = view(what, run);
                    tracing::info!(
                        done = view.done,
                        total = view.total,
                        eta_s = view.eta_ms.map(|ms| ms / 1000),
                        "{what} under way"
                    );
                }
            }
        }
    }

    /// This master stopped leading: another runs the engine now.
    pub fn forget(&mut self) {
        self.run = None;
    }

    pub fn view(&self) -> Option<LongWork> {
        self.run.as_ref().map(|run| view(self.what, run))
    }
}

fn view(what: &str, run: &Run) -> LongWork {
    let elapsed = run.started.elapsed();
    let done = run.peak - run.remaining;
    let eta = mfsha_raft::transport::transfers::eta(elapsed, done, run.peak);
    LongWork {
        what: what.to_string(),
        done,
        total: run.peak,
        unit: "chunks".into(),
        elapsed_ms: elapsed.as_millis() as u64,
        eta_ms: eta.map(|d| d.as_millis() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_runs_from_the_first_short_chunk_until_none_is_left() {
        let mut e = Episode::new("re-replication");
        e.observe(0);
        assert!(e.view().is_none(), "nothing short, nothing under way");
        e.observe(40);
        e.observe(50); // more found short: the total grows
        e.observe(20);
        let v = e.view().expect("under way");
        assert_eq!((v.done, v.total, v.unit.as_str()), (30, 50, "chunks"));
        assert!(v.eta_ms.is_some());
        e.observe(0);
        assert!(e.view().is_none(), "finished");
    }
}
