//! A light pass over a DICOM file's element headers, before dicom-rs parses it, that refuses
//! files whose declared lengths cannot be true.
//!
//! dicom-rs reserves an element's declared length before reading its value, so a 200-byte
//! corrupt file whose element claims 4 GiB costs 4 GiB of memory (zero-filled, so really
//! touched) before the read fails. This pass walks the same structure dicom-rs will walk (file
//! meta group, then the data set in its transfer syntax, into sequences, items and
//! encapsulated pixel data fragments) without keeping any value, and fails when:
//!
//! - an element or item declares more bytes than remain in the file;
//! - sequences nest deeper than [`MAX_DEPTH`] (dicom-rs builds nested items recursively);
//! - a deflated data set inflates to more than [`Limits::max_inflated`] bytes (a deflate bomb).
//!
//! Everything else (an unknown tag, a header cut short, a delimiter where none belongs) ends the
//! pass without a verdict: such a file is dicom-rs's to reject, with its own message. The pass
//! reads the file once, sequentially; it never allocates more than one element header.

use std::io::{self, Read};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

/// Sequences nested deeper than this are refused. Real files nest a handful of levels.
pub const MAX_DEPTH: usize = 64;

/// Deflated Explicit VR Little Endian: the data set after the meta group is raw deflate.
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

/// What the pass checks beyond "lengths fit in the file".
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted size of a deflated data set once inflated, in bytes.
    pub max_inflated: u64,
}

/// Why a file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(
        "element ({:04X},{:04X}) at byte {offset}{where_} declares {declared} bytes, but only \
         {remaining} remain",
        tag.0, tag.1
    )]
    LengthBeyondEnd {
        tag: Tag,
        offset: u64,
        declared: u64,
        remaining: u64,
        /// Empty, or " of the inflated data set".
        where_: &'static str,
    },
    #[error("sequences nested deeper than {MAX_DEPTH} levels at byte {offset}")]
    TooDeep { offset: u64 },
    #[error("the deflated data set inflates to more than {limit} bytes")]
    InflatesTooFar { limit: u64 },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Checks a file with a `DICM` magic code (at byte 128 after a preamble, or at byte 0).
/// A file with neither is left alone here: dicom-rs does not read it as a standard file.
/// `bare` says how to check a file that is to be read as a bare data set when it has no magic
/// or no file meta group dicom-rs accepts (`Some(explicit_vr)`), if it is one. `open` gives the
/// file from its start; it is called a second time only for such a file with a magic code but
/// no usable meta group, which is then checked again as the bare data set dicom-rs falls back
/// to (found by fuzzing).
///
/// Returns how many bytes of data set the file can hold: its length, or for a deflated data
/// set the inflated length. No value dicom-rs reads can be longer, which is what the
/// allocation ceiling of [`super::alloc_ceiling`] is set from.
pub fn check<R: Read>(
    mut open: impl FnMut() -> io::Result<R>,
    file_len: u64,
    bare: Option<bool>,
    limits: &Limits,
) -> Result<u64, ScanError> {
    let mut file = open()?;
    let mut head = Vec::with_capacity(132);
    (&mut file).take(132).read_to_end(&mut head)?;
    let magic_at = if head.len() >= 132 && &head[128..132] == b"DICM" {
        Some(132)
    } else if head.starts_with(b"DICM") {
        Some(4)
    } else {
        None
    };
    let Some(start) = magic_at else {
        return match bare {
            Some(explicit_vr) => {
                check_bare(io::Cursor::new(head).chain(file), file_len, explicit_vr)
                    .map(|()| file_len)
            }
            None => Ok(file_len),
        };
    };
    let mut cursor = Cursor {
        inner: io::Cursor::new(head).chain(file),
        pos: 0,
        end: file_len,
    };
    cursor.skip(start)?;
    let inflated = check_standard(cursor, limits)?;
    // dicom-rs reads a file as a bare data set whenever it refuses the meta group, and what
    // it refuses is not only what `check_standard` recognises (found by fuzzing: a meta group
    // without a transfer syntax, after which a 3 GB value was reserved). A file that also
    // looks like a bare data set is therefore checked both ways.
    if let Some(explicit_vr) = bare {
        check_bare(open()?, file_len, explicit_vr)?;
    }
    Ok(file_len.max(inflated.unwrap_or(0)))
}

/// A bare data set, from the start of `file`.
fn check_bare(file: impl Read, file_len: u64, explicit_vr: bool) -> Result<(), ScanError> {
    let encoding = if explicit_vr {
        Encoding::ExplicitLe
    } else {
        Encoding::ImplicitLe
    };
    let mut scan = Scan {
        cursor: Cursor {
            inner: file,
            pos: 0,
            end: file_len,
        },
        encoding,
        where_: "",
    };
    scan.data_set(None, 0).map(drop)
}

/// The meta group (explicit VR little endian, as long as its group length says), then the data
/// set in the transfer syntax the meta group names.
///
/// Returns early, with nothing to check after it, where the meta group is one dicom-rs refuses
/// (it then reads the file some other way, or not at all). Returns the inflated length of a
/// deflated data set.
fn check_standard<R: Read>(
    mut cursor: Cursor<R>,
    limits: &Limits,
) -> Result<Option<u64>, ScanError> {
    let mut meta = Scan {
        cursor,
        encoding: Encoding::ExplicitLe,
        where_: "",
    };
    let Some(header) = meta.header()? else {
        return Ok(None);
    };
    if header.tag != Tag(0x0002, 0x0000) || header.len != 4 {
        return Ok(None); // dicom-rs refuses it
    }
    let mut word = [0u8; 4];
    if !meta.cursor.read(&mut word)? {
        return Ok(None);
    }
    let group_len = u64::from(u32::from_le_bytes(word));
    let meta_start = meta.cursor.pos;
    let mut transfer_syntax = String::new();
    while meta.cursor.pos - meta_start < group_len {
        let Some(header) = meta.header()? else {
            return Ok(None);
        };
        if header.len == UNDEFINED {
            return Ok(None); // dicom-rs refuses it
        }
        meta.check_fits(&header)?;
        if header.tag == Tag(0x0002, 0x0010) && header.len <= 64 {
            let mut uid = vec![0u8; header.len as usize];
            if !meta.cursor.read(&mut uid)? {
                return Ok(None);
            }
            transfer_syntax = String::from_utf8_lossy(&uid)
                .trim_end_matches(['\0', ' '])
                .trim()
                .to_string();
        } else {
            meta.cursor.skip(u64::from(header.len))?;
        }
    }
    cursor = meta.cursor;

    let encoding = match transfer_syntax.as_str() {
        IMPLICIT_LE => Encoding::ImplicitLe,
        EXPLICIT_BE => Encoding::ExplicitBe,
        _ => Encoding::ExplicitLe,
    };
    if transfer_syntax != DEFLATED {
        let mut scan = Scan {
            cursor,
            encoding,
            where_: "",
        };
        return scan.data_set(None, 0).map(|_| None);
    }

    // Deflated: one pass to measure the inflated size (which bounds every length inside it),
    // then the check over a second inflation. The compressed bytes are read from `cursor`
    // once, kept only as long as the two passes need them.
    let mut compressed = Vec::new();
    cursor.inner.read_to_end(&mut compressed)?;
    let limit = limits.max_inflated;
    // A broken stream still bounds the lengths: dicom-rs reads the same bytes up to the break
    // (and would first reserve whatever an element there declares: found by fuzzing).
    let mut counted = flate2::read::DeflateDecoder::new(compressed.as_slice()).take(limit + 1);
    let mut inflated = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        match counted.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => inflated += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if inflated > limit {
        return Err(ScanError::InflatesTooFar { limit });
    }
    let mut scan = Scan {
        cursor: Cursor {
            inner: flate2::read::DeflateDecoder::new(compressed.as_slice()),
            pos: 0,
            end: inflated,
        },
        encoding: Encoding::ExplicitLe,
        where_: " of the inflated data set",
    };
    scan.data_set(None, 0).map(|_| Some(inflated))
}

/// A reader that knows its position and where the input ends.
struct Cursor<R> {
    inner: R,
    pos: u64,
    end: u64,
}

impl<R: Read> Cursor<R> {
    /// Fills `buf`; `false` when the input ends first.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let skipped = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        self.pos += skipped;
        Ok(())
    }

    fn remaining(&self) -> u64 {
        self.end.saturating_sub(self.pos)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    ImplicitLe,
    ExplicitLe,
    ExplicitBe,
}

#[derive(Debug, Clone, Copy)]
struct Header {
    tag: Tag,
    vr: VR,
    len: u32,
    /// Where the header starts.
    offset: u64,
}

/// How a data set or sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// At its declared end, or at its delimiter.
    Normal,
    /// At the end of the input, or somewhere dicom-rs will refuse anyway: stop the whole pass.
    Stop,
}

struct Scan<R> {
    cursor: Cursor<R>,
    encoding: Encoding,
    where_: &'static str,
}

impl<R: Read> Scan<R> {
    fn u16(&self, b: [u8; 2]) -> u16 {
        match self.encoding {
            Encoding::ExplicitBe => u16::from_be_bytes(b),
            _ => u16::from_le_bytes(b),
        }
    }

    fn u32(&self, b: [u8; 4]) -> u32 {
        match self.encoding {
            Encoding::ExplicitBe => u32::from_be_bytes(b),
            _ => u32::from_le_bytes(b),
        }
    }

    /// The next element or item header, as dicom-rs's decoder for this encoding reads it;
    /// `None` at the end of the input.
    fn header(&mut self) -> io::Result<Option<Header>> {
        let offset = self.cursor.pos;
        let mut b = [0u8; 8];
        if !self.cursor.read(&mut b)? {
            return Ok(None);
        }
        self.header_from(b, offset)
    }

    /// Finishes reading an element header whose first 8 bytes are `b`.
    fn header_from(&mut self, b: [u8; 8], offset: u64) -> io::Result<Option<Header>> {
        let tag = Tag(self.u16([b[0], b[1]]), self.u16([b[2], b[3]]));
        let explicit = self.encoding != Encoding::ImplicitLe;
        if tag.0 == 0xFFFE || !explicit {
            let vr = if tag.0 == 0xFFFE {
                VR::UN
            } else if tag == PIXEL_DATA || (tag.0 >> 8 == 0x60 && tag.1 == 0x3000) {
                VR::OW
            } else {
                StandardDataDictionary
                    .by_tag(tag)
                    .map(|entry| entry.vr().relaxed())
                    .unwrap_or(VR::UN)
            };
            let len = self.u32([b[4], b[5], b[6], b[7]]);
            return Ok(Some(Header {
                tag,
                vr,
                len,
                offset,
            }));
        }
        let vr = VR::from_binary([b[4], b[5]]).unwrap_or(VR::UN);
        let len = if short_length(vr) {
            u32::from(self.u16([b[6], b[7]]))
        } else {
            let mut l = [0u8; 4];
            if !self.cursor.read(&mut l)? {
                return Ok(None);
            }
            self.u32(l)
        };
        Ok(Some(Header {
            tag,
            vr,
            len,
            offset,
        }))
    }

    /// Something other than an item where an item belongs: read on as if it were an element
    /// (its length checked, its value skipped), so that nothing after it goes unchecked.
    fn stray_element(&mut self, item: &Header) -> Result<End, ScanError> {
        let mut b = [0u8; 8];
        b[..2].copy_from_slice(&self.bytes16(item.tag.0));
        b[2..4].copy_from_slice(&self.bytes16(item.tag.1));
        b[4..].copy_from_slice(&self.bytes32(item.len));
        let Some(header) = self.header_from(b, item.offset)? else {
            return Ok(End::Stop);
        };
        if header.len != UNDEFINED {
            self.check_fits(&header)?;
            self.cursor.skip(consumed(header.vr, header.len))?;
        }
        Ok(End::Normal)
    }

    fn bytes16(&self, v: u16) -> [u8; 2] {
        match self.encoding {
            Encoding::ExplicitBe => v.to_be_bytes(),
            _ => v.to_le_bytes(),
        }
    }

    fn bytes32(&self, v: u32) -> [u8; 4] {
        match self.encoding {
            Encoding::ExplicitBe => v.to_be_bytes(),
            _ => v.to_le_bytes(),
        }
    }

    fn check_fits(&self, header: &Header) -> Result<(), ScanError> {
        let remaining = self.cursor.remaining();
        if u64::from(header.len) > remaining {
            return Err(ScanError::LengthBeyondEnd {
                tag: header.tag,
                offset: header.offset,
                declared: header.len.into(),
                remaining,
                where_: self.where_,
            });
        }
        Ok(())
    }

    /// Elements until `end` (a defined-length item), an item delimiter, or the end of input.
    /// `depth` counts the sequences around it.
    fn data_set(&mut self, end: Option<u64>, depth: usize) -> Result<End, ScanError> {
        loop {
            if end.is_some_and(|end| self.cursor.pos >= end) {
                return Ok(End::Normal);
            }
            let Some(header) = self.header()? else {
                return Ok(End::Stop);
            };
            match header.tag {
                ITEM_END | SEQUENCE_END if depth > 0 && end.is_none() => {
                    // A delimiter should declare 0 bytes; whatever it declares must fit.
                    if header.len != UNDEFINED && header.len > 0 {
                        self.check_fits(&header)?;
                    }
                    return Ok(End::Normal);
                }
                // dicom-rs reads a stray delimiter outside any sequence, or inside an item of
                // defined length (which ends by its length alone), as an element, value and
                // all: its declared length must fit, and it is skipped (found by fuzzing:
                // delimiters declaring 808 MB and 4 GB were reserved before the read failed).
                ITEM_END | SEQUENCE_END => {
                    if header.len != UNDEFINED && header.len > 0 {
                        self.check_fits(&header)?;
                        self.cursor.skip(u64::from(header.len))?;
                    }
                    continue;
                }
                // It reads on after an item header where an element belongs: so does this pass.
                ITEM => continue,
                _ => {}
            }
            let flow = if header.len == UNDEFINED {
                if header.tag == PIXEL_DATA {
                    self.fragments()?
                } else {
                    // dicom-rs reads any other undefined-length element as a sequence.
                    self.sequence(None, depth + 1)?
                }
            } else {
                self.check_fits(&header)?;
                let value_end = self.cursor.pos + u64::from(header.len);
                if header.vr == VR::SQ {
                    self.sequence(Some(value_end), depth + 1)?
                } else {
                    self.cursor.skip(consumed(header.vr, header.len))?;
                    End::Normal
                }
            };
            if flow == End::Stop {
                return Ok(End::Stop);
            }
        }
    }

    /// Items until `end` (a defined-length sequence), a sequence delimiter, or end of input.
    /// `depth` counts this sequence and those around it.
    fn sequence(&mut self, end: Option<u64>, depth: usize) -> Result<End, ScanError> {
        if depth > MAX_DEPTH {
            return Err(ScanError::TooDeep {
                offset: self.cursor.pos,
            });
        }
        loop {
            if end.is_some_and(|end| self.cursor.pos >= end) {
                return Ok(End::Normal);
            }
            let Some(header) = self.item_header()? else {
                return Ok(End::Stop);
            };
            match header.tag {
                SEQUENCE_END => return Ok(End::Normal),
                ITEM if header.len == UNDEFINED => {
                    if self.data_set(None, depth)? == End::Stop {
                        return Ok(End::Stop);
                    }
                }
                ITEM => {
                    self.check_fits(&header)?;
                    let item_end = self.cursor.pos + u64::from(header.len);
                    if self.data_set(Some(item_end), depth)? == End::Stop {
                        return Ok(End::Stop);
                    }
                }
                _ => {
                    if self.stray_element(&header)? == End::Stop {
                        return Ok(End::Stop);
                    }
                }
            }
        }
    }

    /// The fragments of encapsulated pixel data: items of raw bytes up to a sequence delimiter.
    fn fragments(&mut self) -> Result<End, ScanError> {
        loop {
            let Some(header) = self.item_header()? else {
                return Ok(End::Stop);
            };
            match header.tag {
                SEQUENCE_END => return Ok(End::Normal),
                ITEM if header.len != UNDEFINED => {
                    self.check_fits(&header)?;
                    self.cursor.skip(header.len.into())?;
                }
                ITEM => {}
                _ => {
                    if self.stray_element(&header)? == End::Stop {
                        return Ok(End::Stop);
                    }
                }
            }
        }
    }

    /// An item or delimiter header: tag and 4-byte length, no VR, in every encoding.
    fn item_header(&mut self) -> io::Result<Option<Header>> {
        let offset = self.cursor.pos;
        let mut b = [0u8; 8];
        if !self.cursor.read(&mut b)? {
            return Ok(None);
        }
        Ok(Some(Header {
            tag: Tag(self.u16([b[0], b[1]]), self.u16([b[2], b[3]])),
            vr: VR::UN,
            len: self.u32([b[4], b[5], b[6], b[7]]),
            offset,
        }))
    }
}

/// How many bytes dicom-rs reads for a value of `vr` declaring `len` bytes. For binary VRs of
/// 2-, 4- or 8-byte words it reads whole words only (`len / size` of them) and leaves the rest
/// of an odd-sized value in the stream, where it is read as the start of the next element
/// header: the pass must do the same, or it checks other headers than dicom-rs reads (found by
/// fuzzing).
fn consumed(vr: VR, len: u32) -> u64 {
    let word: u32 = match vr {
        VR::US | VR::OW | VR::SS => 2,
        VR::AT | VR::UL | VR::OL | VR::SL | VR::FL | VR::OF => 4,
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
        _ => 1,
    };
    u64::from(len - len % word)
}

/// VRs whose explicit-VR length is a 16-bit field right after the VR (PS3.5 7.1.2); the rest
/// have two reserved bytes and a 32-bit length.
fn short_length(vr: VR) -> bool {
    matches!(
        vr,
        VR::AE
            | VR::AS
            | VR::AT
            | VR::CS
            | VR::DA
            | VR::DS
            | VR::DT
            | VR::FL
            | VR::FD
            | VR::IS
            | VR::LO
            | VR::LT
            | VR::PN
            | VR::SH
            | VR::SL
            | VR::SS
            | VR::ST
            | VR::TM
            | VR::UI
            | VR::UL
            | VR::US
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

    /// Preamble, magic and a file meta group naming `ts`.
    fn meta(ts: &str) -> Vec<u8> {
        let mut uid = ts.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        out.extend_from_slice(&[0x02, 0, 0, 0, b'U', b'L', 4, 0]);
        out.extend_from_slice(&(8 + uid.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0x02, 0, 0x10, 0, b'U', b'I']);
        out.extend_from_slice(&(uid.len() as u16).to_le_bytes());
        out.extend_from_slice(&uid);
        out
    }

    /// An explicit VR little endian header with a 32-bit length (OB, OW, SQ, UN...).
    fn long_header(group: u16, element: u16, vr: &[u8; 2], len: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&len.to_le_bytes());
        out
    }

    fn item(tag: Tag, len: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out
    }

    fn limits() -> Limits {
        Limits {
            max_inflated: 1 << 20,
        }
    }

    fn scan(bytes: &[u8], bare: Option<bool>, limits: &Limits) -> Result<(), ScanError> {
        check(|| Ok(bytes), bytes.len() as u64, bare, limits).map(drop)
    }

    #[test]
    fn lengths_that_fit_pass() {
        let mut f = meta(EXPLICIT_LE);
        f.extend(long_header(0x0009, 0x0010, b"OB", 4));
        f.extend_from_slice(&[1, 2, 3, 4]);
        // A sequence of one defined-length item holding one element.
        let inner = [long_header(0x0009, 0x0011, b"OB", 2), vec![5, 6]].concat();
        let seq_item = [item(ITEM, inner.len() as u32), inner].concat();
        f.extend(long_header(0x0040, 0x0260, b"SQ", seq_item.len() as u32));
        f.extend(seq_item);
        // Encapsulated pixel data: empty offset table, one fragment, delimiter.
        f.extend(long_header(0x7FE0, 0x0010, b"OB", UNDEFINED));
        f.extend(item(ITEM, 0));
        f.extend(item(ITEM, 4));
        f.extend_from_slice(&[9, 9, 9, 9]);
        f.extend(item(SEQUENCE_END, 0));
        scan(&f, None, &limits()).unwrap();
    }

    #[test]
    fn an_element_longer_than_the_file_is_refused() {
        let mut f = meta(EXPLICIT_LE);
        f.extend(long_header(0x0009, 0x0010, b"OB", 0xFFFF_FFF0));
        f.extend_from_slice(&[0; 16]);
        let err = scan(&f, None, &limits()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("(0009,0010)") && message.contains("declares 4294967280 bytes"),
            "{message}"
        );
        assert!(message.contains("only 16 remain"), "{message}");
    }

    #[test]
    fn lengths_inside_sequences_items_and_fragments_are_checked() {
        // Undefined-length sequence and item around an element that is too long.
        let mut f = meta(EXPLICIT_LE);
        f.extend(long_header(0x0040, 0x0260, b"SQ", UNDEFINED));
        f.extend(item(ITEM, UNDEFINED));
        f.extend(long_header(0x0009, 0x0010, b"OB", 1 << 30));
        f.extend_from_slice(&[0; 8]);
        assert!(matches!(
            scan(&f, None, &limits()),
            Err(ScanError::LengthBeyondEnd {
                tag: Tag(0x0009, 0x0010),
                ..
            })
        ));
        // An item longer than the file.
        let mut f = meta(EXPLICIT_LE);
        f.extend(long_header(0x0040, 0x0260, b"SQ", UNDEFINED));
        f.extend(item(ITEM, 1 << 31));
        assert!(matches!(
            scan(&f, None, &limits()),
            Err(ScanError::LengthBeyondEnd { tag: ITEM, .. })
        ));
        // A pixel data fragment longer than the file.
        let mut f = meta(EXPLICIT_LE);
        f.extend(long_header(0x7FE0, 0x0010, b"OB", UNDEFINED));
        f.extend(item(ITEM, 0));
        f.extend(item(ITEM, 0xFFFF_0000));
        f.extend_from_slice(&[0; 32]);
        assert!(matches!(
            scan(&f, None, &limits()),
            Err(ScanError::LengthBeyondEnd { tag: ITEM, .. })
        ));
    }

    #[test]
    fn implicit_vr_and_big_endian_data_sets_are_checked() {
        // Implicit VR: (0008,0016) then a private element claiming 2 GiB.
        let mut f = meta(IMPLICIT_LE);
        f.extend_from_slice(&[0x08, 0, 0x16, 0, 2, 0, 0, 0, b'1', 0]);
        f.extend_from_slice(&[0x09, 0, 0x10, 0, 0, 0, 0, 0x80]);
        assert!(scan(&f, None, &limits()).is_err());
        // The same as a bare data set, without meta.
        let bare = &f[meta(IMPLICIT_LE).len()..];
        assert!(scan(bare, Some(false), &limits()).is_err());
        assert!(scan(bare, None, &limits()).is_ok(), "no magic: not checked");
        // Explicit VR big endian: OB with a 32-bit big-endian length.
        let mut f = meta(EXPLICIT_BE);
        f.extend_from_slice(&[0, 0x09, 0, 0x10, b'O', b'B', 0, 0, 0x40, 0, 0, 0]);
        assert!(scan(&f, None, &limits()).is_err());
    }

    #[test]
    fn odd_sized_word_values_are_read_as_dicom_rs_reads_them() {
        // Implicit VR: (0028,0010) Rows, US, declaring 3 bytes. dicom-rs reads one 2-byte word
        // and the third byte starts the next header, which here claims 4 GiB.
        let mut f = meta(IMPLICIT_LE);
        f.extend_from_slice(&[0x28, 0, 0x10, 0, 3, 0, 0, 0, 1, 0]);
        f.extend_from_slice(&[0x09, 0, 0x10, 0, 0, 0, 0, 0x80]);
        f.extend_from_slice(&[0; 16]);
        let err = scan(&f, None, &limits()).unwrap_err();
        assert!(err.to_string().contains("(0009,0010)"), "{err}");
        // Even-sized word values are read whole.
        let mut f = meta(IMPLICIT_LE);
        f.extend_from_slice(&[0x28, 0, 0x10, 0, 2, 0, 0, 0, 1, 0]);
        f.extend_from_slice(&[0x28, 0, 0x11, 0, 2, 0, 0, 0, 1, 0]);
        scan(&f, None, &limits()).unwrap();
    }

    #[test]
    fn a_magic_code_without_meta_group_is_checked_as_the_bare_data_set() {
        // A bare implicit VR data set with "DICM" at byte 128 but no meta group after it:
        // dicom-rs falls back to reading it as the bare data set.
        let mut f = vec![0x08, 0, 0x16, 0, 2, 0, 0, 0, b'1', 0];
        f.extend_from_slice(&[0x09, 0, 0x10, 0, 114, 0, 0, 0]);
        f.resize(128, 0);
        f.extend_from_slice(b"DICM");
        f.extend_from_slice(&[0x09, 0, 0x11, 0, 0, 0, 0, 0x80]);
        f.extend_from_slice(&[0; 8]);
        assert!(
            scan(&f, None, &limits()).is_ok(),
            "not a bare data set: left alone"
        );
        let err = scan(&f, Some(false), &limits()).unwrap_err();
        assert!(err.to_string().contains("(0009,0011) at byte 132"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut f = meta(EXPLICIT_LE);
        for _ in 0..MAX_DEPTH + 1 {
            f.extend(long_header(0x0040, 0x0260, b"SQ", UNDEFINED));
            f.extend(item(ITEM, UNDEFINED));
        }
        assert!(matches!(
            scan(&f, None, &limits()),
            Err(ScanError::TooDeep { .. })
        ));
        let mut f = meta(EXPLICIT_LE);
        for _ in 0..MAX_DEPTH {
            f.extend(long_header(0x0040, 0x0260, b"SQ", UNDEFINED));
            f.extend(item(ITEM, UNDEFINED));
        }
        assert!(scan(&f, None, &limits()).is_ok());
    }

    #[test]
    fn deflated_data_sets_are_checked_after_inflating() {
        let deflated = |data: &[u8]| {
            let mut enc =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(data).unwrap();
            [meta(DEFLATED), enc.finish().unwrap()].concat()
        };
        // 2 MiB of zeros in one element: fits, but inflates past a 1 MiB limit.
        let mut data = long_header(0x0009, 0x0010, b"OB", 2 << 20);
        data.resize(data.len() + (2 << 20), 0);
        let f = deflated(&data);
        assert!(f.len() < 64 << 10);
        assert!(matches!(
            scan(&f, None, &limits()),
            Err(ScanError::InflatesTooFar { limit }) if limit == 1 << 20
        ));
        let roomy = Limits {
            max_inflated: 4 << 20,
        };
        scan(&f, None, &roomy).unwrap();
        // An element that claims more than the inflated data set holds.
        let mut data = long_header(0x0009, 0x0010, b"OB", 1000);
        data.extend_from_slice(&[0; 10]);
        let err = scan(&deflated(&data), None, &roomy).unwrap_err();
        assert!(
            err.to_string().contains("of the inflated data set"),
            "{err}"
        );
    }
}
