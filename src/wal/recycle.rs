//! Segment recycling's marks on disk (docs/format.md §2.1 and §7.8): the header flag saying a
//! segment file was used before under a lower number of the same log, where the bytes left
//! over from that use begin, and how a header that still names the file's previous number is
//! recognised. Pure: no I/O, no policy (which segments are recycled is the writer's business).
//!
//! Must never: declare bytes before the first block boundary at or after a segment's data end
//! to be left over (those are judged as any segment's end is), or accept a stale header whose
//! salt is not the log's.

use super::format::{BLOCK_BYTES, FORMAT_VERSION, SegmentHeader};

/// Bit 0 of the header's flags field: the file was a segment of this log under a lower number
/// before, so bytes after its records may be left over from that use.
pub const FLAG_RECYCLED: u32 = 1;

/// Offset of the flags field in the header block.
const FLAGS_OFFSET: usize = 12;
/// The header CRC covers bytes `0..HEADER_CRC_OFFSET` and sits at `HEADER_CRC_OFFSET`.
const HEADER_CRC_OFFSET: usize = 48;

/// Sets [`FLAG_RECYCLED`] in an encoded version 2 header block and recomputes its CRC.
pub fn mark_recycled(block: &mut [u8]) {
    assert!(
        block.len() >= HEADER_CRC_OFFSET + 4,
        "a header block is at least 52 bytes"
    );
    let flags = u32::from_le_bytes(
        block[FLAGS_OFFSET..FLAGS_OFFSET + 4]
            .try_into()
            .expect("4 bytes"),
    ) | FLAG_RECYCLED;
    block[FLAGS_OFFSET..FLAGS_OFFSET + 4].copy_from_slice(&flags.to_le_bytes());
    let crc = crc32fast::hash(&block[..HEADER_CRC_OFFSET]);
    block[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Whether a header block that decoded as a valid version 2 header carries [`FLAG_RECYCLED`].
/// (The flags field is covered by the header CRC, so a valid header's flag is the writer's.)
pub fn is_marked_recycled(block: &[u8], header: &SegmentHeader) -> bool {
    header.version == FORMAT_VERSION
        && block
            .get(FLAGS_OFFSET..FLAGS_OFFSET + 4)
            .is_some_and(|flags| flags[0] & FLAG_RECYCLED as u8 != 0)
}

/// Where the bytes left over from a recycled segment's earlier use begin: the first block
/// boundary at or after its data end. The writer zeroes the rest of the last block each group
/// touches, so anything non-zero before this point is judged like any segment's end.
pub fn leftover_start(data_end: u64) -> u64 {
    data_end.div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64
}

/// The end of the last 8-byte word of `bytes` holding a non-zero byte, as a file offset
/// (`base` is the offset of `bytes[0]`); `base` when every byte is zero. The last word may be
/// cut short by the end of `bytes`.
pub fn nonzero_end(bytes: &[u8], base: u64) -> u64 {
    match bytes.iter().rposition(|&byte| byte != 0) {
        Some(last) => base + ((last / 8 + 1) * 8).min(bytes.len()) as u64,
        None => base,
    }
}

/// Whether `header`, found valid in the file named for segment `file_number`, is the header of
/// an earlier use of the file by this log: a version 2 header of a lower number carrying the
/// log's salt. Such a file was renamed for recycling and its new header never reached the
/// disk, so nothing written to it under its new number was acknowledged.
pub fn is_stale_header(header: &SegmentHeader, file_number: u64, log_salt: Option<u64>) -> bool {
    header.version == FORMAT_VERSION
        && header.segment_number < file_number
        && log_salt == Some(header.salt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(number: u64) -> SegmentHeader {
        SegmentHeader {
            version: FORMAT_VERSION,
            segment_number: number,
            first_sequence: 7,
            created_unix_ns: 1,
            salt: 0x5a17,
        }
    }

    #[test]
    fn the_flag_survives_decoding_and_old_readers_still_accept_the_header() {
        let mut block = header(3).encode_block();
        assert!(!is_marked_recycled(&block, &header(3)));
        mark_recycled(&mut block);
        let decoded = SegmentHeader::decode(&block).expect("still a valid header");
        assert_eq!(decoded, header(3));
        assert!(is_marked_recycled(&block, &decoded));
    }

    #[test]
    fn leftovers_begin_at_the_next_block_boundary() {
        assert_eq!(leftover_start(4096), 4096);
        assert_eq!(leftover_start(4104), 8192);
        assert_eq!(leftover_start(8191), 8192);
    }

    #[test]
    fn nonzero_end_rounds_to_words() {
        assert_eq!(nonzero_end(&[0; 16], 100), 100);
        let mut bytes = [0u8; 20];
        bytes[9] = 1;
        assert_eq!(nonzero_end(&bytes, 100), 116);
        bytes[19] = 1;
        assert_eq!(nonzero_end(&bytes, 100), 120);
    }

    #[test]
    fn stale_headers_need_a_lower_number_and_the_logs_salt() {
        assert!(is_stale_header(&header(3), 5, Some(0x5a17)));
        assert!(!is_stale_header(&header(5), 5, Some(0x5a17)));
        assert!(!is_stale_header(&header(6), 5, Some(0x5a17)));
        assert!(!is_stale_header(&header(3), 5, Some(0x5a18)));
        assert!(!is_stale_header(&header(3), 5, None));
    }
}
