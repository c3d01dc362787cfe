//! The request-response codec for every imageswarm protocol.
//!
//! # Contract
//! A message on a stream is a 4-byte big-endian length and that many bytes of
//! [`proto::wire`] encoding. The length is checked against the message
//! kind's [`Limit`] before anything is allocated, so a peer cannot make a
//! node buffer more than one chunk per stream. [`read_frame`] and
//! [`write_frame`] are that framing, for streams outside request-response.
//! A chunk's bytes go from the sender's buffer to the stream, and from the
//! received frame to the [`proto::wire::Response`], without a copy
//! ([`Message`]).

use std::io;
use std::marker::PhantomData;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use proto::wire::{Limit, Message};

/// A length-prefixed [`proto::wire`] codec for requests `Req` and responses
/// `Resp`, whose responses may be up to `response_limit`.
#[derive(Debug)]
pub struct WireCodec<Req, Resp> {
    response_limit: Limit,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> WireCodec<Req, Resp> {
    /// A codec whose responses may be as large as `response_limit` allows.
    pub fn new(response_limit: Limit) -> Self {
        Self { response_limit, _types: PhantomData }
    }
}

impl<Req, Resp> Clone for WireCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self::new(self.response_limit)
    }
}

/// Reads one message of at most `limit` bytes.
pub async fn read_frame<T, M>(io: &mut T, limit: Limit) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: Message,
{
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit.bytes() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a {len}-byte message is over the limit")));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    M::from_frame(buf, limit).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes one message and flushes it.
pub async fn write_frame<T, M>(io: &mut T, msg: &M) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    M: Message,
{
    let (head, tail) = msg.to_parts().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let len = u32::try_from(head.len() + tail.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too long"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&head).await?;
    io.write_all(tail).await?;
    io.flush().await
}

#[async_trait::async_trait]
impl<Req, Resp> libp2p::request_response::Codec for WireCodec<Req, Resp>
where
    Req: Message + Send + Sync + 'static,
    Resp: Message + Send + Sync + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, Limit::Control).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.response_limit).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, resp: Resp) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &resp).await
    }
}
