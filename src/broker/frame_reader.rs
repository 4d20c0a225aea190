//! Reading whole frames from a peer's socket.
//!
//! Owns the broker's input framing: the socket is read in large chunks into one receive
//! buffer, and each complete frame (prefix and body) is split off it as [`Bytes`] — no copy
//! and no allocation per frame (the router copies the few it queues for subscribers). A
//! frame's announced length is checked against the cap before any room is reserved for it,
//! so a peer claiming 4 GiB gets an error, not an allocation.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::wire::WireError;
use crate::wire::frame::{self, FRAME_LENGTH_BYTES};

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameReadError {
    /// The socket failed, or the peer left in the middle of a frame.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The length prefix announces a body over the cap.
    #[error("malformed input: {0}")]
    Wire(#[from] WireError),
}

/// Splits a byte stream into frames.
pub(crate) struct FrameReader<R> {
    reader: R,
    buffer: BytesMut,
    /// Room asked of the allocator whenever the buffer runs out (at least a whole frame).
    read_chunk_bytes: usize,
    max_frame_bytes: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader that reads `read_chunk_bytes` at a time and refuses bodies over
    /// `max_frame_bytes`.
    pub(crate) fn new(reader: R, read_chunk_bytes: usize, max_frame_bytes: usize) -> Self {
        FrameReader {
            reader,
            buffer: BytesMut::new(),
            read_chunk_bytes: read_chunk_bytes.max(FRAME_LENGTH_BYTES),
            max_frame_bytes,
        }
    }

    /// The next frame, prefix included; `None` when the peer closed between frames.
    pub(crate) async fn next_frame(&mut self) -> Result<Option<Bytes>, FrameReadError> {
        loop {
            let wanted = match self.complete_frame_bytes()? {
                Some(frame_bytes) => return Ok(Some(self.buffer.split_to(frame_bytes).freeze())),
                None => self.missing_bytes()?,
            };
            self.buffer.reserve(wanted.max(self.read_chunk_bytes));
            if self.reader.read_buf(&mut self.buffer).await? == 0 {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
    }

    /// Whether a whole frame is already buffered (the next [`Self::next_frame`] returns
    /// without reading). A malformed prefix counts as one: reading it fails at once.
    pub(crate) fn has_buffered_frame(&self) -> bool {
        !matches!(self.complete_frame_bytes(), Ok(None))
    }

    /// The length of the buffered frame at the front, if it is complete.
    fn complete_frame_bytes(&self) -> Result<Option<usize>, WireError> {
        let Some(prefix) = self.prefix() else {
            return Ok(None);
        };
        let frame_bytes = FRAME_LENGTH_BYTES + frame::body_length(prefix, self.max_frame_bytes)?;
        Ok((self.buffer.len() >= frame_bytes).then_some(frame_bytes))
    }

    /// Bytes still to read before the front frame is complete (the prefix first).
    fn missing_bytes(&self) -> Result<usize, WireError> {
        let Some(prefix) = self.prefix() else {
            return Ok(FRAME_LENGTH_BYTES - self.buffer.len());
        };
        let frame_bytes = FRAME_LENGTH_BYTES + frame::body_length(prefix, self.max_frame_bytes)?;
        Ok(frame_bytes.saturating_sub(self.buffer.len()))
    }

    fn prefix(&self) -> Option<[u8; FRAME_LENGTH_BYTES]> {
        self.buffer.get(..FRAME_LENGTH_BYTES)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::encode_frame;

    fn frames(bodies: &[Vec<u8>]) -> Vec<u8> {
        bodies
            .iter()
            .flat_map(|body| encode_frame(body).expect("frame"))
            .collect()
    }

    /// A reader that hands out its bytes a few at a time, splitting frames anywhere.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let end = (self.at + self.step)
                .min(self.bytes.len())
                .min(self.at + buf.remaining());
            buf.put_slice(&self.bytes[self.at..end]);
            self.at = end;
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn read_all(bytes: Vec<u8>, step: usize, chunk: usize) -> Result<Vec<Bytes>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|error| error.to_string())?;
        runtime.block_on(async {
            let mut reader = FrameReader::new(Trickle { bytes, at: 0, step }, chunk, 1000);
            let mut out = Vec::new();
            while let Some(frame) = reader.next_frame().await.map_err(|e| e.to_string())? {
                out.push(frame);
            }
            Ok(out)
        })
    }

    #[test]
    fn frames_come_out_whole_however_the_stream_is_cut() {
        let bodies: Vec<Vec<u8>> = (0..40usize).map(|n| vec![n as u8; n * 23 % 700]).collect();
        let stream = frames(&bodies);
        for step in [1, 3, 4, 5, 64, 1000, 100_000] {
            for chunk in [1, 16, 4096] {
                let read = read_all(stream.clone(), step, chunk).expect("read");
                assert_eq!(read.len(), bodies.len(), "step {step} chunk {chunk}");
                for (frame, body) in read.iter().zip(&bodies) {
                    assert_eq!(&frame[FRAME_LENGTH_BYTES..], body.as_slice());
                    assert_eq!(
                        u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize,
                        body.len()
                    );
                }
            }
        }
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_an_error_and_between_frames_is_not() {
        let stream = frames(&[vec![1; 10], vec![2; 10]]);
        assert_eq!(read_all(stream.clone(), 7, 16).map(|f| f.len()), Ok(2));
        let first_frame_bytes = FRAME_LENGTH_BYTES + 10;
        for cut in 1..stream.len() {
            if cut == first_frame_bytes {
                assert_eq!(
                    read_all(stream[..cut].to_vec(), 7, 16).map(|f| f.len()),
                    Ok(1)
                );
            } else {
                let result = read_all(stream[..cut].to_vec(), 7, 16);
                assert!(
                    result.as_ref().is_err_and(|e| e.contains("socket error")),
                    "cut at {cut}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn an_oversize_prefix_is_refused_before_anything_is_reserved() {
        let mut stream = u32::MAX.to_le_bytes().to_vec();
        stream.extend([0; 8]);
        let result = read_all(stream, 100, 16);
        assert!(
            result
                .as_ref()
                .is_err_and(|e| e.contains("malformed input")),
            "{result:?}"
        );
    }
}
