//! Per-document stored records: id, metadata fields, and which vector row (if any) belongs to
//! the document. The line number is the document ordinal, so the file needs no separate
//! ordinal column, and the row -> ordinal map is rebuilt from it at open instead of living in a
//! second file that could disagree with it.
//!
//! JSON lines keep the file readable with standard tools; the whole file is read in one call
//! and parsed line by line, which for 10k documents takes milliseconds.
//!
//! A deleted document leaves a tombstone line (`{"id":"","deleted":true}`, keeping its vector
//! row until [`compact`](crate::IndexWriter::compact)) so that ordinals never move: the tantivy
//! index and the graph refer to documents by ordinal, and renumbering them would mean
//! rebuilding the text index, whose text is not stored. Tombstones keep no id and no fields.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};
use crate::fsio;
use crate::manifest::{FileEntry, Manifest};

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
    fn push_record(&mut self, record: DocRecord) -> Result<()>;
    /// (records, tombstones, vector rows)
    fn counts(&self) -> (usize, usize, usize);
}

impl Records for DocTable {
    fn contains_live(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }
    fn push_record(&mut self, record: DocRecord) -> Result<()> {
        self.push(record);
        Ok(())
    }
    fn counts(&self) -> (usize, usize, usize) {
        (self.records.len(), self.deleted, self.row_to_ord.len())
    }
}

/// Reads the docs file named by `manifest` into `table`, checking each record (rows in
/// order, tombstones empty, ids unique) and the counts against the manifest.
fn load_into(dir: &Path, manifest: &Manifest, table: &mut impl Records) -> Result<()> {
    let Some(entry) = &manifest.files.docs else {
        return Ok(());
    };
    let path = dir.join(&entry.name);
    let bytes = fsio::read_verified(dir, entry)?;
    for (line_no, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let record: DocRecord = serde_json::from_slice(line)
            .map_err(|e| IndexError::corrupt(&path, format!("line {}: {e}", line_no + 1)))?;
        let rows = table.counts().2;
        if let Some(row) = record.row {
            if row as usize != rows {
                return Err(IndexError::corrupt(
                    &path,
                    format!(
                        "line {}: vector row {row} out of order (expected {rows})",
                        line_no + 1,
                    ),
                ));
            }
        }
        if record.deleted && (!record.id.is_empty() || !record.fields.is_empty()) {
            return Err(IndexError::corrupt(
                &path,
                format!("line {}: a tombstone keeps an id or fields", line_no + 1),
            ));
        }
        if !record.deleted && table.contains_live(&record.id) {
            return Err(IndexError::corrupt(
                &path,
                format!("line {}: duplicate id `{}`", line_no + 1, record.id),
            ));
        }
        table.push_record(record)?;
    }
    let (records, deleted, rows) = table.counts();
    if records as u64 != manifest.doc_count
        || rows as u64 != manifest.vector_count
        || deleted as u64 != manifest.deleted_count
    {
        return Err(IndexError::corrupt(
            &path,
            format!(
                "holds {records} records ({deleted} deleted) with {rows} vectors, the manifest \
                 says {} ({}) and {}",
                manifest.doc_count, manifest.deleted_count, manifest.vector_count
            ),
        ));
    }
    Ok(())
}

/// A record's id and fields, without its row: what the writer keeps of a live document.
#[derive(Serialize)]
struct StoredRef<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    fields: &'a BTreeMap<String, String>,
}

/// A record's id and fields, read back from the writer's buffer.
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

/// The writer's document table. An index writer lives as long as an archive is indexed, so
/// what it holds per document matters more than for a reader: each live record is kept as its
/// JSON (id and fields, about 250 bytes for an image `cxr index` stores) in one buffer, with an
/// offset, its row and a hash of its id (about 20 bytes), instead of a struct of strings and a
/// map (about 2 KiB). Fields are parsed again when asked for, which the writer's callers do
/// once per run, not per query.
#[derive(Debug)]
pub(crate) struct WriterDocs {
    /// The records' JSON (tombstones: nothing), back to back.
    buffer: Vec<u8>,
    /// Where each ordinal's JSON starts in `buffer`; it ends where the next starts.
    starts: Vec<u64>,
    /// Each ordinal's vector row, or [`NO_ROW`].
    rows: Vec<u32>,
    deleted: Vec<bool>,
    deleted_count: usize,
    /// A 64-bit hash of each live id -> its ordinal; an id whose hash another live id holds
    /// goes to `collisions` instead.
    by_hash: HashMap<u64, u32>,
    collisions: HashMap<String, u32>,
    /// [`id_hash`]; another function in tests, to force collisions.
    hash: fn(&str) -> u64,
    /// Vector row -> document ordinal.
    pub row_to_ord: Vec<u32>,
}

impl Default for WriterDocs {
    fn default() -> Self {
        WriterDocs {
            buffer: Vec::new(),
            starts: Vec::new(),
            rows: Vec::new(),
            deleted: Vec::new(),
            deleted_count: 0,
            by_hash: HashMap::new(),
            collisions: HashMap::new(),
            hash: id_hash,
            row_to_ord: Vec::new(),
        }
    }
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

impl WriterDocs {
    /// Reads and checks the docs file named by `manifest` (empty if there is none), as
    /// [`DocTable::load`] does.
    pub(crate) fn load(dir: &Path, manifest: &Manifest) -> Result<WriterDocs> {
        let mut docs = WriterDocs::default();
        load_into(dir, manifest, &mut docs)?;
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

    fn json(&self, ord: usize) -> &[u8] {
        let start = self.starts[ord] as usize;
        let end = self
            .starts
            .get(ord + 1)
            .map_or(self.buffer.len(), |&e| e as usize);
        &self.buffer[start..end]
    }

    /// The id of the live document `ord`.
    fn id_of(&self, ord: usize) -> Option<std::borrow::Cow<'_, str>> {
        if !self.is_live(ord as u32) {
            return None;
        }
        serde_json::from_slice::<StoredId>(self.json(ord))
            .ok()
            .map(|s| s.id)
    }

    /// The ordinal of the live document with this id.
    pub(crate) fn ord_of(&self, id: &str) -> Option<u32> {
        if let Some(&ord) = self.by_hash.get(&(self.hash)(id)) {
            if self.id_of(ord as usize).is_some_and(|found| found == id) {
                return Some(ord);
            }
        }
        self.collisions.get(id).copied()
    }

    /// Id and fields of the live document `ord`.
    pub(crate) fn record(&self, ord: usize) -> Option<(String, BTreeMap<String, String>)> {
        if !self.is_live(ord as u32) {
            return None;
        }
        serde_json::from_slice::<Stored>(self.json(ord))
            .ok()
            .map(|s| (s.id, s.fields))
    }

    /// Appends a record; the caller has checked the id is new and assigned `row` in order.
    pub(crate) fn push(&mut self, record: DocRecord) -> Result<u32> {
        let ord = self.len() as u32;
        self.starts.push(self.buffer.len() as u64);
        self.rows.push(record.row.unwrap_or(NO_ROW));
        if record.row.is_some() {
            self.row_to_ord.push(ord);
        }
        self.deleted.push(record.deleted);
        if record.deleted {
            self.deleted_count += 1;
            return Ok(ord);
        }
        let stored = StoredRef {
            id: &record.id,
            fields: &record.fields,
        };
        serde_json::to_writer(&mut self.buffer, &stored).map_err(|e| {
            IndexError::InvalidDocument {
                id: record.id.clone(),
                reason: format!("cannot serialise its fields: {e}"),
            }
        })?;
        let hash = (self.hash)(&record.id);
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collisions.insert(record.id, ord);
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(ord);
            }
        }
        Ok(ord)
    }

    /// Turns the live document `ord` into a tombstone; returns false if it was not live.
    pub(crate) fn delete(&mut self, ord: u32) -> bool {
        let Some(id) = self.id_of(ord as usize).map(|id| id.into_owned()) else {
            return false;
        };
        let hash = (self.hash)(&id);
        if self.by_hash.get(&hash) == Some(&ord) {
            self.by_hash.remove(&hash);
        } else {
            self.collisions.remove(&id);
        }
        self.deleted[ord as usize] = true;
        self.deleted_count += 1;
        // A tombstone keeps nothing of the document; its JSON stays in the buffer, unread,
        // until the writer is reopened.
        true
    }

    /// Ids and fields of the live documents, in ordinal order.
    pub(crate) fn live_records(
        &self,
    ) -> impl Iterator<Item = (String, BTreeMap<String, String>)> + '_ {
        (0..self.len()).filter_map(|ord| self.record(ord))
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
        dropped
    }

    /// Writes all records as generation file `name`, in the format [`DocTable::load`] reads.
    pub(crate) fn write(&self, dir: &Path, name: &str) -> Result<FileEntry> {
        fsio::write_synced(dir, name, |out: &mut dyn Write| {
            for ord in 0..self.len() {
                let row = self.row(ord);
                if self.deleted[ord] {
                    serde_json::to_writer(&mut *out, &DocRecord::tombstone(row))?;
                } else {
                    // `{"id":...,"fields":{...}}` + `,"row":N` before the closing brace: the
                    // field order `DocRecord` serialises in.
                    let json = self.json(ord);
                    match (row, json.split_last()) {
                        (Some(row), Some((b'}', body))) => {
                            out.write_all(body)?;
                            write!(out, ",\"row\":{row}}}")?;
                        }
                        _ => out.write_all(json)?,
                    }
                }
                out.write_all(b"\n")?;
            }
            Ok(())
        })
    }
}

impl Records for WriterDocs {
    fn contains_live(&self, id: &str) -> bool {
        self.ord_of(id).is_some()
    }
    fn push_record(&mut self, record: DocRecord) -> Result<()> {
        self.push(record).map(|_| ())
    }
    fn counts(&self) -> (usize, usize, usize) {
        (self.len(), self.deleted_count, self.row_to_ord.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// Adds, finds, deletes and writes records, and reads the file back as a reader does.
    fn round_trip(mut docs: WriterDocs) {
        let ids = ["a", "b \"quoted\" \\ é", "c", "d", "e"];
        for (i, id) in ids.iter().enumerate() {
            let row = (i % 2 == 0).then_some(docs.row_to_ord.len() as u32);
            docs.push(record(id, row, &format!("img/{i}.png"))).unwrap();
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(docs.ord_of(id), Some(i as u32), "{id}");
        }
        assert_eq!(docs.ord_of("z"), None);
        assert!(docs.delete(2));
        assert!(!docs.delete(2));
        assert_eq!(docs.ord_of("c"), None);
        assert_eq!(docs.ord_of("d"), Some(3));
        // The id can come back, as a new document.
        docs.push(record("c", None, "")).unwrap();
        assert_eq!(docs.ord_of("c"), Some(5));
        let (id, fields) = docs.record(1).unwrap();
        assert_eq!(id, ids[1]);
        assert_eq!(fields["path"], "img/1.png");
        assert!(docs.record(2).is_none());
        assert_eq!(docs.live(), 5);
        assert_eq!(docs.deleted(), 1);

        let dir = tempfile::tempdir().unwrap();
        let entry = docs.write(dir.path(), "docs-1.jsonl").unwrap();
        let mut manifest = Manifest::new(
            crate::IndexSpec {
                dim: 2,
                model_fingerprint: "fp".into(),
                model_name: "m".into(),
            },
            Default::default(),
            Default::default(),
            1,
        );
        manifest.doc_count = 6;
        manifest.deleted_count = 1;
        manifest.vector_count = 3;
        manifest.files.docs = Some(entry);
        let table = DocTable::load(dir.path(), &manifest).unwrap();
        assert_eq!(table.records[2], DocRecord::tombstone(Some(1)));
        assert_eq!(table.records[4], record("e", Some(2), "img/4.png"));
        assert_eq!(table.records[1], record(ids[1], None, "img/1.png"));
        assert_eq!(table.records[5], record("c", None, ""));
        assert_eq!(table.row_to_ord, [0, 2, 4]);
        let reloaded = WriterDocs::load(dir.path(), &manifest).unwrap();
        assert_eq!(reloaded.ord_of("e"), Some(4));
        assert_eq!(reloaded.row(4), Some(2));
    }

    #[test]
    fn records_round_trip_through_the_writers_compact_table() {
        round_trip(WriterDocs::default());
    }

    #[test]
    fn ids_whose_hashes_collide_are_still_told_apart() {
        round_trip(WriterDocs {
            hash: |_| 7,
            ..WriterDocs::default()
        });
    }
}
