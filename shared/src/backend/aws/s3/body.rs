//! Request bodies for uploads from an [`AsyncRead`] of known size: read into memory when
//! small, streamed when large. Either way the reader must yield exactly `size` bytes; a
//! shorter or longer one fails the upload, so a truncated source never becomes an object.

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::error::{Error, Result};
use crate::objstore::Body;

/// Streamed bodies are read in chunks of this size.
const CHUNK: usize = 256 * 1024;

/// Reads exactly `size` bytes of `body` into memory (`Permanent` if it has fewer or more).
pub(super) async fn read_exact(body: &mut Body, size: u64) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(size as usize);
    (&mut *body).take(size).read_to_end(&mut out).await?;
    if (out.len() as u64) < size {
        return Err(short(out.len() as u64, size));
    }
    Ok(out)
}

/// Fails when `body` has bytes left (it was declared shorter than it is).
pub(super) async fn expect_end(body: &mut Body, size: u64) -> Result<()> {
    let mut one = [0u8; 1];
    match body.read(&mut one).await? {
        0 => Ok(()),
        _ => Err(Error::permanent(format!("the body is longer than its size {size}"))),
    }
}

fn short(got: u64, size: u64) -> Error {
    Error::permanent(format!("the body ended after {got} of {size} bytes"))
}

/// An http-body over a reader that must yield exactly `size` bytes. The last chunk is held
/// back until the reader's end is confirmed, so an over-long reader fails the request before
/// the server has the whole declared length.
pub(super) struct ReaderBody {
    // The Mutex only makes the body `Sync` (the SDK asks for it); `poll_frame` has `&mut`.
    reader: Mutex<Body>,
    size: u64,
    remaining: u64,
    buf: Vec<u8>,
    held: Option<Bytes>,
    finished: bool,
}

impl ReaderBody {
    pub(super) fn new(reader: Body, size: u64) -> Self {
        ReaderBody {
            reader: Mutex::new(reader),
            size,
            remaining: size,
            buf: vec![0; CHUNK.min(size as usize)],
            held: None,
            finished: false,
        }
    }

    fn reader(&mut self) -> Pin<&mut (dyn AsyncRead + Send)> {
        self.reader.get_mut().unwrap_or_else(|e| e.into_inner()).as_mut()
    }
}

impl http_body::Body for ReaderBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            if this.remaining == 0 {
                let mut one = [0u8; 1];
                let mut rb = ReadBuf::new(&mut one);
                ready!(this.reader().poll_read(cx, &mut rb))?;
                if !rb.filled().is_empty() {
                    let msg = format!("the body is longer than its size {}", this.size);
                    return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::InvalidData, msg))));
                }
                this.finished = true;
                return Poll::Ready(this.held.take().map(|b| Ok(Frame::data(b))));
            }
            let want = (this.remaining as usize).min(this.buf.len());
            let mut buf = std::mem::take(&mut this.buf);
            let mut rb = ReadBuf::new(&mut buf[..want]);
            let polled = this.reader().poll_read(cx, &mut rb);
            let n = rb.filled().len();
            let data = Bytes::copy_from_slice(rb.filled());
            this.buf = buf;
            ready!(polled)?;
            if n == 0 {
                let msg = short(this.size - this.remaining, this.size).to_string();
                return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg))));
            }
            this.remaining -= n as u64;
            if this.remaining > 0 {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            this.held = Some(data);
        }
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.held.as_ref().map_or(0, |b| b.len() as u64);
        SizeHint::with_exact(self.remaining + held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    async fn drain(mut b: ReaderBody) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = std::future::poll_fn(|cx| Pin::new(&mut b).poll_frame(cx)).await {
            out.extend_from_slice(f?.data_ref().expect("data frame"));
        }
        Ok(out)
    }

    fn reader(n: usize) -> Body {
        Box::pin(std::io::Cursor::new((0..n).map(|i| i as u8).collect::<Vec<_>>()))
    }

    #[tokio::test]
    async fn a_streamed_body_yields_exactly_its_size_or_fails() {
        let n = 3 * CHUNK + 5;
        let got = drain(ReaderBody::new(reader(n), n as u64)).await.unwrap();
        assert_eq!(got, (0..n).map(|i| i as u8).collect::<Vec<_>>());
        assert_eq!(drain(ReaderBody::new(reader(0), 0)).await.unwrap(), b"");
        let e = drain(ReaderBody::new(reader(10), 11)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = drain(ReaderBody::new(reader(10), 9)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn in_memory_reads_check_the_size_both_ways() {
        assert_eq!(read_exact(&mut reader(4), 4).await.unwrap().len(), 4);
        assert!(read_exact(&mut reader(3), 4).await.is_err());
        let mut r = reader(5);
        read_exact(&mut r, 4).await.unwrap();
        assert!(expect_end(&mut r, 4).await.is_err());
    }
}
