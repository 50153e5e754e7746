//! The local X-Ray daemon: it takes segment documents over UDP on loopback, as the AWS
//! daemon does on Lambda, and keeps each one as a line of a file the path reader
//! ([`crate::store`]) reads back; a reader may find the last line not yet whole, and skips it. The stages find it through the same variable Lambda sets
//! ([`crate::DAEMON_ADDRESS_ENV`]), so their code path is the one they run on AWS. Told to
//! ([`Collector::forward_to`]), it also sends every document on to an X-Ray endpoint
//! ([`crate::forward`]).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::forward::{Attach, ForwardStats, Forwarder, Outlet};

/// The file under the collector's directory that holds the documents, one per line.
pub const SEGMENTS_FILE: &str = "segments.jsonl";
/// The daemon protocol's datagram limit (a document plus its header line).
const MAX_DATAGRAM: usize = 65_535;
/// Receive buffer asked of the kernel (it caps it at `net.core.rmem_max`): a batch
/// processor exports hundreds of documents at once, and what overflows is lost, as UDP is.
const RECEIVE_BUFFER: usize = 4 * 1024 * 1024;
/// The longest a received document waits in memory before it is in the file.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// A running local daemon; it stops when dropped.
#[derive(Debug)]
pub struct Collector {
    address: SocketAddr,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Where the receive loop learns of a forwarder.
    attach: Attach,
    /// Dropped after the receive loop has stopped (see `Drop`), so it sends the last batch.
    forwarder: Option<(Forwarder, Arc<ForwardStats>)>,
}

impl Collector {
    /// Listens on a free loopback port and appends what arrives to `dir`/[`SEGMENTS_FILE`],
    /// on a thread of its own, so that a busy async runtime never leaves datagrams waiting
    /// until the kernel drops them.
    ///
    /// # Errors
    /// The directory, the file or the socket cannot be made.
    pub fn start(dir: &Path) -> std::io::Result<Collector> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(SEGMENTS_FILE);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
        if let Err(e) = socket.set_recv_buffer_size(RECEIVE_BUFFER) {
            tracing::warn!(error = %e, "X-Ray collector keeps the default receive buffer");
        }
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        let socket: UdpSocket = socket.into();
        socket.set_read_timeout(Some(FLUSH_EVERY))?;
        let address = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (outlet, attach) = Outlet::new();
        let thread = std::thread::Builder::new()
            .name("xray-collector".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || receive(&socket, file, outlet, &stop)
            })?;
        Ok(Collector {
            address,
            path,
            stop,
            thread: Some(thread),
            attach,
            forwarder: None,
        })
    }

    /// From now on, also sends every document to `client`'s X-Ray endpoint (PutTraceSegments,
    /// batched, from a thread of its own with its own runtime: give it a client no other
    /// runtime uses). Returns the forwarder's counts.
    ///
    /// # Errors
    /// Already forwarding, or the thread cannot be started.
    pub fn forward_to(
        &mut self,
        client: aws_sdk_xray::Client,
    ) -> std::io::Result<Arc<ForwardStats>> {
        if self.forwarder.is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the collector already forwards",
            ));
        }
        let (forwarder, queue, stats) = Forwarder::start(client)?;
        self.attach
            .send((queue, Arc::clone(&stats)))
            .map_err(|_| std::io::Error::other("the collector's receive loop has stopped"))?;
        self.forwarder = Some((forwarder, Arc::clone(&stats)));
        Ok(stats)
    }

    /// The forwarder's counts, when forwarding.
    pub fn forward_stats(&self) -> Option<&ForwardStats> {
        self.forwarder.as_ref().map(|(_, stats)| stats.as_ref())
    }

    /// Where the stages send their documents.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The file the documents are kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // The receive loop has dropped the forwarder's queue: the forwarder sends what is
        // left and ends, and dropping it (with the fields, after this) waits for that.
    }
}

fn receive(socket: &UdpSocket, file: File, mut outlet: Outlet, stop: &AtomicBool) {
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut refused = 0u64;
    let mut flushed = Instant::now();
    let flush = |out: &mut BufWriter<File>, flushed: &mut Instant| {
        if let Err(e) = out.flush() {
            tracing::warn!(error = %e, "X-Ray collector cannot write");
        }
        *flushed = Instant::now();
    };
    while !stop.load(Ordering::Relaxed) {
        match socket.recv(&mut buf) {
            Ok(n) => match document(&buf[..n]) {
                Some(doc) => {
                    let written = out.write_all(doc).and_then(|()| out.write_all(b"\n"));
                    if let Err(e) = written {
                        tracing::warn!(error = %e, "X-Ray collector cannot write");
                    }
                    outlet.offer(doc);
                    if flushed.elapsed() >= FLUSH_EVERY {
                        flush(&mut out, &mut flushed);
                    }
                }
                None => {
                    refused += 1;
                    if refused.is_power_of_two() {
                        tracing::warn!(
                            refused,
                            "X-Ray collector refused datagrams without the daemon header"
                        );
                    }
                }
            },
            // The read timeout: nothing arrived for a while, so what came is written out.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                flush(&mut out, &mut flushed);
            }
            Err(e) => tracing::warn!(error = %e, "X-Ray collector receive failed"),
        }
    }
    flush(&mut out, &mut flushed);
}

/// The document of a daemon datagram: after the `{"format": "json", "version": 1}` line.
/// Read by bytes, not parsed: this thread must keep up with bursts of thousands of
/// datagrams, and UDP drops what its buffer cannot hold.
fn document(datagram: &[u8]) -> Option<&[u8]> {
    let newline = datagram.iter().position(|b| *b == b'\n')?;
    let (header, rest) = datagram.split_at(newline);
    let compact: Vec<u8> = header
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let json_header = compact.starts_with(b"{")
        && compact.ends_with(b"}")
        && compact.windows(15).any(|w| w == b"\"format\":\"json\"");
    if !json_header {
        return None;
    }
    let doc = &rest[1..];
    // Documents are JSON objects on one line; anything else would break the file's lines.
    (doc.first() == Some(&b'{') && !doc.contains(&b'\n')).then_some(doc)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn documents_follow_the_daemon_header() {
        let ok = b"{\"format\": \"json\", \"version\": 1}\n{\"id\":\"a\"}";
        assert_eq!(document(ok), Some(&b"{\"id\":\"a\"}"[..]));
        assert_eq!(document(b"{\"id\":\"a\"}"), None, "no header");
        assert_eq!(document(b"{\"format\": \"xml\"}\n{}"), None);
        assert_eq!(document(b"{\"format\": \"json\"}\n{\n}"), None, "two lines");
        assert_eq!(document(b"{\"format\": \"json\"}\nnot json"), None);
    }
}
