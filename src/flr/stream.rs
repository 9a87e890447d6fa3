//! Response bodies made on a blocking thread (file reads, tar archives)
//! and fed to the client through a small channel: memory stays bounded,
//! and a client that went away stops the producer at its next write.

use axum::body::Body;
use bytes::Bytes;
use tokio::sync::mpsc;

pub fn copy_range(
    file: std::fs::File,
    start: u64,
    len: u64,
    w: &mut ChannelWriter,
) -> std::io::Result<()> {
    use std::io::{Read, Seek, Write};
    let mut f = file;
    f.seek(std::io::SeekFrom::Start(start))?;
    let mut left = len;
    let mut buf = vec![0u8; 256 << 10];
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shrank",
            ));
        }
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    w.flush()
}

/// A `Write` feeding a response body.
pub struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 << 10;

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

/// A body produced by `produce` on a blocking thread.
pub fn stream_blocking(
    produce: impl FnOnce(&mut ChannelWriter) -> std::io::Result<()> + Send + 'static,
) -> Body {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let r = produce(&mut w).and_then(|_| std::io::Write::flush(&mut w));
        if let Err(e) = r {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::warn!("flr: a download stopped: {e}");
                // The body ends with an error, so the client sees a broken
                // transfer rather than a short file.
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Body::from_stream(stream)
}
