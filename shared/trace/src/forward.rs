//! The local daemon's documents sent on to an X-Ray endpoint (PutTraceSegments), as AWS's
//! daemon sends them to X-Ray: in batches, from a thread of its own, so that the UDP receive
//! loop only hands each document over and never waits on HTTP. Locally the endpoint is moto's
//! X-Ray, which `riffle trace --source xray` then reads as it reads X-Ray on AWS.
//!
//! What cannot be handed over (the queue is full) or sent (the call failed) is dropped and
//! counted, as UDP drops what the daemon cannot keep up with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use aws_sdk_xray::Client;
use aws_sdk_xray::error::DisplayErrorContext;

/// Documents per PutTraceSegments call, the batch AWS's daemon sends.
pub const PUT_TRACE_SEGMENTS_MAX_DOCUMENTS: usize = 50;
/// The longest a document waits for its batch to fill.
pub const FORWARD_EVERY: Duration = Duration::from_millis(200);
/// Documents waiting for the forwarder: a few seconds of a busy local pipeline sampled in
/// full, so a slow endpoint costs documents, never the receive loop's time.
const QUEUE_DOCUMENTS: usize = 20_000;

/// What the forwarder did, for tests and warnings.
#[derive(Debug, Default)]
pub struct ForwardStats {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl ForwardStats {
    /// Documents the endpoint accepted.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Documents the endpoint refused, or whose call failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Documents dropped because the queue to the forwarder was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A forwarder's queue, and its counts.
pub(crate) type Queue = (SyncSender<Vec<u8>>, Arc<ForwardStats>);
/// How a forwarder's queue reaches a running receive loop.
pub(crate) type Attach = mpsc::Sender<Queue>;

/// The receive loop's end: the queue to the forwarder once one is attached.
#[derive(Debug)]
pub(crate) struct Outlet {
    attach: Receiver<Queue>,
    queue: Option<Queue>,
}

impl Outlet {
    /// An outlet, and the sender [`Forwarder::start`]'s queue is attached through (the
    /// collector may be told to forward after its thread started).
    pub(crate) fn new() -> (Outlet, Attach) {
        let (tx, attach) = mpsc::channel();
        (
            Outlet {
                attach,
                queue: None,
            },
            tx,
        )
    }

    /// Hands `doc` to the forwarder, if there is one, without waiting.
    pub(crate) fn offer(&mut self, doc: &[u8]) {
        if let Ok(queue) = self.attach.try_recv() {
            self.queue = Some(queue);
        }
        let Some((queue, stats)) = &self.queue else {
            return;
        };
        match queue.try_send(doc.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(dropped, "X-Ray forwarder behind; documents dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => self.queue = None,
        }
    }
}

/// The forwarding thread; dropping it waits for its last batch, which it sends once the
/// receive loop (the queue's sender) is gone.
#[derive(Debug)]
pub(crate) struct Forwarder {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    /// Starts the thread that sends to `client`'s endpoint; returns it with its queue.
    /// `client` is used only from this thread's own runtime: give it a client of its own.
    pub(crate) fn start(
        client: Client,
    ) -> std::io::Result<(Forwarder, SyncSender<Vec<u8>>, Arc<ForwardStats>)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (queue, documents) = mpsc::sync_channel(QUEUE_DOCUMENTS);
        let stats = Arc::new(ForwardStats::default());
        let thread = std::thread::Builder::new()
            .name("xray-forwarder".into())
            .spawn({
                let stats = Arc::clone(&stats);
                move || forward(&documents, &runtime, &client, &stats)
            })?;
        let forwarder = Forwarder {
            thread: Some(thread),
        };
        Ok((forwarder, queue, stats))
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Batches documents: a full batch goes at once, a partial one after [`FORWARD_EVERY`].
fn forward(
    documents: &Receiver<Vec<u8>>,
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    stats: &ForwardStats,
) {
    let mut batch = Vec::with_capacity(PUT_TRACE_SEGMENTS_MAX_DOCUMENTS);
    let mut due = Instant::now() + FORWARD_EVERY;
    loop {
        let wait = due.saturating_duration_since(Instant::now());
        let more = match documents.recv_timeout(wait) {
            Ok(doc) => {
                batch.extend(String::from_utf8(doc).ok());
                if batch.len() < PUT_TRACE_SEGMENTS_MAX_DOCUMENTS {
                    continue;
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        };
        if !batch.is_empty() {
            runtime.block_on(put(client, std::mem::take(&mut batch), stats));
        }
        if !more {
            return;
        }
        due = Instant::now() + FORWARD_EVERY;
    }
}

async fn put(client: &Client, batch: Vec<String>, stats: &ForwardStats) {
    let n = batch.len() as u64;
    let outcome = client
        .put_trace_segments()
        .set_trace_segment_documents(Some(batch))
        .send()
        .await;
    let refused = match &outcome {
        Ok(out) => out.unprocessed_trace_segments().len() as u64,
        Err(_) => n,
    }
    .min(n);
    let before = stats.failed.fetch_add(refused, Ordering::Relaxed);
    stats.sent.fetch_add(n - refused, Ordering::Relaxed);
    // One warning each time the failures double: a gone endpoint must not flood the log.
    let warn = refused > 0 && (before == 0 || (before + refused).ilog2() > before.ilog2());
    match outcome {
        Err(e) if warn => tracing::warn!(
            failed = before + refused,
            error = %DisplayErrorContext(&e),
            "X-Ray PutTraceSegments failed"
        ),
        Ok(out) if warn => {
            let first = out.unprocessed_trace_segments().first();
            tracing::warn!(
                failed = before + refused,
                code = first.and_then(|u| u.error_code()).unwrap_or_default(),
                message = first.and_then(|u| u.message()).unwrap_or_default(),
                "X-Ray refused forwarded documents"
            );
        }
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_outlet_hands_over_once_attached_and_drops_rather_than_waits() {
        let (mut outlet, attach) = Outlet::new();
        outlet.offer(b"{\"id\":\"before\"}");
        let (queue, documents) = mpsc::sync_channel(1);
        let stats = Arc::new(ForwardStats::default());
        attach.send((queue, Arc::clone(&stats))).unwrap();
        outlet.offer(b"{\"id\":\"a\"}");
        outlet.offer(b"{\"id\":\"b\"}");
        assert_eq!(documents.try_recv().unwrap(), b"{\"id\":\"a\"}");
        assert!(
            documents.try_recv().is_err(),
            "nothing from before, b dropped"
        );
        assert_eq!(stats.dropped(), 1);
        drop(documents);
        outlet.offer(b"{\"id\":\"c\"}");
        assert!(outlet.queue.is_none(), "a gone forwarder is let go");
    }
}
