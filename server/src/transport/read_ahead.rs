//! A stream that reads up to [`READ_AHEAD`] bytes per system call however
//! little its reader asks for, and holds no buffer while the connection is
//! idle.
//!
//! tungstenite allocates its read buffer up front for every connection and
//! never reads more than that buffer's size in one call. A large buffer
//! makes idle WebSocket connections expensive (4 KiB of the 10 KiB each
//! one cost); a small one costs a system call per small read (WebSocket
//! queue throughput fell from a median of 531k to 322k msgs/s with 1 KiB).
//! Under this wrapper tungstenite's buffer can be small: its reads are
//! served from what one large read brought in. The TCP transport's decoder
//! buffer sits on it for the same reason: with a 16 KiB buffer of its own,
//! a connection that had been busy kept it when idle (14.7 KiB per
//! connection after 64 SENDs, 5.0 KiB under this wrapper).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes asked of the socket per read.
pub const READ_AHEAD: usize = 16 * 1024;

/// See the module documentation.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Read but not yet taken; empty (and unallocated) most of the time.
    ahead: BytesMut,
}

impl<S> ReadAhead<S> {
    /// Wraps a stream.
    pub fn new(inner: S) -> ReadAhead<S> {
        ReadAhead {
            inner,
            ahead: BytesMut::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.ahead.is_empty() {
            let n = this.ahead.len().min(out.remaining());
            out.put_slice(&this.ahead[..n]);
            this.ahead.advance(n);
            if this.ahead.is_empty() {
                // Give the memory back rather than keep it for an idle connection.
                this.ahead = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        if out.remaining() >= READ_AHEAD {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        // The large read goes to the stack: nothing is held while the
        // socket has nothing to give, and only the excess is kept.
        let mut storage = [MaybeUninit::<u8>::uninit(); READ_AHEAD];
        let mut chunk = ReadBuf::uninit(&mut storage);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
        let read = chunk.filled();
        let n = read.len().min(out.remaining());
        out.put_slice(&read[..n]);
        this.ahead.extend_from_slice(&read[n..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn small_reads_get_every_byte_in_order_from_few_large_ones() {
        let (mut far, near) = tokio::io::duplex(64 * 1024);
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        far.write_all(&data).await.expect("write");
        drop(far);
        let mut reader = ReadAhead::new(near);
        let mut got = Vec::new();
        let mut small = [0u8; 100];
        loop {
            let n = reader.read(&mut small).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
            // What was read ahead never exceeds one large read.
            assert!(reader.ahead.len() < READ_AHEAD);
        }
        assert_eq!(got, data);
        assert_eq!(reader.ahead.capacity(), 0, "nothing is held once drained");
    }

    #[tokio::test]
    async fn large_reads_go_straight_through() {
        let (mut far, near) = tokio::io::duplex(64 * 1024);
        far.write_all(&[7u8; 1000]).await.expect("write");
        let mut reader = ReadAhead::new(near);
        let mut large = vec![0u8; READ_AHEAD];
        let n = reader.read(&mut large).await.expect("read");
        assert_eq!(&large[..n], &[7u8; 1000][..]);
        assert!(reader.ahead.is_empty());
    }
}
