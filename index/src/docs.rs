//! Per-document stored records: id, metadata fields, and which vector row (if any) belongs to
//! the document. The line number is the document ordinal, so the file needs no separate
//! ordinal column, and the row -> ordinal map is rebuilt from it at open instead of living in a
//! second file that could disagree with it.
//!
//! JSON lines keep the file readable with standard tools. Since format 5 the file is stored as
//! consecutive parts (see [`DataFiles::docs_parts`](crate::manifest::DataFiles)) so that a
//! commit writes what it adds instead of every record; readers stream the parts one after the
//! other, which for 100k documents takes tens of milliseconds.
//!
//! A deleted document leaves a tombstone line (`{"id":"","deleted":true}`, keeping its vector
//! row until [`compact`](crate::IndexWriter::compact)) so that ordinals never move: the tantivy
//! index and the graph refer to documents by ordinal, and renumbering them would mean
//! rebuilding the text index, whose text is not stored. Tombstones keep no id and no fields.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};
use crate::fsio;
use crate::manifest::{FileEntry, Manifest};
use crate::writer::StoredDoc;

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

/// All records of a generation with the lookups built from them.
#[derive(Debug, Default)]
pub(crate) struct DocTable {
    pub records: Vec<DocRecord>,
    /// Live documents only.
    pub by_id: HashMap<String, u32>,
    /// Number of tombstones among `records`.
    pub deleted: usize,
    /// Vector row -> document ordinal.
    pub row_to_ord: Vec<u32>,
}

impl DocTable {
    /// Appends a record; the caller has checked the id is new and assigned `row` in order.
    pub(crate) fn push(&mut self, record: DocRecord) -> u32 {
        let ord = self.records.len() as u32;
        if record.row.is_some() {
            self.row_to_ord.push(ord);
        }
        if record.deleted {
            self.deleted += 1;
        } else {
            self.by_id.insert(record.id.clone(), ord);
        }
        self.records.push(record);
        ord
    }

    /// True when `ord` is a live document.
    pub(crate) fn is_live(&self, ord: u32) -> bool {
        self.records.get(ord as usize).is_some_and(|r| !r.deleted)
    }

    /// Number of live documents.
    pub(crate) fn live(&self) -> usize {
        self.records.len() - self.deleted
    }
    /// Reads and checks the docs file named by `manifest` (empty table if there is none).
    pub(crate) fn load(dir: &Path, manifest: &Manifest) -> Result<DocTable> {
        let mut table = DocTable {
            records: Vec::with_capacity(manifest.doc_count as usize),
            by_id: HashMap::with_capacity(manifest.doc_count as usize),
            deleted: 0,
            row_to_ord: Vec::with_capacity(manifest.vector_count as usize),
        };
        load_into(dir, manifest, &mut table)?;
        Ok(table)
    }
}

/// What [`load_into`] fills: a table of records in ordinal order.
trait Records {
    fn contains_live(&self, id: &str) -> bool;
    /// Appends the record read from the line starting at byte `start` of the parts read
    /// back to back.
    fn push_record(&mut self, record: DocRecord, start: u64) -> Result<()>;
    /// The part `entry` was read whole and matched its manifest entry.
    fn end_part(&mut self, _dir: &Path, _entry: &FileEntry) -> Result<()> {
        Ok(())
    }
    /// (records, tombstones, vector rows)
    fn counts(&self) -> (usize, usize, usize);
}

impl Records for DocTable {
    fn contains_live(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }
    fn push_record(&mut self, record: DocRecord, _start: u64) -> Result<()> {
        self.push(record);
        Ok(())
    }
    fn counts(&self) -> (usize, usize, usize) {
        (self.records.len(), self.deleted, self.row_to_ord.len())
    }
}

/// Reads the docs parts named by `manifest` into `table`, checking each record (rows in
/// order, tombstones empty, ids unique), each part against its length and CRC-32, and the
/// counts against the manifest. Parts are streamed, never held whole.
fn load_into(dir: &Path, manifest: &Manifest, table: &mut impl Records) -> Result<()> {
    let mut start = 0u64;
    let mut line = Vec::new();
    for entry in manifest.docs_files() {
        let path = dir.join(&entry.name);
        let file = File::open(&path).map_err(IndexError::io(&path))?;
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut hasher = crc32fast::Hasher::new();
        let mut len = 0u64;
        let mut line_no = 0usize;
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(IndexError::io(&path))?;
            if n == 0 {
                break;
            }
            hasher.update(&line);
            let line_start = start + len;
            len += n as u64;
            line_no += 1;
            if line.trim_ascii().is_empty() {
                continue;
            }
            let at = |what: String| IndexError::corrupt(&path, format!("line {line_no}: {what}"));
            let record: DocRecord = serde_json::from_slice(&line).map_err(|e| at(e.to_string()))?;
            let rows = table.counts().2;
            if let Some(row) = record.row {
                if row as usize != rows {
                    return Err(at(format!(
                        "vector row {row} out of order (expected {rows})"
                    )));
                }
            }
            if record.deleted && (!record.id.is_empty() || !record.fields.is_empty()) {
                return Err(at("a tombstone keeps an id or fields".into()));
            }
            if !record.deleted && table.contains_live(&record.id) {
                return Err(at(format!("duplicate id `{}`", record.id)));
            }
            table.push_record(record, line_start)?;
        }
        fsio::check_entry(&path, entry, len, hasher.finalize())?;
        table.end_part(dir, entry)?;
        start += len;
    }
    let (records, deleted, rows) = table.counts();
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
    id: std::borrow::Cow<'a, str>,
}

/// Marks an ordinal without a vector row in [`WriterDocs::rows`].
const NO_ROW: u32 = u32::MAX;

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
/// what it holds per document matters more than for a reader. Committed records stay on disk,
/// in the docs file's parts, and are read back when asked for (a positioned read of one line
/// to confirm an id, a sequential read for a walk over all); the writer keeps per document an
/// offset, its row, a deletion flag and a hash of its id (about 40 bytes). Records added since
/// the last commit are kept as the lines that will be written.
#[derive(Debug)]
pub(crate) struct WriterDocs {
    dir: PathBuf,
    parts: Vec<Part>,
    /// Bytes and records in `parts`.
    committed_len: u64,
    committed: usize,
    /// Lines of the records added since the last commit; they start at `committed_len` in the
    /// offsets of `starts`.
    pending: Vec<u8>,
    /// Where each ordinal's line starts, in the parts and then `pending` read back to back;
    /// it ends where the next starts.
    starts: Vec<u64>,
    /// Each ordinal's vector row, or [`NO_ROW`].
    rows: Vec<u32>,
    deleted: Vec<bool>,
    deleted_count: usize,
    /// The lowest committed ordinal whose line changed since the last commit (a deletion, or
    /// new rows after compaction): its part and those after it are rewritten.
    changed_from: Option<usize>,
    /// Rows were renumbered: lines are written with the rows of `rows`.
    renumbered: bool,
    /// A 64-bit hash of each live id -> its ordinal; an id whose hash another live id holds
    /// goes to `collisions` instead.
    by_hash: HashMap<u64, u32>,
    collisions: HashMap<String, u32>,
    /// [`id_hash`]; another function in tests, to force collisions.
    hash: fn(&str) -> u64,
    /// Vector row -> document ordinal.
    pub row_to_ord: Vec<u32>,
}

fn id_hash(id: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // Fixed keys: the same id hashes alike in every run (the table is rebuilt at open anyway).
    let mut h =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    h.write(id.as_bytes());
    h.finish()
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
        WriterDocs {
            dir: dir.to_path_buf(),
            parts: Vec::new(),
            committed_len: 0,
            committed: 0,
            pending: Vec::new(),
            starts: Vec::new(),
            rows: Vec::new(),
            deleted: Vec::new(),
            deleted_count: 0,
            changed_from: None,
            renumbered: false,
            by_hash: HashMap::new(),
            collisions: HashMap::new(),
            hash: id_hash,
            row_to_ord: Vec::new(),
        }
    }

    /// Reads and checks the docs parts named by `manifest`, as [`DocTable::load`] does,
    /// keeping of each record what the writer needs.
    pub(crate) fn load(dir: &Path, manifest: &Manifest) -> Result<WriterDocs> {
        let mut docs = WriterDocs::new(dir);
        load_into(dir, manifest, &mut docs)?;
        docs.committed = docs.len();
        Ok(docs)
    }

    /// Number of records, tombstones included (the next ordinal).
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// Number of live documents.
    pub(crate) fn live(&self) -> usize {
        self.len() - self.deleted_count
    }

    /// Number of tombstones.
    pub(crate) fn deleted(&self) -> usize {
        self.deleted_count
    }

    pub(crate) fn is_live(&self, ord: u32) -> bool {
        self.deleted.get(ord as usize).is_some_and(|d| !d)
    }

    /// The vector row of `ord`, if it has one.
    pub(crate) fn row(&self, ord: usize) -> Option<u32> {
        self.rows.get(ord).copied().filter(|&r| r != NO_ROW)
    }

    /// The end of everything, committed and pending, in the offsets of `starts`.
    fn end(&self) -> u64 {
        self.committed_len + self.pending.len() as u64
    }

    /// The committed part holding `ord` (`ord < committed`).
    fn part_of(&self, ord: usize) -> usize {
        self.parts.partition_point(|p| p.first_ord <= ord) - 1
    }

    /// Where the line of `ord` starts and ends, in the offsets of `starts`.
    fn span(&self, ord: usize) -> (u64, u64) {
        let start = self.starts[ord];
        let mut end = self
            .starts
            .get(ord + 1)
            .copied()
            .unwrap_or_else(|| self.end());
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
    fn line(&self, ord: usize) -> Result<std::borrow::Cow<'_, [u8]>> {
        let (start, end) = self.span(ord);
        if start >= self.committed_len {
            return Ok(self.pending_slice(start, end).into());
        }
        let part = &self.parts[self.part_of(ord)];
        let mut buf = vec![0u8; (end - start) as usize];
        let path = || self.dir.join(&part.entry.name);
        read_exact_at(&part.file, &mut buf, start - part.start)
            .map_err(|e| IndexError::io(path())(e))?;
        Ok(buf.into())
    }

    /// The id of the live document `ord`.
    fn id_of(&self, ord: usize) -> Result<Option<String>> {
        if !self.is_live(ord as u32) {
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
        if let Some(&ord) = self.by_hash.get(&(self.hash)(id)) {
            if self.id_of(ord as usize)?.is_some_and(|found| found == id) {
                return Ok(Some(ord));
            }
        }
        Ok(self.collisions.get(id).copied())
    }

    /// The live document `ord`.
    pub(crate) fn record(&self, ord: usize) -> Result<Option<StoredDoc>> {
        if !self.is_live(ord as u32) {
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
        })
    }

    /// Appends a record: the new ordinal, its offset, row and id hash.
    fn index(&mut self, record: &DocRecord, start: u64) -> u32 {
        let ord = self.len() as u32;
        self.starts.push(start);
        self.rows.push(record.row.unwrap_or(NO_ROW));
        if record.row.is_some() {
            self.row_to_ord.push(ord);
        }
        self.deleted.push(record.deleted);
        if record.deleted {
            self.deleted_count += 1;
        } else {
            match self.by_hash.entry((self.hash)(&record.id)) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    self.collisions.insert(record.id.clone(), ord);
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(ord);
                }
            }
        }
        ord
    }

    /// Appends a new record; the caller has checked the id is new and assigned `row` in order.
    pub(crate) fn push(&mut self, record: DocRecord) -> Result<u32> {
        let start = self.end();
        let mark = self.pending.len();
        serde_json::to_writer(&mut self.pending, &record).map_err(|e| {
            self.pending.truncate(mark);
            IndexError::InvalidDocument {
                id: record.id.clone(),
                reason: format!("cannot serialise its fields: {e}"),
            }
        })?;
        self.pending.push(b'\n');
        Ok(self.index(&record, start))
    }

    /// Turns the live document `ord` into a tombstone; returns false if it was not live.
    pub(crate) fn delete(&mut self, ord: u32) -> Result<bool> {
        let Some(id) = self.id_of(ord as usize)? else {
            return Ok(false);
        };
        let hash = (self.hash)(&id);
        if self.by_hash.get(&hash) == Some(&ord) {
            self.by_hash.remove(&hash);
        } else {
            self.collisions.remove(&id);
        }
        let ord = ord as usize;
        self.deleted[ord] = true;
        self.deleted_count += 1;
        if ord < self.committed {
            self.changed_from = Some(self.changed_from.map_or(ord, |c| c.min(ord)));
        }
        // A pending record's line stays in `pending` unread; the commit writes a tombstone.
        Ok(true)
    }

    /// Ids and fields of the live documents, in ordinal order, read sequentially.
    pub(crate) fn live_records(&self) -> impl Iterator<Item = Result<StoredDoc>> + '_ {
        let mut lines = Lines::new(self, 0);
        (0..self.len()).filter_map(move |ord| {
            let line = match lines.next_line(ord) {
                Ok(line) => line,
                Err(e) => return Some(Err(e)),
            };
            if !self.is_live(ord as u32) {
                return None;
            }
            Some(self.stored_doc(ord, line))
        })
    }

    /// Gives every live document with a row a new row, in ordinal order, and drops the rows of
    /// tombstones (compaction). Returns how many rows were dropped.
    pub(crate) fn renumber_rows(&mut self) -> usize {
        let mut dropped = 0;
        self.row_to_ord.clear();
        for ord in 0..self.rows.len() {
            if self.rows[ord] == NO_ROW {
                continue;
            }
            if !self.deleted[ord] {
                self.rows[ord] = self.row_to_ord.len() as u32;
                self.row_to_ord.push(ord as u32);
            } else {
                self.rows[ord] = NO_ROW;
                dropped += 1;
            }
        }
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
                let row = self.row(ord);
                let rewritten = if self.deleted[ord] {
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
            for (slot, at) in self.starts[first_ord..].iter_mut().zip(&staged.starts) {
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

    fn open_part(&mut self, entry: FileEntry, start: u64, first_ord: usize) -> Result<()> {
        let path = self.dir.join(&entry.name);
        let file = File::open(&path).map_err(IndexError::io(&path))?;
        self.parts.push(Part {
            entry,
            file,
            start,
            first_ord,
        });
        Ok(())
    }
}

impl Records for WriterDocs {
    fn contains_live(&self, id: &str) -> bool {
        // Lines read back at load are checked by the load itself; a read error here would
        // surface again at the CRC check of the part.
        self.ord_of(id).ok().flatten().is_some()
    }
    fn push_record(&mut self, record: DocRecord, start: u64) -> Result<()> {
        self.index(&record, start);
        Ok(())
    }
    fn end_part(&mut self, _dir: &Path, entry: &FileEntry) -> Result<()> {
        // `committed` and `committed_len` count the parts read before this one.
        self.open_part(entry.clone(), self.committed_len, self.committed)?;
        self.committed_len += entry.len;
        self.committed = self.len();
        Ok(())
    }
    fn counts(&self) -> (usize, usize, usize) {
        (self.len(), self.deleted_count, self.row_to_ord.len())
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
        manifest.deleted_count = docs.deleted() as u64;
        manifest.vector_count = docs.row_to_ord.len() as u64;
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
        assert_eq!(table.records.len(), expected.len());
        for (ord, r) in expected.iter().enumerate() {
            match r {
                Some(r) => assert_eq!(&table.records[ord], r),
                None => assert!(table.records[ord].deleted),
            }
        }
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
    fn commits_deletions_and_renumbering(hash: fn(&str) -> u64) {
        let dir = tempfile::tempdir().unwrap();
        let mut docs = WriterDocs {
            hash,
            ..WriterDocs::new(dir.path())
        };
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
        assert!(table
            .records
            .iter()
            .filter(|r| r.deleted)
            .all(|r| r.row.is_none()));
    }

    #[test]
    fn records_round_trip_through_commits_of_parts() {
        commits_deletions_and_renumbering(id_hash);
    }

    #[test]
    fn ids_whose_hashes_collide_are_still_told_apart() {
        commits_deletions_and_renumbering(|_| 7);
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
}
