//! Fewer, larger writes under yamux.
//!
//! # Contract
//! * [`Yamux`] is yamux, as `libp2p::yamux::Config` sets it up, over a
//!   [`Coalesce`]d connection: the same protocol on the wire, in fewer
//!   encrypted frames and system calls.
//! * [`Coalesce`] passes reads through. Writes are buffered (up to
//!   [`BUFFER`] bytes, beyond which they go through at once), and a flush
//!   is put off once, with the task woken at once: yamux flushes after
//!   every frame, and its frames are at most 16 KiB, so a 128 KiB chunk
//!   would otherwise leave as eight Noise frames and eight `send`s, each
//!   paying the whole network stack. Frames queued meanwhile join the
//!   buffer; the flush that follows, with nothing new written since the
//!   one put off, goes through. So nothing waits for more than one turn of
//!   the task, and `poll_close` writes everything before it closes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::{AsyncRead, AsyncWrite, future};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::yamux;

/// Bytes held before a write goes through without waiting for a flush:
/// one Noise frame's worth.
pub const BUFFER: usize = 64 << 10;

/// yamux over a [`Coalesce`]d connection.
#[derive(Debug, Clone, Default)]
pub struct Yamux(pub yamux::Config);

impl UpgradeInfo for Yamux {
    type Info = <yamux::Config as UpgradeInfo>::Info;
    type InfoIter = <yamux::Config as UpgradeInfo>::InfoIter;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.protocol_info()
    }
}

impl<C> InboundConnectionUpgrade<C> for Yamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = yamux::Muxer<Coalesce<C>>;
    type Error = io::Error;
    type Future = future::Ready<io::Result<Self::Output>>;

    fn upgrade_inbound(self, io: C, info: Self::Info) -> Self::Future {
        self.0.upgrade_inbound(Coalesce::new(io), info)
    }
}

impl<C> OutboundConnectionUpgrade<C> for Yamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = yamux::Muxer<Coalesce<C>>;
    type Error = io::Error;
    type Future = future::Ready<io::Result<Self::Output>>;

    fn upgrade_outbound(self, io: C, info: Self::Info) -> Self::Future {
        self.0.upgrade_outbound(Coalesce::new(io), info)
    }
}

/// A connection whose small writes leave together (see the module docs).
#[derive(Debug)]
pub struct Coalesce<C> {
    inner: C,
    buf: Vec<u8>,
    /// Written since the last flush that was put off.
    fresh: bool,
}

impl<C> Coalesce<C> {
    pub fn new(inner: C) -> Self {
        Self { inner, buf: Vec::with_capacity(BUFFER), fresh: false }
    }
}

impl<C: AsyncWrite + Unpin> Coalesce<C> {
    /// Writes the whole buffer to the connection.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut done = 0;
        while done < self.buf.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.buf[done..]) {
                Poll::Ready(Ok(0)) => {
                    self.buf.drain(..done);
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => done += n,
                Poll::Ready(Err(e)) => {
                    self.buf.drain(..done);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    self.buf.drain(..done);
                    return Poll::Pending;
                }
            }
        }
        self.buf.clear();
        Poll::Ready(Ok(()))
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Coalesce<C> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Coalesce<C> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.buf.len() + data.len() > BUFFER {
            ready!(self.drain(cx))?;
        }
        if data.len() >= BUFFER {
            return Pin::new(&mut self.inner).poll_write(cx, data);
        }
        self.buf.extend_from_slice(data);
        self.fresh = true;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if std::mem::take(&mut self.fresh) {
            // Put off once: whatever is queued behind this joins the buffer.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures::AsyncWriteExt;
    use futures::task::noop_waker_ref;

    use super::*;

    /// Counts the writes that reach it.
    #[derive(Default)]
    struct Sink {
        writes: Vec<usize>,
        bytes: Vec<u8>,
    }

    impl AsyncWrite for Sink {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            self.writes.push(data.len());
            self.bytes.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frame(i: u8) -> Vec<u8> {
        vec![i; 16 << 10]
    }

    #[test]
    fn frames_flushed_one_by_one_leave_together_at_the_flush_after_the_last() {
        let mut c = Coalesce::new(Sink::default());
        let mut cx = Context::from_waker(noop_waker_ref());
        for i in 0..3 {
            assert!(matches!(Pin::new(&mut c).poll_write(&mut cx, &frame(i)), Poll::Ready(Ok(16384))));
            // yamux flushes after every frame: put off, nothing written.
            assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
            assert!(c.inner.writes.is_empty());
        }
        // Nothing new since: the flush goes through, in one write.
        assert!(matches!(Pin::new(&mut c).poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(c.inner.writes, vec![3 * 16384]);
        assert_eq!(c.inner.bytes, [frame(0), frame(1), frame(2)].concat());
    }

    #[test]
    fn a_full_buffer_goes_out_without_waiting_for_a_flush_and_order_is_kept() {
        let mut c = Coalesce::new(Sink::default());
        let mut cx = Context::from_waker(noop_waker_ref());
        for i in 0..5 {
            assert!(Pin::new(&mut c).poll_write(&mut cx, &frame(i)).is_ready());
        }
        // The fifth frame did not fit: the first four went out.
        assert_eq!(c.inner.writes, vec![BUFFER]);
        let big = vec![9u8; BUFFER];
        assert!(matches!(Pin::new(&mut c).poll_write(&mut cx, &big), Poll::Ready(Ok(n)) if n == BUFFER));
        assert_eq!(c.inner.writes, vec![BUFFER, 16384, BUFFER]);
        assert_eq!(c.inner.bytes, [frame(0), frame(1), frame(2), frame(3), frame(4), big].concat());
    }

    #[test]
    fn closing_writes_what_is_buffered() {
        let mut c = Coalesce::new(Sink::default());
        futures::executor::block_on(async {
            c.write_all(b"last words").await.unwrap();
            c.close().await.unwrap();
        });
        assert_eq!(c.inner.bytes, b"last words");
    }
}
