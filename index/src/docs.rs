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

    /// Turns the live document `ord` into a tombstone; returns false if it was not live.
    pub(crate) fn delete(&mut self, ord: u32) -> bool {
        let Some(record) = self.records.get_mut(ord as usize) else {
            return false;
        };
        if record.deleted {
            return false;
        }
        self.by_id.remove(&record.id);
        *record = DocRecord::tombstone(record.row);
        self.deleted += 1;
        true
    }

    /// True when `ord` is a live document.
    pub(crate) fn is_live(&self, ord: u32) -> bool {
        self.records.get(ord as usize).is_some_and(|r| !r.deleted)
    }

    /// Number of live documents.
    pub(crate) fn live(&self) -> usize {
        self.records.len() - self.deleted
    }
    /// Writes all records as generation file `name`.
    pub(crate) fn write(&self, dir: &Path, name: &str) -> Result<FileEntry> {
        fsio::write_synced(dir, name, |out: &mut dyn Write| {
            for record in &self.records {
                serde_json::to_writer(&mut *out, record)?;
                out.write_all(b"\n")?;
            }
            Ok(())
        })
    }

    /// Reads and checks the docs file named by `manifest` (empty table if there is none).
    pub(crate) fn load(dir: &Path, manifest: &Manifest) -> Result<DocTable> {
        let Some(entry) = &manifest.files.docs else {
            return Ok(DocTable::default());
        };
        let path = dir.join(&entry.name);
        let bytes = fsio::read_verified(dir, entry)?;
        let mut table = DocTable {
            records: Vec::with_capacity(manifest.doc_count as usize),
            by_id: HashMap::with_capacity(manifest.doc_count as usize),
            deleted: 0,
            row_to_ord: Vec::with_capacity(manifest.vector_count as usize),
        };
        for (line_no, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let record: DocRecord = serde_json::from_slice(line)
                .map_err(|e| IndexError::corrupt(&path, format!("line {}: {e}", line_no + 1)))?;
            if let Some(row) = record.row {
                if row as usize != table.row_to_ord.len() {
                    return Err(IndexError::corrupt(
                        &path,
                        format!(
                            "line {}: vector row {row} out of order (expected {})",
                            line_no + 1,
                            table.row_to_ord.len()
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
            if !record.deleted && table.by_id.contains_key(&record.id) {
                return Err(IndexError::corrupt(
                    &path,
                    format!("line {}: duplicate id `{}`", line_no + 1, record.id),
                ));
            }
            table.push(record);
        }
        if table.records.len() as u64 != manifest.doc_count
            || table.row_to_ord.len() as u64 != manifest.vector_count
            || table.deleted as u64 != manifest.deleted_count
        {
            return Err(IndexError::corrupt(
                &path,
                format!(
                    "holds {} records ({} deleted) with {} vectors, the manifest says {} ({}) and {}",
                    table.records.len(),
                    table.deleted,
                    table.row_to_ord.len(),
                    manifest.doc_count,
                    manifest.deleted_count,
                    manifest.vector_count
                ),
            ));
        }
        Ok(table)
    }
}
