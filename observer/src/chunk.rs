//! Reading a chunk of a file by offset and length, with Thermos's semantics.
//!
//! * `offset` absent or `-1`: the end of the file (so a bare request returns nothing and tells
//!   the client where the end is, which is how a live tail starts).
//! * `length` absent or `-1`: up to the end of the file.
//! * Any other negative value is a bad request.
//! * The length actually read is capped at [`MAX_CHUNK_LENGTH`]; the reply says how many bytes
//!   it holds, so a client pages on from `offset + length`.
//! * An offset past the end yields zero bytes at that offset.
//!
//! Unlike Thermos, the data is not HTML-escaped: it travels as a JSON string, and the pages put
//! it into the document as text, never as markup.

use std::fs::File;
use std::os::unix::fs::FileExt;

use serde::Serialize;

/// Largest chunk served in one reply (Thermos's limit).
pub const MAX_CHUNK_LENGTH: u64 = 16 * 1024 * 1024;

/// A chunk as served by `/logdata` and `/filedata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chunk {
    pub offset: u64,
    pub length: u64,
    /// The bytes read, as UTF-8 (invalid sequences replaced).
    pub data: String,
    /// The file's size when it was read.
    pub size: u64,
}

/// A chunk request's parameters, as given in the query string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkRequest {
    pub offset: Option<i64>,
    pub length: Option<i64>,
}

/// A parameter that is negative and not `-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be -1 or at least 0, got {value}")]
pub struct BadChunkParam {
    pub field: &'static str,
    pub value: i64,
}

impl ChunkRequest {
    /// Where to read and how much, for a file of `size` bytes.
    pub fn span(self, size: u64) -> Result<(u64, u64), BadChunkParam> {
        let check = |field, v: Option<i64>| match v {
            None | Some(-1) => Ok(None),
            Some(v) if v >= 0 => Ok(Some(v.unsigned_abs())),
            Some(value) => Err(BadChunkParam { field, value }),
        };
        let offset = check("offset", self.offset)?.unwrap_or(size);
        let length = check("length", self.length)?.unwrap_or_else(|| size.saturating_sub(offset));
        let available = size.saturating_sub(offset);
        Ok((offset, length.min(available).min(MAX_CHUNK_LENGTH)))
    }
}

/// Read the chunk `req` asks for from `file`.
pub fn read_chunk(
    file: &File,
    req: ChunkRequest,
) -> Result<Result<Chunk, BadChunkParam>, std::io::Error> {
    let size = file.metadata()?.len();
    let (offset, length) = match req.span(size) {
        Ok(span) => span,
        Err(e) => return Ok(Err(e)),
    };
    let mut buf = vec![0u8; usize::try_from(length).unwrap_or(0)];
    let mut got = 0usize;
    while got < buf.len() {
        let n = file.read_at(&mut buf[got..], offset + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    Ok(Ok(Chunk {
        offset,
        length: got as u64,
        data: String::from_utf8_lossy(&buf).into_owned(),
        size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(offset: Option<i64>, length: Option<i64>) -> ChunkRequest {
        ChunkRequest { offset, length }
    }

    #[test]
    fn bare_request_points_at_the_end_with_no_data() {
        assert_eq!(req(None, None).span(100), Ok((100, 0)));
        assert_eq!(req(Some(-1), Some(-1)).span(100), Ok((100, 0)));
    }

    #[test]
    fn offset_without_length_reads_to_the_end() {
        assert_eq!(req(Some(40), None).span(100), Ok((40, 60)));
    }

    #[test]
    fn length_is_capped_by_the_file_and_the_maximum() {
        assert_eq!(req(Some(90), Some(50)).span(100), Ok((90, 10)));
        assert_eq!(req(Some(200), Some(5)).span(100), Ok((200, 0)));
        let huge = 4 * MAX_CHUNK_LENGTH;
        assert_eq!(req(Some(0), None).span(huge), Ok((0, MAX_CHUNK_LENGTH)));
    }

    #[test]
    fn negative_values_other_than_minus_one_are_refused() {
        assert_eq!(
            req(Some(-5), None).span(100),
            Err(BadChunkParam {
                field: "offset",
                value: -5
            })
        );
        assert!(req(Some(0), Some(-2)).span(100).is_err());
    }
}
