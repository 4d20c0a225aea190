//! Splitting the broker's byte stream into frames.
//!
//! Owns the reassembly buffer: bytes in, decoded bodies out. A length prefix over the
//! protocol's 1 MiB cap is an error as soon as the prefix is seen (nothing is allocated
//! for it), so a hostile broker can make us hold at most one frame. Pure: no I/O.

use crate::wire::frame::split_frame;
use crate::wire::{Body, MAX_FRAME_BODY_BYTES, WireError};

/// Reassembles frames from reads of any size.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buffer: Vec<u8>,
    start: usize,
}

impl FrameReader {
    /// Appends bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start * 2 >= self.buffer.len() {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame's body, decoded; `Ok(None)` if more bytes are needed.
    pub fn next_body(&mut self) -> Result<Option<Body>, WireError> {
        match split_frame(&self.buffer[self.start..], MAX_FRAME_BODY_BYTES)? {
            None => Ok(None),
            Some((body, used)) => {
                let body = Body::decode(body);
                self.start += used;
                body.map(Some)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::encode_frame;

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        let mut stream = encode_frame(b"PING").expect("frame");
        stream.extend(encode_frame(b"PONG").expect("frame"));
        let mut reader = FrameReader::default();
        let mut bodies = Vec::new();
        for byte in &stream {
            reader.push(std::slice::from_ref(byte));
            while let Some(body) = reader.next_body().expect("valid") {
                bodies.push(body);
            }
        }
        assert_eq!(bodies, [Body::Ping, Body::Pong]);
        assert_eq!(reader.buffer.len(), reader.start);
    }

    #[test]
    fn an_oversized_prefix_is_refused_before_its_body_and_garbage_is_an_error() {
        let mut reader = FrameReader::default();
        reader.push(&[0xff, 0xff, 0xff, 0x7f]);
        assert!(matches!(
            reader.next_body(),
            Err(WireError::FrameTooLarge { .. })
        ));
        let mut reader = FrameReader::default();
        reader.push(&encode_frame(&[1, 2, 3, 4, 5]).expect("frame"));
        assert!(reader.next_body().is_err());
    }
}
