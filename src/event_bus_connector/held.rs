//! What the publish buffer holds in memory for one durable event: its wire payload (the
//! caller's bytes, never copied on the ring thread) and what its envelope needs. The link
//! writes the frame around it straight into its socket write buffer
//! ([`crate::wire::budget::EventFramer`]), so no frame is allocated per event.
//!
//! Owns the exact frame size of a held event, computed once at hand-over: the buffer's
//! occupancy counts it, and the link uses it to fill writes without overshooting.

use bytes::Bytes;

use super::buffer::FrameSize;
use crate::event::EventKind;
use crate::wire::WireTime;
use crate::wire::budget::EventFramer;

/// A durable event held in memory until the broker acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldEvent {
    pub kind: EventKind,
    pub timestamp: WireTime,
    /// The wire payload, within the frame budget. A batch's payloads may share one
    /// allocation (slices of it).
    pub payload: Bytes,
    /// Exact size of the event's frame.
    frame_bytes: usize,
}

impl HeldEvent {
    /// Holds an event whose sequence is `sequence`.
    pub fn new(
        framer: &EventFramer,
        sequence: u64,
        kind: EventKind,
        payload: Bytes,
        timestamp: WireTime,
    ) -> HeldEvent {
        let frame_bytes = framer.frame_len(sequence, kind, payload.len(), timestamp);
        HeldEvent {
            kind,
            timestamp,
            payload,
            frame_bytes,
        }
    }

    /// Appends the event's frame to `out`.
    pub fn write_frame(
        &self,
        framer: &EventFramer,
        sequence: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), crate::wire::WireError> {
        framer.write_frame(out, sequence, self.kind, &self.payload, self.timestamp)
    }
}

impl FrameSize for HeldEvent {
    fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }
}
