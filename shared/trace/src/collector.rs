//! The local X-Ray daemon: it takes segment documents over UDP on loopback, as the AWS
//! daemon does on Lambda, and keeps each one as a line of a file the path reader
//! ([`crate::store`]) reads back. The stages find it through the same variable Lambda sets
//! ([`crate::DAEMON_ADDRESS_ENV`]), so their code path is the one they run on AWS.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::net::UdpSocket;

/// The file under the collector's directory that holds the documents, one per line.
pub const SEGMENTS_FILE: &str = "segments.jsonl";
/// The daemon protocol's datagram limit (a document plus its header line).
const MAX_DATAGRAM: usize = 65_535;

/// A running local daemon; it stops when dropped.
#[derive(Debug)]
pub struct Collector {
    address: SocketAddr,
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// Listens on a free loopback port and appends what arrives to `dir`/[`SEGMENTS_FILE`].
    ///
    /// # Errors
    /// The directory, the file or the socket cannot be made.
    pub async fn start(dir: &Path) -> std::io::Result<Collector> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(SEGMENTS_FILE);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let address = socket.local_addr()?;
        let task = tokio::spawn(receive(socket, file));
        Ok(Collector {
            address,
            path,
            task,
        })
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
        self.task.abort();
    }
}

async fn receive(socket: UdpSocket, mut file: File) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut refused = 0u64;
    loop {
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "X-Ray collector receive failed");
                continue;
            }
        };
        match document(&buf[..n]) {
            Some(doc) => {
                // One write per document: a line is whole on disk before the next arrives,
                // so a reader never sees half a document.
                let mut line = Vec::with_capacity(doc.len() + 1);
                line.extend_from_slice(doc);
                line.push(b'\n');
                if let Err(e) = file.write_all(&line) {
                    tracing::warn!(error = %e, "X-Ray collector cannot write");
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
        }
    }
}

/// The document of a daemon datagram: after the `{"format": "json", "version": 1}` line.
fn document(datagram: &[u8]) -> Option<&[u8]> {
    let newline = datagram.iter().position(|b| *b == b'\n')?;
    let (header, rest) = datagram.split_at(newline);
    let header: serde_json::Value = serde_json::from_slice(header).ok()?;
    if header.get("format")?.as_str()? != "json" {
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
