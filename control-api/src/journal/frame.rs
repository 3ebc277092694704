//! The byte layout of the state files: a fixed header, then length-prefixed frames, each with
//! checksums, so a reader can tell a write cut short at the end (a crash mid-append) from
//! damage anywhere else.
//!
//! Header (32 bytes): magic (8) · format version u32 · generation u64 · record count u64 (the
//! snapshot's; 0 in the journal) · CRC32C of the 28 bytes before it.
//! Frame: payload length u32 · CRC32C of the payload · CRC32C of those 8 bytes · payload.
//! Integers are little-endian. The header CRC of a frame makes its length trustworthy: a frame
//! whose verified length runs past the end of the file was cut short.

use std::path::Path;

use crate::error::Error;

pub const MAGIC_SNAPSHOT: [u8; 8] = *b"VRSNAPST";
pub const MAGIC_JOURNAL: [u8; 8] = *b"VRJOURNL";
/// Bumped when the layout or the meaning of a record changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 32;
pub const FRAME_HEADER_LEN: usize = 12;
/// Far above any record (a policy of 2 × 1024 rules is a few hundred KiB): a larger length is
/// damage, not data.
pub const PAYLOAD_MAX: usize = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub magic: [u8; 8],
    pub generation: u64,
    pub records: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(&self.magic);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[12..20].copy_from_slice(&self.generation.to_le_bytes());
        out[20..28].copy_from_slice(&self.records.to_le_bytes());
        let crc = crc32c::crc32c(&out[..28]);
        out[28..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads and checks the header of `file` (named in errors), which must carry `magic`.
    pub fn decode(buf: &[u8], magic: [u8; 8], file: &Path) -> Result<Header, Error> {
        let bad = |offset: u64, reason: String| corrupt(file, offset, reason);
        if buf.len() < HEADER_LEN {
            return Err(bad(
                0,
                format!(
                    "the file is {} bytes, shorter than its {HEADER_LEN}-byte header",
                    buf.len()
                ),
            ));
        }
        if buf[..8] != magic {
            return Err(bad(
                0,
                format!(
                    "not a vrouterd state file of this kind (magic {:?}, expected {:?})",
                    String::from_utf8_lossy(&buf[..8]),
                    String::from_utf8_lossy(&magic)
                ),
            ));
        }
        if crc32c::crc32c(&buf[..28]) != le32(&buf[28..32]) {
            return Err(bad(0, "header checksum mismatch".into()));
        }
        let version = le32(&buf[8..12]);
        if version != FORMAT_VERSION {
            return Err(bad(
                8,
                format!("format version {version}; this vrouterd reads version {FORMAT_VERSION}"),
            ));
        }
        Ok(Header {
            magic,
            generation: le64(&buf[12..20]),
            records: le64(&buf[20..28]),
        })
    }
}

/// One frame around `payload`.
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let head_crc = crc32c::crc32c(&out[..8]);
    out.extend_from_slice(&head_crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A checked frame: where it starts in the file, and its payload.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub offset: u64,
    pub payload: &'a [u8],
}

/// How the frames of a file end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The last frame ends where the file ends.
    Clean,
    /// The frame at `offset` was cut short (or its space was never written: zeros to the end):
    /// an append that never completed, so never acknowledged.
    Torn { offset: u64 },
}

/// The frames of `buf` after its header. Damage that is not a cut-short last frame is an error
/// naming `file` and the byte offset of the damaged frame.
pub fn frames<'a>(buf: &'a [u8], file: &Path) -> Result<(Vec<Frame<'a>>, End), Error> {
    let mut out = Vec::new();
    let mut at = HEADER_LEN.min(buf.len());
    while at < buf.len() {
        let rest = &buf[at..];
        let offset = at as u64;
        if rest.len() < FRAME_HEADER_LEN || rest.iter().all(|&b| b == 0) {
            return Ok((out, End::Torn { offset }));
        }
        let len = le32(&rest[..4]) as usize;
        if crc32c::crc32c(&rest[..8]) != le32(&rest[8..12]) {
            return Err(corrupt(
                file,
                offset,
                "record header checksum mismatch".into(),
            ));
        }
        if len > PAYLOAD_MAX {
            return Err(corrupt(
                file,
                offset,
                format!("record length {len} is over the {PAYLOAD_MAX}-byte limit"),
            ));
        }
        let Some(payload) = rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
            return Ok((out, End::Torn { offset }));
        };
        if crc32c::crc32c(payload) != le32(&rest[4..8]) {
            let tail_unwritten =
                at + FRAME_HEADER_LEN + len == buf.len() && payload.iter().all(|&b| b == 0);
            if tail_unwritten {
                return Ok((out, End::Torn { offset }));
            }
            return Err(corrupt(file, offset, "record checksum mismatch".into()));
        }
        out.push(Frame { offset, payload });
        at += FRAME_HEADER_LEN + len;
    }
    Ok((out, End::Clean))
}

pub fn corrupt(file: &Path, offset: u64, reason: String) -> Error {
    Error::StateCorrupt {
        path: file.to_path_buf(),
        offset,
        reason,
    }
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(frames_: &[&[u8]]) -> Vec<u8> {
        let mut buf = Header {
            magic: MAGIC_JOURNAL,
            generation: 3,
            records: 0,
        }
        .encode()
        .to_vec();
        for f in frames_ {
            buf.extend(encode_frame(f));
        }
        buf
    }

    #[test]
    fn header_round_trips_and_checks_magic_and_checksum() {
        let h = Header {
            magic: MAGIC_SNAPSHOT,
            generation: 7,
            records: 42,
        };
        let p = Path::new("/s/snapshot");
        assert_eq!(Header::decode(&h.encode(), MAGIC_SNAPSHOT, p).unwrap(), h);
        let e = Header::decode(&h.encode(), MAGIC_JOURNAL, p).unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
        let mut b = h.encode();
        b[13] ^= 1;
        let e = Header::decode(&b, MAGIC_SNAPSHOT, p).unwrap_err();
        assert!(e.to_string().contains("header checksum"), "{e}");
    }

    #[test]
    fn frames_read_back_with_their_offsets() {
        let buf = file_of(&[b"one", b"", b"three"]);
        let (f, end) = frames(&buf, Path::new("j")).unwrap();
        assert_eq!(end, End::Clean);
        let got: Vec<_> = f.iter().map(|f| (f.offset, f.payload)).collect();
        assert_eq!(
            got,
            vec![
                (32, &b"one"[..]),
                (32 + 15, &b""[..]),
                (32 + 15 + 12, &b"three"[..])
            ]
        );
    }

    #[test]
    fn every_cut_of_the_last_frame_is_torn_and_keeps_the_others() {
        let buf = file_of(&[b"first", b"second"]);
        let last = 32 + 12 + 5;
        for cut in last + 1..buf.len() {
            let (f, end) = frames(&buf[..cut], Path::new("j")).unwrap();
            assert_eq!(f.len(), 1, "cut at {cut}");
            assert_eq!(
                end,
                End::Torn {
                    offset: last as u64
                },
                "cut at {cut}"
            );
        }
        // Space allocated but never written reads as zeros: torn too.
        let mut zeros = buf[..last].to_vec();
        zeros.extend([0u8; 40]);
        assert_eq!(
            frames(&zeros, Path::new("j")).unwrap().1,
            End::Torn {
                offset: last as u64
            }
        );
    }

    #[test]
    fn a_flipped_byte_anywhere_is_an_error_naming_the_frame_offset() {
        let buf = file_of(&[b"first", b"second", b"third"]);
        let starts = [32usize, 32 + 17, 32 + 17 + 18];
        for i in 32..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            let frame = starts.iter().rev().find(|&&s| s <= i).copied().unwrap();
            match frames(&bad, Path::new("/d/journal")) {
                Err(e) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("/d/journal") && msg.contains(&format!("offset {frame}")),
                        "byte {i}: {msg}"
                    );
                }
                // A flipped length byte cannot pass as a longer frame cut short: the frame
                // header's own checksum catches it.
                Ok(r) => panic!("byte {i} flipped went unnoticed: {r:?}"),
            }
        }
    }
}
