//! Fewer, larger Noise frames under yamux.
//!
//! # Contract
//! * [`Yamux`] is yamux, as `libp2p::yamux::Config` sets it up, over a
//!   [`Coalesce`]d connection: the same protocol on the wire, in fewer
//!   encrypted frames and system calls.
//! * [`Coalesce`] passes reads and writes through and puts a flush off
//!   once. Noise collects writes into frames of up to 64 KiB and sends a
//!   frame when it is full or flushed, but yamux flushes after every frame
//!   of its own, which is at most 16 KiB: a 128 KiB chunk would leave as
//!   eight Noise frames and eight `send`s, each paying the whole network
//!   stack. A flush with something written since the last one put off
//!   returns pending and wakes the task at once, and yamux goes on to
//!   queue what its streams have ready; the flush after that, with nothing
//!   new written, goes through. So no flush waits past the task's next
//!   poll, and `poll_close` is Noise's, which flushes before it closes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::{AsyncRead, AsyncWrite, future};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::yamux;

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

/// A connection whose flushes wait for what is queued behind them (see the
/// module docs).
#[derive(Debug)]
pub struct Coalesce<C> {
    inner: C,
    /// Written since the last flush that was put off.
    fresh: bool,
}

impl<C> Coalesce<C> {
    pub fn new(inner: C) -> Self {
        Self { inner, fresh: false }
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Coalesce<C> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Coalesce<C> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, data))?;
        self.fresh |= n > 0;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if std::mem::take(&mut self.fresh) {
            // Put off once: whatever is queued behind this joins the frame.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::*;

    /// Records what reaches it: the bytes, and the flushes.
    #[derive(Default)]
    struct Sink {
        bytes: Vec<u8>,
        /// `bytes.len()` at each flush.
        flushed_at: Vec<usize>,
    }

    impl AsyncWrite for Sink {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            self.bytes.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            let n = self.bytes.len();
            self.flushed_at.push(n);
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn frame(i: u8) -> Vec<u8> {
        vec![i; 16 << 10]
    }

    #[test]
    fn frames_flushed_one_by_one_are_flushed_once_after_the_last_and_the_task_is_woken() {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Sink::default());
        for i in 0..3 {
            assert!(matches!(Pin::new(&mut c).poll_write(&mut cx, &frame(i)), Poll::Ready(Ok(16384))));
            // yamux flushes after every frame: put off, and the task woken
            // so that the flush is asked for again.
            assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
            assert_eq!(wakes.0.load(Ordering::SeqCst), usize::from(i) + 1);
        }
        assert!(c.inner.flushed_at.is_empty());
        // Nothing new since: the flush goes through, once, after every byte.
        assert!(matches!(Pin::new(&mut c).poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(c.inner.flushed_at, vec![3 * 16384]);
        assert_eq!(c.inner.bytes, [frame(0), frame(1), frame(2)].concat());
        // An idle connection's flushes go through at once and wake no one.
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn awaiting_a_flush_completes_it() {
        use futures::AsyncWriteExt;
        let mut c = Coalesce::new(Sink::default());
        futures::executor::block_on(async {
            c.write_all(b"last words").await.unwrap();
            c.flush().await.unwrap();
        });
        assert_eq!(c.inner.flushed_at, vec![10]);
    }
}
