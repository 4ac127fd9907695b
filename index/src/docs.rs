//! Per-document stored records: id, metadata fields, and which vector row (if any) belongs to
//! the document. The line number is the document ordinal, so the file needs no separate
//! ordinal column, and the row -> ordinal map is rebuilt from it at open instead of living in a
//! second file that could disagree with it.
//!
//! JSON lines keep the file readable with standard tools. Since format 5 the file is stored as
//! consecutive parts (see [`DataFiles::docs_parts`](crate::manifest::DataFiles)) so that a
//! commit writes what it adds instead of every record.
//!
//! Neither side keeps records as structures in memory. Both keep per document an offset, its
//! vector row, a deletion bit and a 64-bit hash of its id ([`Ordinals`], about 24 bytes);
//! a reader memory-maps the parts (they are never modified) and parses a record's fields when
//! asked, a writer reads committed records back from the files. Opening checks every line's
//! syntax, order and id without building its fields.
//!
//! A deleted document leaves a tombstone line (`{"id":"","deleted":true}`, keeping its vector
//! row until [`compact`](crate::IndexWriter::compact)) so that ordinals never move: the tantivy
//! index and the graph refer to documents by ordinal, and renumbering them would mean
//! rebuilding the text index, whose text is not stored. Tombstones keep no id and no fields.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};
use crate::fsio;
use crate::keys::{key_hash, KeyTable};
use crate::manifest::{FileEntry, Manifest};
use crate::scratch::{ScratchVec, SPILL_BYTES};

/// One line of the docs file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DocRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<u32>,
    /// A tombstone: the document was deleted (its id and fields are gone).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl DocRecord {
    /// The record a deleted document leaves behind: no id, no fields, its vector row kept
    /// until compaction removes it.
    pub(crate) fn tombstone(row: Option<u32>) -> DocRecord {
        DocRecord {
            id: String::new(),
            fields: BTreeMap::new(),
            row,
            deleted: true,
        }
    }
}

/// A live document as stored: what readers return for a hit and writers walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredDoc {
    /// Its ordinal: what [`IndexWriter::add`](crate::IndexWriter::add) returned and hits
    /// carry. A caller that keeps ordinals instead of ids or fields keeps a few bytes per
    /// document and reads the rest back when needed.
    pub ord: u32,
    /// The document id.
    pub id: String,
    /// Stored metadata and report sections.
    pub fields: BTreeMap<String, String>,
    /// Whether the document has an image vector.
    pub has_vector: bool,
}

/// What opening checks of a line, parsed without building its fields.
#[derive(Deserialize)]
struct LineHead<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default)]
    fields: Option<StringMap>,
    #[serde(default)]
    row: Option<u32>,
    #[serde(default)]
    deleted: bool,
}

/// A JSON object whose values are all strings, checked and counted but not kept.
struct StringMap {
    len: usize,
}

impl<'de> Deserialize<'de> for StringMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = StringMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<StringMap, A::Error> {
                let mut len = 0;
                while map.next_entry::<AnyStr, AnyStr>()?.is_some() {
                    len += 1;
                }
                Ok(StringMap { len })
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// A JSON string, checked but not kept (no allocation, escaped or not).
struct AnyStr;

impl<'de> Deserialize<'de> for AnyStr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Str;
        impl Visitor<'_> for Str {
            type Value = AnyStr;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<AnyStr, E> {
                Ok(AnyStr)
            }
        }
        deserializer.deserialize_str(Str)
    }
}

/// Which of the names a JSON string (a key) is, without keeping it.
struct KeyIn<'a>(&'a [&'a str]);

impl<'de> DeserializeSeed<'de> for KeyIn<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIn<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Option<usize>, E> {
        Ok(self.0.iter().position(|n| *n == v))
    }
}

/// The entries of a `fields` object whose keys are among the names; the others are skipped
/// without being built.
struct NamedFields<'a>(&'a [&'a str]);

impl<'de> DeserializeSeed<'de> for NamedFields<'_> {
    type Value = BTreeMap<String, String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for NamedFields<'_> {
    type Value = BTreeMap<String, String>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of strings")
    }
    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key_seed(KeyIn(self.0))? {
            match key {
                Some(k) => {
                    out.insert(self.0[k].to_string(), map.next_value::<String>()?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// A record's line, keeping of its fields those named.
struct RecordFields<'a>(&'a [&'a str]);

impl<'de> Visitor<'de> for RecordFields<'_> {
    type Value = BTreeMap<String, String>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a document record")
    }
    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key_seed(KeyIn(&["fields"]))? {
            match key {
                Some(_) => out = map.next_value_seed(NamedFields(self.0))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// A record's id and fields, read back from a line.
#[derive(Deserialize)]
struct Stored {
    id: String,
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

/// The id alone, borrowed where the JSON needs no unescaping.
#[derive(Deserialize)]
struct StoredId<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
}

/// One bit per ordinal: whether the document is deleted.
#[derive(Debug, Default)]
struct Tombstones {
    words: ScratchVec<u64>,
    len: usize,
    count: usize,
}

impl Tombstones {
    fn push(&mut self, deleted: bool) -> std::io::Result<()> {
        if self.len.is_multiple_of(64) {
            self.words.push(0)?;
        }
        self.len += 1;
        if deleted {
            self.set(self.len - 1);
        }
        Ok(())
    }

    fn get(&self, ord: usize) -> Option<bool> {
        (ord < self.len).then(|| self.words[ord / 64] >> (ord % 64) & 1 == 1)
    }

    /// Marks `ord` (`< len`, not yet deleted) deleted.
    fn set(&mut self, ord: usize) {
        self.words[ord / 64] |= 1 << (ord % 64);
        self.count += 1;
    }
}

/// What both tables keep per ordinal: where its line starts (in the parts read back to back,
/// then, for a writer, its pending lines), whether it is deleted, and, for those with one, its
/// vector row; and the ids by a 64-bit hash, confirmed against the line on a hit. About 24
/// bytes per document: 12 in the [`KeyTable`], 8 for the line's start, 4 for the row. A
/// reader keeps them on the heap; a writer, which lives as long as an archive is indexed, in
/// scratch files ([`Ordinals::spilling`]) once each array passes a mebibyte.
#[derive(Debug)]
pub(crate) struct Ordinals {
    starts: ScratchVec<u64>,
    deleted: Tombstones,
    /// [`key_hash`] of each id when it was added -> its ordinal (deleted ones stay).
    ids: KeyTable,
    /// [`key_hash`]; another function in tests, to force collisions.
    hash: fn(&str) -> u64,
    /// Vector row -> document ordinal. Rows are given in ordinal order, so this is sorted and
    /// also answers ordinal -> row, by binary search.
    row_to_ord: ScratchVec<u32>,
}

impl Default for Ordinals {
    fn default() -> Self {
        Ordinals {
            starts: ScratchVec::new(),
            deleted: Tombstones::default(),
            ids: KeyTable::default(),
            hash: key_hash,
            row_to_ord: ScratchVec::new(),
        }
    }
}

impl Ordinals {
    /// Ordinals whose arrays move into scratch files in `dir` past `at_bytes` each.
    fn spilling(dir: &Arc<Path>, at_bytes: usize) -> Ordinals {
        let spill = || ScratchVec::spilling(dir.clone(), at_bytes);
        Ordinals {
            starts: spill(),
            deleted: Tombstones {
                words: spill(),
                ..Tombstones::default()
            },
            ids: KeyTable::spilling(dir, at_bytes),
            hash: key_hash,
            row_to_ord: ScratchVec::spilling(dir.clone(), at_bytes),
        }
    }

    /// Number of records, tombstones included (the next ordinal).
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// Makes room for `records` more records, `live` of them live and `rows` with a vector,
    /// so that loading an index allocates each array once, at its size.
    fn reserve(&mut self, records: usize, live: usize, rows: usize) -> std::io::Result<()> {
        self.starts.reserve_exact(records)?;
        self.deleted.words.reserve_exact(records.div_ceil(64))?;
        self.ids.reserve(live)?;
        self.row_to_ord.reserve_exact(rows)
    }

    /// Number of live documents.
    pub(crate) fn live(&self) -> usize {
        self.len() - self.deleted.count
    }

    /// Number of tombstones.
    pub(crate) fn deleted(&self) -> usize {
        self.deleted.count
    }

    pub(crate) fn is_live(&self, ord: u32) -> bool {
        self.deleted.get(ord as usize) == Some(false)
    }

    /// The vector row of `ord`, if it has one.
    pub(crate) fn row(&self, ord: usize) -> Option<u32> {
        let ord = u32::try_from(ord).ok()?;
        self.row_to_ord
            .binary_search(&ord)
            .ok()
            .map(|row| row as u32)
    }

    /// Vector row -> document ordinal.
    pub(crate) fn row_to_ord(&self) -> &[u32] {
        &self.row_to_ord
    }

    /// Appends a record whose line starts at `start`; the caller has checked that a live id
    /// is new and that `row` is the next row. An error (a scratch file that cannot grow)
    /// comes before anything changed.
    fn push(
        &mut self,
        id: &str,
        row: Option<u32>,
        deleted: bool,
        start: u64,
    ) -> std::io::Result<u32> {
        let ord = self.len() as u32;
        self.starts.reserve(1)?;
        self.row_to_ord.reserve(usize::from(row.is_some()))?;
        self.deleted.words.reserve(1)?;
        // Within the room just made: these cannot fail.
        self.starts.push(start)?;
        if row.is_some() {
            self.row_to_ord.push(ord)?;
        }
        self.deleted.push(deleted)?;
        if !deleted {
            self.ids.insert((self.hash)(id), ord);
        }
        Ok(ord)
    }

    /// The ordinal of the live document with this id; `id_at(ord)` reads a candidate's id.
    fn find(
        &self,
        id: &str,
        id_at: impl Fn(usize) -> Result<Option<String>>,
    ) -> Result<Option<u32>> {
        for ord in self.ids.candidates((self.hash)(id)) {
            if self.is_live(ord) && id_at(ord as usize)?.is_some_and(|found| found == id) {
                return Ok(Some(ord));
            }
        }
        Ok(None)
    }

    /// Marks the live document `ord` deleted.
    fn remove(&mut self, ord: u32) {
        self.deleted.set(ord as usize);
    }

    /// Drops the rows of tombstones, so that the live documents' rows follow each other in
    /// ordinal order (compaction). Returns how many rows were dropped.
    fn renumber_rows(&mut self) -> usize {
        let before = self.row_to_ord.len();
        let deleted = &self.deleted;
        self.row_to_ord
            .retain(|&ord| deleted.get(ord as usize) == Some(false));
        before - self.row_to_ord.len()
    }
}

/// The line of a record that starts at `at` in `bytes`: up to its newline.
fn line_at(bytes: &[u8], at: usize) -> &[u8] {
    let rest = bytes.get(at..).unwrap_or_default();
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    &rest[..end]
}

/// The id of a record's line, `None` when it does not parse.
fn parse_id(line: &[u8]) -> Option<String> {
    serde_json::from_slice::<StoredId>(line)
        .ok()
        .map(|s| s.id.into_owned())
}

/// What [`load_into`] fills: the ordinals, and the parts once each is read.
trait Records {
    fn ords(&self) -> &Ordinals;
    fn ords_mut(&mut self) -> &mut Ordinals;
    /// The id of the live `ord`, of a part added before.
    fn id_at(&self, ord: usize) -> Result<Option<String>>;
    /// A part was read and checked: its file and map, where it starts, its first ordinal.
    fn add_part(&mut self, part: LoadedPart) -> Result<()>;
}

/// A part as [`load_into`] read it.
struct LoadedPart {
    entry: FileEntry,
    file: File,
    map: Option<Mmap>,
    start: u64,
    first_ord: usize,
}

/// Maps a docs part read-only (`None` for an empty file, which cannot be mapped everywhere).
fn map_part(file: &File, path: &Path) -> Result<Option<Mmap>> {
    let len = file.metadata().map_err(IndexError::io(path))?.len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: generation files are written once and never modified afterwards (a commit
    // writes new files); the map is read-only.
    let map = unsafe { Mmap::map(file) }.map_err(IndexError::io(path))?;
    Ok(Some(map))
}

/// Reads the docs parts named by `manifest` into `table`, checking each part against its
/// length and CRC-32, each record (valid JSON with string fields, rows in order, tombstones
/// empty, ids unique), and the counts against the manifest. Fields are checked, not built.
fn load_into(dir: &Path, manifest: &Manifest, table: &mut impl Records) -> Result<()> {
    // Sized from the manifest, bounded by what the files can hold (a record takes at least
    // 10 bytes), so that a damaged count cannot ask for absurd memory; the counts are checked
    // against the records at the end.
    let most = (manifest.docs_files().map(|e| e.len).sum::<u64>() / 10) as usize;
    let records = (manifest.doc_count as usize).min(most);
    let live = records.saturating_sub(manifest.deleted_count as usize);
    let rows = (manifest.vector_count as usize).min(records);
    let scratch = |e| IndexError::io(dir)(e);
    table
        .ords_mut()
        .reserve(records, live, rows)
        .map_err(scratch)?;
    let mut start = 0u64;
    for entry in manifest.docs_files() {
        let path = dir.join(&entry.name);
        let file = File::open(&path).map_err(IndexError::io(&path))?;
        let map = map_part(&file, &path)?;
        let bytes: &[u8] = map.as_deref().unwrap_or_default();
        fsio::verify(dir, entry, bytes)?;
        let first_ord = table.ords().len();
        let mut at = 0usize;
        let mut line_no = 0usize;
        while at < bytes.len() {
            let line = line_at(bytes, at);
            let line_start = at;
            at += line.len() + 1;
            line_no += 1;
            if line.trim_ascii().is_empty() {
                continue;
            }
            let bad = |what: String| IndexError::corrupt(&path, format!("line {line_no}: {what}"));
            let head: LineHead = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
            let rows = table.ords().row_to_ord.len();
            if let Some(row) = head.row {
                if row as usize != rows {
                    return Err(bad(format!(
                        "vector row {row} out of order (expected {rows})"
                    )));
                }
            }
            let has_fields = head.fields.as_ref().is_some_and(|f| f.len > 0);
            if head.deleted && (!head.id.is_empty() || has_fields) {
                return Err(bad("a tombstone keeps an id or fields".into()));
            }
            if !head.deleted {
                // A candidate of this part is read from its bytes, one of an earlier part
                // from the table.
                let id_at = |ord: usize| -> Result<Option<String>> {
                    if ord < first_ord {
                        return table.id_at(ord);
                    }
                    let at = (table.ords().starts[ord] - start) as usize;
                    Ok(parse_id(line_at(bytes, at)))
                };
                if table.ords().find(&head.id, id_at)?.is_some() {
                    return Err(bad(format!("duplicate id `{}`", head.id)));
                }
            }
            table
                .ords_mut()
                .push(&head.id, head.row, head.deleted, start + line_start as u64)
                .map_err(scratch)?;
        }
        table.add_part(LoadedPart {
            entry: entry.clone(),
            file,
            map,
            start,
            first_ord,
        })?;
        start += entry.len;
    }
    let ords = table.ords();
    let (records, deleted, rows) = (ords.len(), ords.deleted(), ords.row_to_ord.len());
    if records as u64 != manifest.doc_count
        || rows as u64 != manifest.vector_count
        || deleted as u64 != manifest.deleted_count
    {
        let names: Vec<&str> = manifest.docs_files().map(|e| e.name.as_str()).collect();
        return Err(IndexError::corrupt(
            dir.join(names.last().copied().unwrap_or_default()),
            format!(
                "the docs file ({}) holds {records} records ({deleted} deleted) with {rows} \
                 vectors, the manifest says {} ({}) and {}",
                names.join(", "),
                manifest.doc_count,
                manifest.deleted_count,
                manifest.vector_count
            ),
        ));
    }
    Ok(())
}

/// A docs part as a reader maps it.
#[derive(Debug)]
struct MappedPart {
    map: Option<Mmap>,
    /// Where the part starts in the parts read back to back.
    start: u64,
    first_ord: usize,
}

/// The reader's document table: the parts memory-mapped, and the [`Ordinals`]. A record's
/// fields are parsed when asked for (a hit, a filter), so opening an index costs a scan of
/// its lines and about 24 bytes per document, not a structure per record.
#[derive(Debug, Default)]
pub(crate) struct DocTable {
    parts: Vec<MappedPart>,
    pub ords: Ordinals,
}

impl DocTable {
    /// Reads and checks the docs parts named by `manifest` (empty table if there are none).
    pub(crate) fn load(dir: &Path, manifest: &Manifest) -> Result<DocTable> {
        let mut table = DocTable::default();
        load_into(dir, manifest, &mut table)?;
        Ok(table)
    }

    /// The line of record `ord` (`ord < len`).
    fn line(&self, ord: usize) -> &[u8] {
        let k = self.parts.partition_point(|p| p.first_ord <= ord) - 1;
        let part = &self.parts[k];
        let bytes: &[u8] = part.map.as_deref().unwrap_or_default();
        line_at(bytes, (self.ords.starts[ord] - part.start) as usize)
    }

    /// The id of the live document `ord`.
    pub(crate) fn id(&self, ord: u32) -> Option<Cow<'_, str>> {
        if !self.ords.is_live(ord) {
            return None;
        }
        serde_json::from_slice::<StoredId>(self.line(ord as usize))
            .ok()
            .map(|s| s.id)
    }

    /// The live document `ord`, its fields parsed from its line.
    pub(crate) fn doc(&self, ord: u32) -> Option<StoredDoc> {
        if !self.ords.is_live(ord) {
            return None;
        }
        // Checked at open: a live line parses, with string fields.
        let stored: Stored = serde_json::from_slice(self.line(ord as usize)).ok()?;
        Some(StoredDoc {
            ord,
            id: stored.id,
            fields: stored.fields,
            has_vector: self.ords.row(ord as usize).is_some(),
        })
    }

    /// The fields named in `names` of the live document `ord` (those it has).
    pub(crate) fn fields(&self, ord: u32, names: &[&str]) -> Option<BTreeMap<String, String>> {
        if !self.ords.is_live(ord) {
            return None;
        }
        let mut de = serde_json::Deserializer::from_slice(self.line(ord as usize));
        de.deserialize_map(RecordFields(names)).ok()
    }

    /// The ordinal of the live document with this id.
    pub(crate) fn ord_of(&self, id: &str) -> Option<u32> {
        let id_at = |ord: usize| Ok(self.id(ord as u32).map(Cow::into_owned));
        self.ords.find(id, id_at).ok().flatten()
    }
}

impl Records for DocTable {
    fn ords(&self) -> &Ordinals {
        &self.ords
    }
    fn ords_mut(&mut self) -> &mut Ordinals {
        &mut self.ords
    }
    fn id_at(&self, ord: usize) -> Result<Option<String>> {
        Ok(self.id(ord as u32).map(Cow::into_owned))
    }
    fn add_part(&mut self, part: LoadedPart) -> Result<()> {
        self.parts.push(MappedPart {
            map: part.map,
            start: part.start,
            first_ord: part.first_ord,
        });
        Ok(())
    }
}

/// A committed part of the docs file, as the writer reads it back.
#[derive(Debug)]
struct Part {
    entry: FileEntry,
    /// Opened once, for positioned reads of single records.
    file: File,
    /// Where the part starts in the parts read back to back.
    start: u64,
    /// Its first record's ordinal.
    first_ord: usize,
}

/// The writer's document table. An index writer lives as long as an archive is indexed, so
/// what it holds per document matters. Committed records stay on disk, in the docs file's
/// parts, and are read back when asked for (a positioned read of one line to confirm an id, a
/// sequential read for a walk over all), so that the files are not mapped into the writer's
/// memory; it keeps the [`Ordinals`] (about 24 bytes per document, in scratch files past a
/// mebibyte per array). Records added since the last commit are kept as the lines that will
/// be written.
#[derive(Debug)]
pub(crate) struct WriterDocs {
    dir: PathBuf,
    /// Where the tables' scratch files go (the index folder), and past how many bytes.
    scratch: Arc<Path>,
    spill_at: usize,
    parts: Vec<Part>,
    /// Bytes and records in `parts`.
    committed_len: u64,
    committed: usize,
    /// Lines of the records added since the last commit; they start at `committed_len` in the
    /// offsets of the ordinals.
    pending: Vec<u8>,
    pub ords: Ordinals,
    /// The lowest committed ordinal whose line changed since the last commit (a deletion, or
    /// new rows after compaction): its part and those after it are rewritten.
    changed_from: Option<usize>,
    /// Rows were renumbered: lines are written with the rows of the ordinals.
    renumbered: bool,
    /// Stored fields whose values are looked up ([`WriterDocs::track_field`]).
    lookups: Vec<FieldLookup>,
}

/// The values of one stored field, by [`key_hash`], for lookups by value.
#[derive(Debug)]
struct FieldLookup {
    name: String,
    values: KeyTable,
}

/// Reads `buf.len()` bytes of `file` at `offset`, without moving a shared cursor.
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            let n = std::os::windows::fs::FileExt::seek_read(
                file,
                &mut buf[done..],
                offset + done as u64,
            )?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }
}

/// What [`WriterDocs::write_part`] wrote, applied by [`WriterDocs::committed`] once the
/// manifest naming it is durable.
#[derive(Debug)]
pub(crate) struct StagedDocs {
    /// Parts kept as they are (a prefix of the current ones).
    keep: usize,
    /// The new part (opened for reading): the records from `first_ord` on.
    part: Option<(FileEntry, usize, File)>,
    /// The new part's line starts, relative to the part.
    starts: Vec<u64>,
}

impl StagedDocs {
    /// The docs parts the next manifest names: `current`'s kept prefix and the new part.
    pub(crate) fn files(&self, current: &[FileEntry]) -> Vec<FileEntry> {
        current[..self.keep]
            .iter()
            .cloned()
            .chain(self.part.iter().map(|(entry, _, _)| entry.clone()))
            .collect()
    }
}

impl WriterDocs {
    /// The table of a new index in `dir`.
    pub(crate) fn new(dir: &Path) -> WriterDocs {
        WriterDocs::spilling_at(dir, SPILL_BYTES)
    }

    /// The table of a new index in `dir`, whose arrays spill past `spill_at` bytes each.
    fn spilling_at(dir: &Path, spill_at: usize) -> WriterDocs {
        let scratch: Arc<Path> = Arc::from(dir);
        WriterDocs {
            dir: dir.to_path_buf(),
            ords: Ordinals::spilling(&scratch, spill_at),
            scratch,
            spill_at,
            parts: Vec::new(),
            committed_len: 0,
            committed: 0,
            pending: Vec::new(),
            changed_from: None,
            renumbered: false,
            lookups: Vec::new(),
        }
    }

    /// Reads and checks the docs parts named by `manifest`, as [`DocTable::load`] does.
    pub(crate) fn load(dir: &Path, manifest: &Manifest) -> Result<WriterDocs> {
        let mut docs = WriterDocs::new(dir);
        load_into(dir, manifest, &mut docs)?;
        Ok(docs)
    }

    /// Number of records, tombstones included (the next ordinal).
    pub(crate) fn len(&self) -> usize {
        self.ords.len()
    }

    /// The end of everything, committed and pending, in the offsets of the ordinals.
    fn end(&self) -> u64 {
        self.committed_len + self.pending.len() as u64
    }

    /// The committed part holding `ord` (`ord < committed`).
    fn part_of(&self, ord: usize) -> usize {
        self.parts.partition_point(|p| p.first_ord <= ord) - 1
    }

    /// Where the line of `ord` starts and ends, in the offsets of the ordinals.
    fn span(&self, ord: usize) -> (u64, u64) {
        let starts = &self.ords.starts;
        let start = starts[ord];
        let mut end = starts.get(ord + 1).copied().unwrap_or_else(|| self.end());
        if start < self.committed_len {
            // Blank lines a part may start with belong to no record of the part before.
            let part = &self.parts[self.part_of(ord)];
            end = end.min(part.start + part.entry.len);
        }
        (start, end)
    }

    fn pending_slice(&self, start: u64, end: u64) -> &[u8] {
        let at = (start - self.committed_len) as usize;
        let to = (end - self.committed_len) as usize;
        &self.pending[at..to]
    }

    /// The line of `ord` (a record added or read back, so `ord < len`).
    fn line(&self, ord: usize) -> Result<Cow<'_, [u8]>> {
        let (start, end) = self.span(ord);
        if start >= self.committed_len {
            return Ok(self.pending_slice(start, end).into());
        }
        let part = &self.parts[self.part_of(ord)];
        let mut buf = vec![0u8; (end - start) as usize];
        read_exact_at(&part.file, &mut buf, start - part.start)
            .map_err(IndexError::io(self.dir.join(&part.entry.name)))?;
        Ok(buf.into())
    }

    /// The id of the live document `ord`.
    fn id_of(&self, ord: usize) -> Result<Option<String>> {
        if !self.ords.is_live(ord as u32) {
            return Ok(None);
        }
        let line = self.line(ord)?;
        let stored: StoredId = serde_json::from_slice(&line).map_err(|e| self.bad_line(ord, e))?;
        Ok(Some(stored.id.into_owned()))
    }

    /// The error for a committed line that no longer parses (the file changed under us).
    fn bad_line(&self, ord: usize, e: serde_json::Error) -> IndexError {
        let name = self
            .parts
            .iter()
            .rev()
            .find(|p| p.first_ord <= ord)
            .map_or("docs", |p| p.entry.name.as_str());
        IndexError::corrupt(self.dir.join(name), format!("record {ord}: {e}"))
    }

    /// The ordinal of the live document with this id.
    pub(crate) fn ord_of(&self, id: &str) -> Result<Option<u32>> {
        self.ords.find(id, |ord| self.id_of(ord))
    }

    /// The live document `ord`.
    pub(crate) fn record(&self, ord: usize) -> Result<Option<StoredDoc>> {
        if !self.ords.is_live(ord as u32) {
            return Ok(None);
        }
        let line = self.line(ord)?;
        self.stored_doc(ord, &line).map(Some)
    }

    fn stored_doc(&self, ord: usize, line: &[u8]) -> Result<StoredDoc> {
        let stored: Stored = serde_json::from_slice(line).map_err(|e| self.bad_line(ord, e))?;
        Ok(StoredDoc {
            ord: ord as u32,
            id: stored.id,
            fields: stored.fields,
            has_vector: self.ords.row(ord).is_some(),
        })
    }

    /// Appends a new record; the caller has checked the id is new and assigned `row` in order.
    pub(crate) fn push(&mut self, record: DocRecord) -> Result<u32> {
        let start = self.end();
        let mark = self.pending.len();
        if let Err(e) = serde_json::to_writer(&mut self.pending, &record) {
            self.pending.truncate(mark);
            return Err(IndexError::InvalidDocument {
                id: record.id,
                reason: format!("cannot serialise its fields: {e}"),
            });
        }
        self.pending.push(b'\n');
        let ord = match self
            .ords
            .push(&record.id, record.row, record.deleted, start)
        {
            Ok(ord) => ord,
            Err(e) => {
                self.pending.truncate(mark);
                return Err(IndexError::io(&self.dir)(e));
            }
        };
        if !record.deleted {
            for lookup in &mut self.lookups {
                if let Some(value) = record.fields.get(&lookup.name) {
                    lookup.values.insert(key_hash(value), ord);
                }
            }
        }
        Ok(ord)
    }

    /// Keeps a table of stored field `name`'s values (12 bytes per document holding it), so
    /// that [`find_by_field`](Self::find_by_field) needs no scan. Reads every record once.
    pub(crate) fn track_field(&mut self, name: &str) -> Result<()> {
        if self.lookups.iter().any(|l| l.name == name) {
            return Ok(());
        }
        let mut values = KeyTable::spilling(&self.scratch, self.spill_at);
        let mut lines = Lines::new(self, 0);
        for ord in 0..self.len() {
            let line = lines.next_line(ord)?;
            if !self.ords.is_live(ord as u32) {
                continue;
            }
            if let Some(value) = self.field_of_line(ord, line, name)? {
                values.insert(key_hash(&value), ord as u32);
            }
        }
        self.lookups.push(FieldLookup {
            name: name.to_string(),
            values,
        });
        Ok(())
    }

    /// The live documents whose field `name` is `value`, in ordinal order; `None` when the
    /// field is not tracked.
    pub(crate) fn find_by_field(&self, name: &str, value: &str) -> Result<Option<Vec<u32>>> {
        let Some(lookup) = self.lookups.iter().find(|l| l.name == name) else {
            return Ok(None);
        };
        let mut found = Vec::new();
        for ord in lookup.values.candidates(key_hash(value)) {
            if !self.ords.is_live(ord) {
                continue;
            }
            let line = self.line(ord as usize)?;
            if self.field_of_line(ord as usize, &line, name)?.as_deref() == Some(value) {
                found.push(ord);
            }
        }
        Ok(Some(found))
    }

    /// Field `name` of the record `ord` whose line is `line`.
    fn field_of_line(&self, ord: usize, line: &[u8], name: &str) -> Result<Option<String>> {
        let mut de = serde_json::Deserializer::from_slice(line);
        let mut fields = de
            .deserialize_map(RecordFields(&[name]))
            .map_err(|e| self.bad_line(ord, e))?;
        Ok(fields.remove(name))
    }

    /// Turns the live document `ord` into a tombstone; returns false if it was not live.
    pub(crate) fn delete(&mut self, ord: u32) -> Result<bool> {
        if !self.ords.is_live(ord) {
            return Ok(false);
        }
        self.ords.remove(ord);
        let ord = ord as usize;
        if ord < self.committed {
            self.changed_from = Some(self.changed_from.map_or(ord, |c| c.min(ord)));
        }
        // A pending record's line stays in `pending` unread; the commit writes a tombstone.
        Ok(true)
    }

    /// The live documents, in ordinal order, read sequentially.
    pub(crate) fn live_records(&self) -> impl Iterator<Item = Result<StoredDoc>> + '_ {
        let mut lines = Lines::new(self, 0);
        (0..self.len()).filter_map(move |ord| {
            let line = match lines.next_line(ord) {
                Ok(line) => line,
                Err(e) => return Some(Err(e)),
            };
            if !self.ords.is_live(ord as u32) {
                return None;
            }
            Some(self.stored_doc(ord, line))
        })
    }

    /// Gives every live document with a row a new row, in ordinal order, and drops the rows of
    /// tombstones (compaction). Returns how many rows were dropped.
    pub(crate) fn renumber_rows(&mut self) -> usize {
        let dropped = self.ords.renumber_rows();
        self.renumbered = true;
        if self.committed > 0 {
            self.changed_from = Some(0);
        }
        dropped
    }

    /// Writes generation file `name`: the records added since the last commit, merged with
    /// the last parts while those are no larger than what is written (and rewriting every
    /// part from the first one holding a changed record). Nothing changes in memory until
    /// [`committed`](Self::committed) applies it.
    pub(crate) fn write_part(&self, name: &str) -> Result<StagedDocs> {
        let mut keep = match self.changed_from {
            Some(ord) => self.parts.partition_point(|p| p.first_ord <= ord) - 1,
            None => self.parts.len(),
        };
        let mut size =
            self.pending.len() as u64 + self.parts[keep..].iter().map(|p| p.entry.len).sum::<u64>();
        while keep > 0 && self.parts[keep - 1].entry.len <= size {
            keep -= 1;
            size += self.parts[keep].entry.len;
        }
        let first_ord = self.parts.get(keep).map_or(self.committed, |p| p.first_ord);
        if first_ord == self.len() {
            return Ok(StagedDocs {
                keep,
                part: None,
                starts: Vec::new(),
            });
        }
        let mut starts = Vec::with_capacity(self.len() - first_ord);
        let mut lines = Lines::new(self, first_ord);
        // A failure to read a record back is reported as itself, not as a write error.
        let mut read_error = None;
        let written = fsio::write_synced(&self.dir, name, |out: &mut dyn Write| {
            let mut at = 0u64;
            for ord in first_ord..self.len() {
                let line = match lines.next_line(ord) {
                    Ok(line) => line,
                    Err(e) => {
                        read_error = Some(e);
                        return Err(std::io::Error::other("a record could not be read back"));
                    }
                };
                starts.push(at);
                let row = self.ords.row(ord);
                let rewritten = if !self.ords.is_live(ord as u32) {
                    Some(DocRecord::tombstone(row))
                } else if self.renumbered {
                    let mut record: DocRecord = match serde_json::from_slice(line) {
                        Ok(record) => record,
                        Err(e) => {
                            read_error = Some(self.bad_line(ord, e));
                            return Err(std::io::Error::other("a record does not parse"));
                        }
                    };
                    record.row = row;
                    Some(record)
                } else {
                    None
                };
                match rewritten {
                    Some(record) => {
                        let mut bytes = serde_json::to_vec(&record)?;
                        bytes.push(b'\n');
                        out.write_all(&bytes)?;
                        at += bytes.len() as u64;
                    }
                    None => {
                        out.write_all(line)?;
                        at += line.len() as u64;
                    }
                }
            }
            Ok(())
        });
        if let Some(e) = read_error {
            return Err(e);
        }
        let entry = written?;
        // Opened now, so that nothing can fail once the manifest names the part.
        let path = self.dir.join(&entry.name);
        let file = File::open(&path).map_err(IndexError::io(&path))?;
        Ok(StagedDocs {
            keep,
            part: Some((entry, first_ord, file)),
            starts,
        })
    }

    /// Applies what [`write_part`](Self::write_part) wrote, once the manifest that names it
    /// is durable: the records are now read back from the parts.
    pub(crate) fn committed(&mut self, staged: StagedDocs) {
        self.parts.truncate(staged.keep);
        if let Some((entry, first_ord, file)) = staged.part {
            let start = self.parts.last().map_or(0, |p| p.start + p.entry.len);
            for (slot, at) in self.ords.starts[first_ord..].iter_mut().zip(&staged.starts) {
                *slot = start + at;
            }
            self.parts.push(Part {
                entry,
                file,
                start,
                first_ord,
            });
        }
        self.committed_len = self.parts.last().map_or(0, |p| p.start + p.entry.len);
        self.committed = self.len();
        self.pending = Vec::new();
        self.changed_from = None;
        self.renumbered = false;
    }
}

impl Records for WriterDocs {
    fn ords(&self) -> &Ordinals {
        &self.ords
    }
    fn ords_mut(&mut self) -> &mut Ordinals {
        &mut self.ords
    }
    fn id_at(&self, ord: usize) -> Result<Option<String>> {
        self.id_of(ord)
    }
    fn add_part(&mut self, part: LoadedPart) -> Result<()> {
        // The map served the load; records are read back with positioned reads.
        drop(part.map);
        self.parts.push(Part {
            entry: part.entry,
            file: part.file,
            start: part.start,
            first_ord: part.first_ord,
        });
        self.committed_len = part.start + self.parts.last().map_or(0, |p| p.entry.len);
        self.committed = self.len();
        Ok(())
    }
}

/// Reads the lines of consecutive ordinals: from the parts sequentially (each opened on its
/// own, so no cursor is shared), then from `pending`.
struct Lines<'a> {
    docs: &'a WriterDocs,
    /// The part being read, and its reader.
    part: usize,
    reader: Option<BufReader<File>>,
    buf: Vec<u8>,
}

impl<'a> Lines<'a> {
    /// Lines from `first_ord` on.
    fn new(docs: &'a WriterDocs, first_ord: usize) -> Lines<'a> {
        let part = docs
            .parts
            .partition_point(|p| p.first_ord <= first_ord)
            .saturating_sub(1);
        Lines {
            docs,
            part,
            reader: None,
            buf: Vec::new(),
        }
    }

    /// The line of `ord`, the ordinal after the one asked for before.
    fn next_line(&mut self, ord: usize) -> Result<&[u8]> {
        let docs = self.docs;
        let (start, end) = docs.span(ord);
        if start >= docs.committed_len {
            return Ok(docs.pending_slice(start, end));
        }
        while self.part + 1 < docs.parts.len() && docs.parts[self.part + 1].first_ord <= ord {
            self.part += 1;
            self.reader = None;
        }
        let part = &docs.parts[self.part];
        let path = docs.dir.join(&part.entry.name);
        let reader = match &mut self.reader {
            Some(reader) => reader,
            None => {
                let mut file = File::open(&path).map_err(IndexError::io(&path))?;
                file.seek(SeekFrom::Start(start - part.start))
                    .map_err(IndexError::io(&path))?;
                self.reader.insert(BufReader::with_capacity(1 << 16, file))
            }
        };
        self.buf.resize((end - start) as usize, 0);
        reader
            .read_exact(&mut self.buf)
            .map_err(IndexError::io(&path))?;
        Ok(&self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout;
    use crate::manifest::Manifest;

    fn record(id: &str, row: Option<u32>, field: &str) -> DocRecord {
        let mut fields = BTreeMap::new();
        if !field.is_empty() {
            fields.insert("path".to_string(), field.to_string());
        }
        DocRecord {
            id: id.to_string(),
            fields,
            row,
            deleted: false,
        }
    }

    fn empty_manifest() -> Manifest {
        Manifest::new(
            crate::IndexSpec {
                dim: 2,
                model_fingerprint: "fp".into(),
                model_name: "m".into(),
            },
            Default::default(),
            Default::default(),
            1,
        )
    }

    /// What the writer does at a commit: write the part, name it in the manifest, apply it.
    fn commit(docs: &mut WriterDocs, manifest: &mut Manifest) {
        manifest.generation += 1;
        let current: Vec<FileEntry> = manifest.docs_files().cloned().collect();
        let staged = docs
            .write_part(&layout::docs_file(manifest.generation))
            .unwrap();
        manifest.files.docs = None;
        manifest.files.docs_parts = staged.files(&current);
        manifest.doc_count = docs.len() as u64;
        manifest.deleted_count = docs.ords.deleted() as u64;
        manifest.vector_count = docs.ords.row_to_ord().len() as u64;
        docs.committed(staged);
    }

    /// The expected table: per ordinal, the live record or `None` for a tombstone.
    fn check(docs: &WriterDocs, dir: &Path, manifest: &Manifest, expected: &[Option<DocRecord>]) {
        let live: Vec<(String, BTreeMap<String, String>)> = expected
            .iter()
            .flatten()
            .map(|r| (r.id.clone(), r.fields.clone()))
            .collect();
        let walked: Vec<_> = docs
            .live_records()
            .map(|r| r.map(|d| (d.id, d.fields)).unwrap())
            .collect();
        assert_eq!(walked, live);
        for (ord, r) in expected.iter().enumerate() {
            if let Some(r) = r {
                assert_eq!(docs.ord_of(&r.id).unwrap(), Some(ord as u32), "{}", r.id);
                let doc = docs.record(ord).unwrap().unwrap();
                assert_eq!(
                    (doc.ord as usize, &doc.id, &doc.fields),
                    (ord, &r.id, &r.fields)
                );
            } else {
                assert_eq!(docs.record(ord).unwrap(), None);
            }
        }
        assert_eq!(docs.ord_of("absent").unwrap(), None);
        // A reader and a reopened writer see the same records.
        let table = DocTable::load(dir, manifest).unwrap();
        assert_eq!(table.ords.len(), expected.len());
        for (ord, r) in expected.iter().enumerate() {
            let o = ord as u32;
            match r {
                Some(r) => {
                    let doc = table.doc(o).unwrap();
                    assert_eq!((&doc.id, &doc.fields), (&r.id, &r.fields));
                    assert_eq!(table.ords.row(ord), r.row);
                    assert_eq!(table.ord_of(&r.id), Some(o));
                    assert_eq!(table.id(o).as_deref(), Some(r.id.as_str()));
                }
                None => assert!(table.doc(o).is_none() && !table.ords.is_live(o)),
            }
        }
        assert_eq!(table.ord_of("absent"), None);
        let reopened = WriterDocs::load(dir, manifest).unwrap();
        let rewalked: Vec<_> = reopened
            .live_records()
            .map(|r| r.map(|d| (d.id, d.fields)).unwrap())
            .collect();
        assert_eq!(rewalked, live);
        for (ord, r) in expected.iter().enumerate() {
            if let Some(r) = r {
                assert_eq!(reopened.ord_of(&r.id).unwrap(), Some(ord as u32));
            }
        }
    }

    /// Commits of many sizes, deletions of committed and pending records, ids that need
    /// escaping, then a renumbering of rows: the writer's table, a reader's and a reopened
    /// writer's agree with a plain list after every commit, and the parts stay few.
    fn commits_deletions_and_renumbering(hash: fn(&str) -> u64, spill_at: usize) {
        let dir = tempfile::tempdir().unwrap();
        let mut docs = WriterDocs::spilling_at(dir.path(), spill_at);
        docs.ords.hash = hash;
        let mut manifest = empty_manifest();
        let mut expected: Vec<Option<DocRecord>> = Vec::new();
        let mut rows = 0u32;
        let mut n = 0usize;
        let mut most_parts = 0;
        for (round, size) in [5usize, 1, 1, 3, 10, 2, 2, 20, 1, 40]
            .into_iter()
            .enumerate()
        {
            for _ in 0..size {
                let id = if n % 7 == 3 {
                    format!("doc {n} \"quoted\" \\ é")
                } else {
                    format!("doc-{n}")
                };
                let row = n.is_multiple_of(2).then(|| {
                    rows += 1;
                    rows - 1
                });
                let r = record(&id, row, &format!("img/{n}.png"));
                assert_eq!(docs.push(r.clone()).unwrap() as usize, expected.len());
                expected.push(Some(r));
                n += 1;
            }
            // Delete a committed record every other round, and a pending one in round 4.
            if round % 2 == 1 {
                let ord = expected.iter().position(Option::is_some).unwrap();
                assert!(docs.delete(ord as u32).unwrap());
                assert!(!docs.delete(ord as u32).unwrap());
                expected[ord] = None;
                // The id can come back, as a new document.
                if round == 3 {
                    let r = record("doc-0", None, "again.png");
                    docs.push(r.clone()).unwrap();
                    expected.push(Some(r));
                }
            }
            if round == 4 {
                let last = expected.len() - 1;
                assert!(docs.delete(last as u32).unwrap());
                expected[last] = None;
            }
            commit(&mut docs, &mut manifest);
            check(&docs, dir.path(), &manifest, &expected);
            most_parts = most_parts.max(manifest.files.docs_parts.len());
            let bound = (expected.len() as f64).log2().ceil() as usize + 1;
            assert!(
                manifest.files.docs_parts.len() <= bound,
                "{} parts for {} records",
                manifest.files.docs_parts.len(),
                expected.len()
            );
        }
        // Commits kept earlier parts instead of rewriting everything each time.
        assert!(most_parts > 1);
        // Compaction: rows of tombstones are dropped and the others numbered again.
        docs.renumber_rows();
        let mut next = 0u32;
        for r in expected.iter_mut().flatten() {
            if r.row.is_some() {
                r.row = Some(next);
                next += 1;
            }
        }
        commit(&mut docs, &mut manifest);
        assert_eq!(manifest.files.docs_parts.len(), 1);
        check(&docs, dir.path(), &manifest, &expected);
        let table = DocTable::load(dir.path(), &manifest).unwrap();
        // Tombstones keep no row after compaction.
        assert!((0..table.ords.len())
            .filter(|&ord| !table.ords.is_live(ord as u32))
            .all(|ord| table.ords.row(ord).is_none()));
    }

    #[test]
    fn records_round_trip_through_commits_of_parts() {
        commits_deletions_and_renumbering(key_hash, SPILL_BYTES);
    }

    #[test]
    fn ids_whose_hashes_collide_are_still_told_apart() {
        commits_deletions_and_renumbering(|_| 7, SPILL_BYTES);
    }

    /// The same with every array in a scratch file from its first values on.
    #[test]
    fn records_round_trip_with_the_tables_in_scratch_files() {
        commits_deletions_and_renumbering(key_hash, 16);
        commits_deletions_and_renumbering(|_| 7, 16);
    }

    /// Past a merge of the id table's run, in scratch files: every id is found, a tracked
    /// field's values too, and nothing is left in the index folder.
    #[test]
    fn thousands_of_records_in_scratch_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut docs = WriterDocs::spilling_at(dir.path(), 256);
        let mut manifest = empty_manifest();
        docs.track_field("path").unwrap();
        let n = 3 * crate::keys::RECENT_MIN;
        for i in 0..n {
            let r = record(
                &format!("doc-{i}"),
                Some(i as u32),
                &format!("img/{}.png", i % 1000),
            );
            docs.push(r).unwrap();
            if i % 5000 == 4999 {
                commit(&mut docs, &mut manifest);
            }
        }
        assert!(docs.ords.starts.is_mapped() && docs.ords.row_to_ord.is_mapped());
        assert!(docs.delete(10).unwrap());
        commit(&mut docs, &mut manifest);
        for i in [0usize, 9, 11, 4095, 4096, n - 1] {
            assert_eq!(docs.ord_of(&format!("doc-{i}")).unwrap(), Some(i as u32));
            assert_eq!(docs.ords.row(i), Some(i as u32));
        }
        assert_eq!(docs.ord_of("doc-10").unwrap(), None);
        let found = docs.find_by_field("path", "img/10.png").unwrap().unwrap();
        let expected: Vec<u32> = (0..n as u32)
            .filter(|&o| o % 1000 == 10 && o != 10)
            .collect();
        assert_eq!(found, expected);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| n.starts_with("docs-")), "{names:?}");
    }

    #[test]
    fn a_folder_with_one_docs_file_is_read_as_one_part() {
        let dir = tempfile::tempdir().unwrap();
        let lines = "{\"id\":\"a\",\"row\":0}\n{\"id\":\"\",\"deleted\":true}\n{\"id\":\"c\"}\n";
        std::fs::write(dir.path().join("docs-3.jsonl"), lines).unwrap();
        let mut manifest = empty_manifest();
        manifest.generation = 3;
        manifest.doc_count = 3;
        manifest.deleted_count = 1;
        manifest.vector_count = 1;
        manifest.files.docs = Some(FileEntry {
            name: "docs-3.jsonl".into(),
            len: lines.len() as u64,
            crc32: crc32fast::hash(lines.as_bytes()),
        });
        let mut docs = WriterDocs::load(dir.path(), &manifest).unwrap();
        assert_eq!(docs.ord_of("c").unwrap(), Some(2));
        docs.push(record("d", None, "d.png")).unwrap();
        commit(&mut docs, &mut manifest);
        // The old file is a part of its own; the new record went to a new one, merged with
        // it when it was no larger.
        assert!(manifest.files.docs.is_none());
        let expected = vec![
            Some(record("a", Some(0), "")),
            None,
            Some(record("c", None, "")),
            Some(record("d", None, "d.png")),
        ];
        check(&docs, dir.path(), &manifest, &expected);
    }

    /// Parts written by hand, with their entries.
    fn parts_manifest(dir: &Path, parts: &[&str], docs: u64, deleted: u64, rows: u64) -> Manifest {
        let mut manifest = empty_manifest();
        for (k, text) in parts.iter().enumerate() {
            let name = format!("docs-{}.jsonl", k + 1);
            std::fs::write(dir.join(&name), text).unwrap();
            manifest.files.docs_parts.push(FileEntry {
                name,
                len: text.len() as u64,
                crc32: crc32fast::hash(text.as_bytes()),
            });
        }
        manifest.doc_count = docs;
        manifest.deleted_count = deleted;
        manifest.vector_count = rows;
        manifest
    }

    #[test]
    fn damaged_records_are_refused_at_open_by_readers_and_writers() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[&str], u64, u64, &str); 5] = [
            (
                &["{\"id\":\"a\",\"fields\":{\"age\":42}}\n"],
                1,
                0,
                "line 1",
            ),
            (
                &["{\"id\":\"a\"}\n{\"id\":\"a\"}\n"],
                2,
                0,
                "duplicate id `a`",
            ),
            (
                &["{\"id\":\"a\"}\n", "{\"id\":\"a\"}\n"],
                2,
                0,
                "duplicate id `a`",
            ),
            (
                &["{\"id\":\"\",\"deleted\":true,\"fields\":{\"k\":\"v\"}}\n"],
                1,
                1,
                "tombstone",
            ),
            (&["{\"id\":\"a\",\"row\":1}\n"], 1, 0, "out of order"),
        ];
        for (parts, docs, deleted, expected) in cases {
            let rows = u64::from(parts.iter().any(|p| p.contains("row")));
            let manifest = parts_manifest(dir.path(), parts, docs, deleted, rows);
            for err in [
                DocTable::load(dir.path(), &manifest).unwrap_err(),
                WriterDocs::load(dir.path(), &manifest).unwrap_err(),
            ] {
                assert!(matches!(err, IndexError::Corrupt { .. }), "{err}");
                assert!(err.to_string().contains(expected), "{parts:?}: {err}");
            }
        }
        // Escaped ids and fields are read back as written, across parts.
        let parts = [
            "{\"id\":\"a\\\"b\",\"fields\":{\"k\":\"\\u00e9\"}}\n",
            "{\"id\":\"c\"}\n",
        ];
        let manifest = parts_manifest(dir.path(), &parts, 2, 0, 0);
        let table = DocTable::load(dir.path(), &manifest).unwrap();
        assert_eq!(table.ord_of("a\"b"), Some(0));
        assert_eq!(table.doc(0).unwrap().fields["k"], "\u{e9}");
        let some = table.fields(0, &["k", "absent"]).unwrap();
        assert_eq!(
            some.into_iter().collect::<Vec<_>>(),
            [("k".into(), "\u{e9}".into())]
        );
        assert!(table.fields(1, &["k"]).unwrap().is_empty());
        assert_eq!(table.ord_of("c"), Some(1));
    }
}
