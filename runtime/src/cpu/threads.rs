//! Where the CPU backend runs its lanes: the calling thread, or a rayon pool. The work is
//! always decomposed the same way, one item per (batch, head) lane, each computed by the same
//! sequential code whatever thread runs it, and the items' results (outputs, statistics) are
//! combined in lane order: a call gives bit-identical results for any thread count.

use std::sync::Arc;

use rayon::prelude::*;

use crate::error::SataError;

/// Words of state times tokens below which a call stays on the calling thread: waking the
/// pool costs more than it gains. At d16 P4 that is 128 lanes of one decode step, or 64 lanes
/// of two tokens (`benches/results/threads-2026-12-06.md`).
pub const PARALLEL_MIN_WORK: usize = 1 << 21;

/// [`PARALLEL_MIN_WORK`], or `SATA_PARALLEL_MIN_WORK` where set (read once; the threads bench
/// sets it to find the crossover).
fn parallel_min_work() -> usize {
    static MIN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| {
        std::env::var("SATA_PARALLEL_MIN_WORK")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(PARALLEL_MIN_WORK)
    })
}

/// Whether one item (a lane's call) may split its own work (its chunks) over the rayon pool
/// it runs in: [`Threads::map_splitting`] says so for calls with fewer lanes than threads,
/// and runs them inside the pool. Results do not depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Split(pub bool);

/// The threads a CPU backend runs lanes on.
#[derive(Clone, Default)]
pub(crate) enum Threads {
    /// Rayon's global pool (its size is `RAYON_NUM_THREADS`, else one thread per core),
    /// created once per process on first use.
    #[default]
    Global,
    /// A pool of this attention's own, created once by `Attention::with_threads`.
    Pool(Arc<rayon::ThreadPool>),
}

impl Threads {
    /// A pool of `n` threads (`n >= 1`).
    pub fn pool(n: usize) -> Result<Self, SataError> {
        if n == 0 {
            return Err(SataError::InvalidThreads {
                reason: "at least one thread is needed".to_string(),
            });
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("sata-{i}"))
            .build()
            .map_err(|e| SataError::InvalidThreads {
                reason: e.to_string(),
            })?;
        Ok(Self::Pool(Arc::new(pool)))
    }

    /// Threads a parallel call uses.
    pub fn count(&self) -> usize {
        match self {
            Self::Global => rayon::current_num_threads(),
            Self::Pool(pool) => pool.current_num_threads(),
        }
    }

    /// `f` of every item, in order: in parallel where there are several items, more than one
    /// thread and at least [`PARALLEL_MIN_WORK`] of `work` (state words times tokens), on the
    /// calling thread otherwise.
    pub fn map<I: Send, R: Send>(
        &self,
        work: usize,
        items: Vec<I>,
        f: impl Fn(usize, I) -> R + Sync + Send,
    ) -> Vec<R> {
        let parallel = items.len() > 1 && work >= parallel_min_work() && self.count() > 1;
        if !parallel {
            return items
                .into_iter()
                .enumerate()
                .map(|(i, x)| f(i, x))
                .collect();
        }
        let run = || {
            items
                .into_par_iter()
                .enumerate()
                .map(|(i, x)| f(i, x))
                .collect()
        };
        match self {
            Self::Global => run(),
            Self::Pool(pool) => pool.install(run),
        }
    }

    /// Like [`Threads::map`], telling `f` whether its item may split its own work over the
    /// pool it runs in: a call with fewer items than threads, at least [`PARALLEL_MIN_WORK`]
    /// of `work` and `splittable` work runs its items one after the other inside the pool,
    /// each told `Split(true)`; otherwise as [`Threads::map`], each told `Split(false)`.
    pub fn map_splitting<I: Send, R: Send>(
        &self,
        work: usize,
        items: Vec<I>,
        splittable: bool,
        f: impl Fn(usize, I, Split) -> R + Sync + Send,
    ) -> Vec<R> {
        let threads = self.count();
        let split = splittable && items.len() < threads && threads > 1;
        if !(split && work >= parallel_min_work()) {
            return self.map(work, items, |i, x| f(i, x, Split(false)));
        }
        let run = || {
            items
                .into_iter()
                .enumerate()
                .map(|(i, x)| f(i, x, Split(true)))
                .collect()
        };
        match self {
            // `scope` runs its closure on a thread of the global pool, so the item's own
            // parallel work starts there instead of being handed over once per phase.
            Self::Global => rayon::scope(|_| run()),
            Self::Pool(pool) => pool.install(run),
        }
    }
}

impl std::fmt::Display for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.count() {
            1 => write!(f, "1 thread"),
            n => write!(f, "{n} threads"),
        }
    }
}
