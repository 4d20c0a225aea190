//! Frames: a u32 little-endian body length followed by the body (docs/protocol.md §2).
//!
//! Owns the length prefix, the 1 MiB body cap and the classification of a body as a raw
//! health frame (`PING`/`PONG`) or a postcard [`Message`]. A length is always checked against
//! the cap before anything is allocated for the body. Never does I/O.

use crate::wire::envelope::Message;
use crate::wire::error::WireError;

/// Bytes of the length prefix.
pub const FRAME_LENGTH_BYTES: usize = 4;

/// Largest body the protocol allows: exactly 1 MiB is allowed, one byte more is not.
pub const MAX_FRAME_BODY_BYTES: usize = 1024 * 1024;

/// Body of the raw health-check request frame (not postcard).
pub const PING_BODY: &[u8; 4] = b"PING";

/// Body of the raw health-check reply frame (not postcard).
pub const PONG_BODY: &[u8; 4] = b"PONG";

/// A decoded frame body.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a Body is decoded, handled and dropped one frame at a time; boxing the message \
              would cost an allocation per frame to shrink a value that is never stored"
)]
pub enum Body {
    /// The raw health-check request; must be answered with [`Body::Pong`].
    Ping,
    /// The raw health-check reply.
    Pong,
    /// A postcard envelope.
    Message(Message),
}

impl Body {
    /// Decodes a frame body. A `Message` is never 4 bytes long (its id alone takes 17), so
    /// the raw health bodies cannot be confused with an envelope.
    pub fn decode(body: &[u8]) -> Result<Body, WireError> {
        if body == PING_BODY {
            return Ok(Body::Ping);
        }
        if body == PONG_BODY {
            return Ok(Body::Pong);
        }
        Message::decode(body).map(Body::Message)
    }

    /// Encodes this body as one complete frame.
    pub fn encode_frame(&self) -> Result<Vec<u8>, WireError> {
        match self {
            Body::Ping => encode_frame(PING_BODY),
            Body::Pong => encode_frame(PONG_BODY),
            Body::Message(message) => message.encode_frame(),
        }
    }
}

/// Checks a length prefix and returns the body length it announces.
///
/// Call this before allocating a body buffer: a peer that claims 4 GiB gets an error, not an
/// allocation.
pub fn body_length(
    prefix: [u8; FRAME_LENGTH_BYTES],
    max_frame_bytes: usize,
) -> Result<usize, WireError> {
    let claimed = u32::from_le_bytes(prefix);
    match usize::try_from(claimed) {
        Ok(body_bytes) if body_bytes <= max_frame_bytes => Ok(body_bytes),
        _ => Err(WireError::FrameTooLarge {
            body_bytes: u64::from(claimed),
            max_frame_bytes,
        }),
    }
}

/// Builds one contiguous frame (prefix and body) so it can go out in a single write.
pub fn encode_frame(body: &[u8]) -> Result<Vec<u8>, WireError> {
    let length = checked_length(body.len())?;
    let mut frame = Vec::with_capacity(FRAME_LENGTH_BYTES + body.len());
    frame.extend_from_slice(&length.to_le_bytes());
    frame.extend_from_slice(body);
    Ok(frame)
}

/// Writes the length prefix into the first [`FRAME_LENGTH_BYTES`] of `frame`, whose body
/// follows them, after checking the body against the cap.
pub(crate) fn seal_frame(mut frame: Vec<u8>) -> Result<Vec<u8>, WireError> {
    debug_assert!(
        frame.len() >= FRAME_LENGTH_BYTES,
        "frame has room for its prefix"
    );
    let length = checked_length(frame.len() - FRAME_LENGTH_BYTES)?;
    frame[..FRAME_LENGTH_BYTES].copy_from_slice(&length.to_le_bytes());
    Ok(frame)
}

/// The length prefix for a body of `body_bytes`, checked against the cap.
pub(crate) fn checked_length(body_bytes: usize) -> Result<u32, WireError> {
    let too_large = || WireError::FrameTooLarge {
        body_bytes: u64::try_from(body_bytes).unwrap_or(u64::MAX),
        max_frame_bytes: MAX_FRAME_BODY_BYTES,
    };
    if body_bytes > MAX_FRAME_BODY_BYTES {
        return Err(too_large());
    }
    u32::try_from(body_bytes).map_err(|_| too_large())
}

/// Splits the first complete frame off `bytes`.
///
/// Returns the body and the number of bytes the frame occupied, `Ok(None)` if more bytes are
/// needed, or an error if the prefix announces a body over `max_frame_bytes`.
pub fn split_frame(
    bytes: &[u8],
    max_frame_bytes: usize,
) -> Result<Option<(&[u8], usize)>, WireError> {
    let Some(prefix) = bytes.first_chunk::<FRAME_LENGTH_BYTES>() else {
        return Ok(None);
    };
    let body_bytes = body_length(*prefix, max_frame_bytes)?;
    let frame_bytes = FRAME_LENGTH_BYTES + body_bytes;
    match bytes.get(FRAME_LENGTH_BYTES..frame_bytes) {
        Some(body) => Ok(Some((body, frame_bytes))),
        None => Ok(None),
    }
}

/// Decodes a buffer that must hold exactly one complete frame.
pub fn decode_frame(bytes: &[u8]) -> Result<Body, WireError> {
    match split_frame(bytes, MAX_FRAME_BODY_BYTES)? {
        Some((body, used)) if used == bytes.len() => Body::decode(body),
        Some((_, used)) => Err(WireError::TrailingBytes {
            what: "frame",
            trailing_bytes: bytes.len() - used,
        }),
        None => {
            let needed_bytes = match bytes.first_chunk::<FRAME_LENGTH_BYTES>() {
                Some(prefix) => FRAME_LENGTH_BYTES + body_length(*prefix, MAX_FRAME_BODY_BYTES)?,
                None => FRAME_LENGTH_BYTES,
            };
            Err(WireError::TruncatedFrame {
                needed_bytes,
                available_bytes: bytes.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_and_pong_frames_are_raw() {
        assert_eq!(
            Body::Ping.encode_frame().ok(),
            Some(b"\x04\0\0\0PING".to_vec())
        );
        assert_eq!(
            Body::Pong.encode_frame().ok(),
            Some(b"\x04\0\0\0PONG".to_vec())
        );
        assert_eq!(decode_frame(b"\x04\0\0\0PING").ok(), Some(Body::Ping));
        assert_eq!(decode_frame(b"\x04\0\0\0PONG").ok(), Some(Body::Pong));
    }

    #[test]
    fn exactly_one_mebibyte_is_allowed_and_one_more_byte_is_not() {
        let body = vec![0u8; MAX_FRAME_BODY_BYTES];
        let frame = encode_frame(&body).expect("1 MiB body is allowed");
        assert_eq!(&frame[..4], &(1u32 << 20).to_le_bytes());
        assert!(matches!(
            split_frame(&frame, MAX_FRAME_BODY_BYTES),
            Ok(Some((b, n))) if b.len() == MAX_FRAME_BODY_BYTES && n == frame.len()
        ));
        let over = vec![0u8; MAX_FRAME_BODY_BYTES + 1];
        assert!(matches!(
            encode_frame(&over),
            Err(WireError::FrameTooLarge { body_bytes, .. }) if body_bytes == 1_048_577
        ));
        let prefix = u32::try_from(MAX_FRAME_BODY_BYTES + 1)
            .unwrap_or(u32::MAX)
            .to_le_bytes();
        assert!(matches!(
            body_length(prefix, MAX_FRAME_BODY_BYTES),
            Err(WireError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn a_huge_claim_is_refused_without_the_body() {
        let claim = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        assert!(matches!(
            split_frame(&claim, MAX_FRAME_BODY_BYTES),
            Err(WireError::FrameTooLarge {
                body_bytes: 0xffff_ffff,
                ..
            })
        ));
        assert!(matches!(
            decode_frame(&claim),
            Err(WireError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let frame = encode_frame(b"PING").expect("small frame");
        for cut in 0..frame.len() {
            assert!(matches!(
                split_frame(&frame[..cut], MAX_FRAME_BODY_BYTES),
                Ok(None)
            ));
            assert!(matches!(
                decode_frame(&frame[..cut]),
                Err(WireError::TruncatedFrame { .. })
            ));
        }
    }
}
