//! Group commit: the writes of many concurrent workers in one database transaction.
//!
//! At a few hundred commands a second, a commit each (and a round trip per statement) is
//! what the relay waits on: PostgreSQL flushes its log once per commit, and each round trip
//! costs both sides a system call or two. A [`Batcher`] takes the writes its callers hand it,
//! and while up to `in_flight` batches are being written the next ones queue, so under load
//! a batch carries whatever arrived during the last one's round trip, and when idle a write
//! goes at once, alone. Each caller gets its own answer; a caller returns only after the
//! commit that holds its write.
//!
//! A batch that fails is written again one write at a time, so one write that cannot be
//! made (bad data, say) fails alone and the others go through.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::{RelayError, Result};

/// One kind of batched write: turns many items into one transaction.
pub trait BatchWrite: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    type Out: Send + 'static;
    /// The write's name in metrics (`voucher_batch_size{write}`).
    fn name(&self) -> &'static str;
    /// Writes `items` in one transaction and answers for each, in order.
    fn write<'a>(&'a self, items: &'a [Self::Item]) -> BoxFuture<'a, Result<Vec<Self::Out>>>;
}

type Job<W> = (
    <W as BatchWrite>::Item,
    oneshot::Sender<Result<<W as BatchWrite>::Out>>,
);

/// The handle workers submit writes through. Cloning it shares the one writer.
pub struct Batcher<W: BatchWrite> {
    jobs: mpsc::Sender<Job<W>>,
}

impl<W: BatchWrite> Clone for Batcher<W> {
    fn clone(&self) -> Self {
        Batcher {
            jobs: self.jobs.clone(),
        }
    }
}

impl<W: BatchWrite> Batcher<W> {
    /// Starts the writer: batches of at most `max_batch`, at most `in_flight` at once. It
    /// stops when the last handle is dropped.
    pub fn start(writer: W, max_batch: usize, in_flight: usize) -> Batcher<W> {
        let (jobs, mut queue) = mpsc::channel::<Job<W>>(max_batch * in_flight * 2);
        let writer = Arc::new(writer);
        let slots = Arc::new(Semaphore::new(in_flight.max(1)));
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                // Waiting for a slot first is what lets the next batch fill up.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let writer = writer.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    write_batch(&*writer, batch).await;
                });
            }
        });
        Batcher { jobs }
    }

    /// Writes `item` with whatever else is waiting; returns once its transaction committed.
    pub async fn submit(&self, item: W::Item) -> Result<W::Out> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send((item, answer))
            .await
            .map_err(|_| RelayError::WriterGone)?;
        answered.await.map_err(|_| RelayError::WriterGone)?
    }
}

async fn write_batch<W: BatchWrite>(writer: &W, batch: Vec<Job<W>>) {
    let (items, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let size = items.len();
    metrics::histogram!("voucher_batch_size", "write" => writer.name()).record(size as f64);
    let started = std::time::Instant::now();
    let written = writer.write(&items).await;
    metrics::histogram!("voucher_batch_write_seconds", "write" => writer.name())
        .record(started.elapsed().as_secs_f64());
    match written {
        Ok(outs) if outs.len() == size => {
            for (answer, out) in answers.into_iter().zip(outs) {
                let _ = answer.send(Ok(out));
            }
        }
        Ok(outs) => {
            // A writer answering for the wrong number of items is a bug; nobody is told
            // something was written that perhaps was not.
            tracing::error!(
                items = size,
                answers = outs.len(),
                "batched write answered for the wrong number of items"
            );
            for answer in answers {
                let _ = answer.send(Err(RelayError::Corrupt(
                    "batched write answered for the wrong number of items".into(),
                )));
            }
        }
        Err(e) if size == 1 => {
            if let Some(answer) = answers.into_iter().next() {
                let _ = answer.send(Err(e));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, items = size, "batched write failed; writing its items one by one");
            for (item, answer) in items.iter().zip(answers) {
                let one = writer.write(std::slice::from_ref(item)).await;
                let _ = answer.send(one.and_then(|mut outs| {
                    outs.pop()
                        .ok_or_else(|| RelayError::Corrupt("batched write answered nothing".into()))
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Doubles numbers; refuses 13 (and so any batch holding it); records batch sizes.
    struct Doubler {
        sizes: Arc<Mutex<Vec<usize>>>,
    }

    impl BatchWrite for Doubler {
        type Item = i32;
        type Out = i32;
        fn name(&self) -> &'static str {
            "doubler"
        }
        fn write<'a>(&'a self, items: &'a [i32]) -> BoxFuture<'a, Result<Vec<i32>>> {
            Box::pin(async move {
                self.sizes.lock().unwrap().push(items.len());
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                if items.contains(&13) {
                    return Err(RelayError::Poison("13".into()));
                }
                Ok(items.iter().map(|i| i * 2).collect())
            })
        }
    }

    #[tokio::test]
    async fn concurrent_writes_share_batches_and_a_bad_one_fails_alone() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let writer = Doubler {
            sizes: sizes.clone(),
        };
        let batcher = Batcher::start(writer, 64, 1);
        let mut tasks = Vec::new();
        for i in 0..50 {
            let b = batcher.clone();
            tasks.push(tokio::spawn(async move { (i, b.submit(i).await) }));
        }
        for task in tasks {
            let (i, answer) = task.await.unwrap();
            match answer {
                Ok(doubled) => assert_eq!(doubled, i * 2),
                Err(e) => {
                    assert_eq!(i, 13, "only 13 fails");
                    assert!(matches!(e, RelayError::Poison(_)));
                }
            }
        }
        // On this test's one-thread runtime all 50 are queued before the writer runs: they
        // go as one batch, which holds 13, so each is then written alone.
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes[0], 50);
        assert_eq!(sizes.len(), 1 + 50);
        assert!(sizes[1..].iter().all(|n| *n == 1));
    }
}
