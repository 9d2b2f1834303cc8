//! Group commit for stakes. With every commit on disk before it returns (SQLite's
//! `synchronous=FULL`, PostgreSQL's `synchronous_commit=on`), one transaction per stake paid
//! one flush and (on PostgreSQL) one round trip per stake. [`StakeBatcher`] gathers the stake
//! requests that arrive while a batch is committing and takes them in the next one
//! ([`Store::place_stakes`]: one transaction; on SQLite each stake checked before it writes,
//! on PostgreSQL one statement that takes its rows in the payouts' lock order and checks each
//! stake before it writes, so a refused stake fails alone). Each request is answered only
//! after its batch has committed.
//!
//! There is no batching thread: the first request to find no batch running leads one
//! (it takes every request waiting, up to [`MAX_BATCH`]), runs it as a task of its own (a
//! caller that goes away does not cancel its neighbours' batch), and the requests that arrived
//! meanwhile lead the next. A lone stake is a batch of one, with no added wait. SQLite commits
//! one batch at a time; on PostgreSQL a request that waited [`STALLED_AFTER`] for the batch
//! ahead leads one beside it (at most [`POSTGRES_OVERFLOW_BATCHES`] more).

use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::oneshot;

use crate::store::{Stake, StakeRequest, Store, StoreError};

/// Stakes in one transaction at most.
pub const MAX_BATCH: usize = 128;

/// Further PostgreSQL batches that may commit beside the first, each led by a request that
/// waited [`STALLED_AFTER`] for it. A batch takes its rows in the payouts' lock order, so
/// batches never deadlock with each other; one waiting on a row (a user's balance while a
/// large market pays its winners out) then holds up only its own stakes. Batches run one at a
/// time otherwise: side by side they take fewer stakes each and contend for the same markets
/// (BENCHMARKS.md, 2026-12-03). SQLite has one writer: one batch at a time.
pub const POSTGRES_OVERFLOW_BATCHES: usize = 3;

/// How long a PostgreSQL stake waits for the batch ahead of it before it leads one beside it.
pub const STALLED_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

type Waiting = (StakeRequest, oneshot::Sender<Result<Stake, StoreError>>);

/// See the module documentation. One per process, shared by the HTTP workers.
#[derive(Debug)]
pub struct StakeBatcher {
    waiting: Mutex<Vec<Waiting>>,
    /// Held by the batch committing now.
    leader: Arc<tokio::sync::Semaphore>,
    /// Held by PostgreSQL's batches beside it ([`POSTGRES_OVERFLOW_BATCHES`]).
    overflow: Arc<tokio::sync::Semaphore>,
    batches: std::sync::atomic::AtomicU64,
    stakes: std::sync::atomic::AtomicU64,
}

impl Default for StakeBatcher {
    fn default() -> Self {
        StakeBatcher {
            waiting: Mutex::default(),
            leader: Arc::new(tokio::sync::Semaphore::new(1)),
            overflow: Arc::new(tokio::sync::Semaphore::new(POSTGRES_OVERFLOW_BATCHES)),
            batches: Default::default(),
            stakes: Default::default(),
        }
    }
}

impl StakeBatcher {
    pub fn new() -> Arc<StakeBatcher> {
        Arc::new(StakeBatcher::default())
    }

    /// Places `request` in the next batch; answers once that batch has committed (or failed).
    pub async fn place(
        self: &Arc<Self>,
        store: &Store,
        request: StakeRequest,
    ) -> Result<Stake, StoreError> {
        let (tx, mut rx) = oneshot::channel();
        self.waiting
            .lock()
            .expect("stake queue")
            .push((request, tx));
        let overflow = store.backend() == crate::store::Backend::Postgres;
        loop {
            let beside = async {
                if !overflow {
                    return std::future::pending().await;
                }
                tokio::time::sleep(STALLED_AFTER).await;
                self.overflow.clone().acquire_owned().await
            };
            let guard = tokio::select! {
                biased;
                answer = &mut rx => return answered(answer),
                guard = self.leader.clone().acquire_owned() => guard,
                guard = beside => guard,
            };
            let Ok(guard) = guard else {
                return answered(rx.await);
            };
            let batch: Vec<Waiting> = {
                let mut waiting = self.waiting.lock().expect("stake queue");
                let n = waiting.len().min(MAX_BATCH);
                waiting.drain(..n).collect()
            };
            if batch.is_empty() {
                // Another leader took ours: its answer is on the way.
                drop(guard);
                return answered(rx.await);
            }
            let (store, this) = (store.clone(), self.clone());
            let batch = tokio::spawn(async move {
                this.commit(&store, batch).await;
                drop(guard);
            });
            let _ = batch.await;
        }
    }

    async fn commit(&self, store: &Store, batch: Vec<Waiting>) {
        use std::sync::atomic::Ordering::Relaxed;
        let (requests, answers): (Vec<StakeRequest>, Vec<_>) = batch.into_iter().unzip();
        self.batches.fetch_add(1, Relaxed);
        self.stakes.fetch_add(requests.len() as u64, Relaxed);
        match store.place_stakes(&requests, Utc::now()).await {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(result);
                }
            }
            Err(e) => {
                tracing::warn!(stakes = requests.len(), error = %e, "a batch of stakes failed; none of it committed");
                for answer in answers {
                    let _ = answer.send(Err(batch_error(&e)));
                }
            }
        }
    }

    /// Batches committed (or failed) since the start, and the stakes they held.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.batches.load(Relaxed), self.stakes.load(Relaxed))
    }
}

fn answered(
    answer: Result<Result<Stake, StoreError>, oneshot::error::RecvError>,
) -> Result<Stake, StoreError> {
    answer.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(
            "the batch holding this stake was abandoned; nothing of it committed".into(),
        ))
    })
}

/// The error every request of a failed batch answers: the batch's own, where it can be
/// repeated, else unavailable (nothing committed; the client may retry).
fn batch_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Fenced(epoch) => StoreError::Fenced(*epoch),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        other => StoreError::Unavailable(format!("the stake's batch failed: {other}")),
    }
}
