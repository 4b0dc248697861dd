//! Length-prefixed byte frames for request-response, capped at a maximum size before any allocation.
//!
//! Wire format of a request and of a response: a 4-byte big-endian length, then that many bytes.
//! A frame announcing more than the configured maximum is refused with an `InvalidData` I/O error
//! before its body is read; the body is read incrementally, so a peer that announces a large frame
//! and then stalls does not make us allocate the announced size up front.

use std::io;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;

/// The request-response protocol name.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/ringlog/req/1");

/// A frame that is larger than the configured maximum.
#[derive(Debug, thiserror::Error)]
#[error("frame of {len} bytes exceeds the maximum of {max}")]
pub(crate) struct FrameTooLarge {
    /// The announced or offered length.
    pub(crate) len: u64,
    /// The configured maximum.
    pub(crate) max: usize,
}

/// Opaque request and response bytes, each at most `max` bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BytesCodec {
    max: usize,
}

impl BytesCodec {
    pub(crate) fn new(max: usize) -> Self {
        Self { max }
    }
}

/// Reads one frame of at most `max` bytes.
pub(crate) async fn read_frame<T>(io: &mut T, max: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = u64::from(u32::from_be_bytes(prefix));
    if len > max as u64 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, FrameTooLarge { len, max }));
    }
    // Grow with the data actually received rather than trusting the announced length.
    let mut buf = Vec::with_capacity(usize::min(max, 64 * 1024));
    (&mut *io).take(len).read_to_end(&mut buf).await?;
    if buf.len() as u64 != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "frame shorter than its length prefix",
        ));
    }
    Ok(buf)
}

/// Writes one frame, refusing data over `max` bytes.
pub(crate) async fn write_frame<T>(io: &mut T, data: &[u8], max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    let too_large = || {
        io::Error::new(io::ErrorKind::InvalidInput, FrameTooLarge { len: data.len() as u64, max })
    };
    if data.len() > max {
        return Err(too_large());
    }
    let len = u32::try_from(data.len()).map_err(|_| too_large())?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

impl request_response::Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req, self.max).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, self.max).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use super::*;
    use libp2p::futures::executor::block_on;
    use libp2p::futures::io::Cursor;

    fn frame(len_prefix: u32, body: &[u8]) -> Cursor<Vec<u8>> {
        let mut v = len_prefix.to_be_bytes().to_vec();
        v.extend_from_slice(body);
        Cursor::new(v)
    }

    #[test]
    fn round_trip_including_empty_and_max() {
        for data in [vec![], vec![7u8; 1], vec![9u8; 100]] {
            let mut out = Cursor::new(Vec::new());
            block_on(write_frame(&mut out, &data, 100)).unwrap();
            let mut inp = Cursor::new(out.into_inner());
            assert_eq!(block_on(read_frame(&mut inp, 100)).unwrap(), data);
        }
    }

    #[test]
    fn oversize_is_refused_on_both_sides() {
        let mut out = Cursor::new(Vec::new());
        let err = block_on(write_frame(&mut out, &[0u8; 101], 100)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(out.into_inner().is_empty());

        // The prefix alone is enough to refuse: no body is needed.
        let err = block_on(read_frame(&mut frame(101, &[]), 100)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = block_on(read_frame(&mut frame(u32::MAX, &[]), 100)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn truncated_frames_fail() {
        let err = block_on(read_frame(&mut frame(10, &[1, 2, 3]), 100)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = block_on(read_frame(&mut Cursor::new(vec![0u8, 0]), 100)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
