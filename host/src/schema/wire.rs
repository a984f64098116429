//! The Confluent wire format: what a schema-registry serializer writes in
//! front of a record's encoded body.
//!
//! ```text
//! 0x00 | schema ID (4 bytes, big-endian) | [Protobuf: message indexes] | body
//! ```
//!
//! The message indexes (Protobuf only) say which message of the schema's
//! file the body is: a zigzag varint count, then that many zigzag varint
//! indexes, the first into the file's top-level messages and each next one
//! into the nested messages of the one before. The usual `[0]` (the file's
//! first message) is written as the single byte `0x00`.

use std::fmt;

/// The first byte of a framed record.
pub const MAGIC: u8 = 0;
/// Magic byte and schema ID.
pub const HEADER_LEN: usize = 5;
/// More nesting than any real schema has; a count past it is corrupt
/// bytes, not a message path.
const MAX_INDEXES: u64 = 64;

/// Why bytes are not a framed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramingError {
    /// Fewer bytes than the magic byte and the schema ID.
    Truncated {
        /// How many bytes there are.
        len: usize,
    },
    /// The first byte is not the magic byte.
    BadMagic {
        /// The first byte.
        found: u8,
    },
    /// The Protobuf message indexes are cut short or out of range.
    BadMessageIndexes {
        /// The schema ID before them.
        id: u32,
    },
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { len } => write!(
                f,
                "not in the schema-registry wire format: {len} byte(s), fewer than the 5 of a magic byte and a schema ID"
            ),
            Self::BadMagic { found } => write!(
                f,
                "not in the schema-registry wire format: it starts with byte 0x{found:02x}, not the magic byte 0x00"
            ),
            Self::BadMessageIndexes { id } => write!(
                f,
                "schema {id}: the Protobuf message indexes after the schema ID are corrupt"
            ),
        }
    }
}

impl std::error::Error for FramingError {}

/// The schema ID of framed bytes and what follows it.
///
/// # Errors
/// When `bytes` are too short or do not start with the magic byte.
pub fn split(bytes: &[u8]) -> Result<(u32, &[u8]), FramingError> {
    let Some((header, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(FramingError::Truncated { len: bytes.len() });
    };
    if header[0] != MAGIC {
        return Err(FramingError::BadMagic { found: header[0] });
    }
    let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    Ok((id, rest))
}

/// The Protobuf message indexes at the start of `rest` (what [`split`]
/// left) and the body after them.
///
/// # Errors
/// When the indexes are cut short, negative or implausibly many.
pub fn split_message_indexes(id: u32, rest: &[u8]) -> Result<(Vec<usize>, &[u8]), FramingError> {
    let corrupt = || FramingError::BadMessageIndexes { id };
    let (count, mut rest) = read_zigzag(rest).ok_or_else(corrupt)?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    let count = u64::try_from(count).map_err(|_| corrupt())?;
    if count > MAX_INDEXES {
        return Err(corrupt());
    }
    let mut indexes = Vec::with_capacity(usize::try_from(count).map_err(|_| corrupt())?);
    for _ in 0..count {
        let (index, after) = read_zigzag(rest).ok_or_else(corrupt)?;
        indexes.push(usize::try_from(index).map_err(|_| corrupt())?);
        rest = after;
    }
    Ok((indexes, rest))
}

/// Appends the magic byte and `id` to `out`.
pub fn write_header(out: &mut Vec<u8>, id: u32) {
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
}

/// Appends Protobuf message `indexes` to `out` (`[0]` as the one byte
/// `0x00`, as every serializer writes it).
pub fn write_message_indexes(out: &mut Vec<u8>, indexes: &[usize]) {
    if indexes == [0] {
        out.push(0);
        return;
    }
    write_zigzag(out, i64::try_from(indexes.len()).unwrap_or(i64::MAX));
    for &index in indexes {
        write_zigzag(out, i64::try_from(index).unwrap_or(i64::MAX));
    }
}

/// A zigzag-encoded varint (at most 10 bytes) and what follows it.
pub(super) fn read_zigzag(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let (raw, rest) = read_varint(bytes)?;
    #[allow(
        clippy::cast_possible_wrap,
        reason = "zigzag decoding reinterprets the bits"
    )]
    let value = (raw >> 1) as i64 ^ -((raw & 1) as i64);
    Some((value, rest))
}

/// An unsigned LEB128 varint of at most 10 bytes and what follows it.
pub(super) fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0_u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// Appends `value` zigzag-encoded as a varint.
pub(super) fn write_zigzag(out: &mut Vec<u8>, value: i64) {
    #[allow(
        clippy::cast_sign_loss,
        reason = "zigzag encoding reinterprets the bits"
    )]
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_record_splits_into_its_schema_id_and_the_rest() {
        let bytes = [0, 0, 0, 1, 2, 0xaa, 0xbb];
        assert_eq!(split(&bytes), Ok((258, &[0xaa, 0xbb][..])));
    }

    #[test]
    fn short_or_unframed_bytes_say_what_is_wrong() {
        assert_eq!(split(&[0, 0, 1]), Err(FramingError::Truncated { len: 3 }));
        assert_eq!(
            split(b"{\"json\": true}"),
            Err(FramingError::BadMagic { found: b'{' })
        );
        let message = split(b"{\"a\":1}").unwrap_err().to_string();
        assert!(message.contains("0x7b"), "{message}");
    }

    #[test]
    fn the_usual_first_message_is_one_zero_byte() {
        assert_eq!(
            split_message_indexes(7, &[0, 0xaa]),
            Ok((vec![0], &[0xaa][..]))
        );
        let mut out = Vec::new();
        write_message_indexes(&mut out, &[0]);
        assert_eq!(out, [0]);
    }

    #[test]
    fn nested_message_indexes_round_trip_as_zigzag_varints() {
        for indexes in [vec![1], vec![0, 2], vec![3, 0, 70]] {
            let mut out = Vec::new();
            write_message_indexes(&mut out, &indexes);
            out.push(0xee);
            assert_eq!(
                split_message_indexes(1, &out),
                Ok((indexes.clone(), &[0xee][..])),
                "{indexes:?}"
            );
        }
        // [1, 2] as confluent-kafka writes it: count 2, then 1 and 2, zigzag.
        assert_eq!(
            split_message_indexes(1, &[4, 2, 4]),
            Ok((vec![1, 2], &[][..]))
        );
    }

    #[test]
    fn corrupt_message_indexes_are_refused() {
        let corrupt = Err(FramingError::BadMessageIndexes { id: 9 });
        // Count 2, one index.
        assert_eq!(split_message_indexes(9, &[4, 2]), corrupt);
        // A negative count and a negative index.
        assert_eq!(split_message_indexes(9, &[1]), corrupt);
        assert_eq!(split_message_indexes(9, &[2, 1]), corrupt);
        // An unterminated varint.
        assert_eq!(split_message_indexes(9, &[0x80; 11]), corrupt);
        // Far more nesting than a schema has.
        assert_eq!(split_message_indexes(9, &[0xfe, 0x01]), corrupt);
    }

    #[test]
    fn zigzag_covers_the_whole_range() {
        for value in [0, -1, 1, -64, 63, 64, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_zigzag(&mut out, value);
            assert_eq!(read_zigzag(&out), Some((value, &[][..])), "{value}");
        }
    }
}
