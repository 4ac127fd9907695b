//! `check`: verifies an index folder and names what is wrong with it (`cxr check IDX`).
//!
//! Unlike [`Index::open`](crate::Index::open), which stops at the first fault, `check` runs
//! every check it can and reports each as a [`CheckItem`]; it never panics on a damaged index
//! (every item runs inside `catch_unwind`, hnsw_rs's reload included), and it never writes.
//!
//! The items, in order (their names are the `CheckItem::*` constants):
//!
//! 1. `manifest`: `manifest.json` parses, its format version is readable by this build, and
//!    it is consistent (dim > 0, counts and files agree). Without a readable manifest only
//!    this item and `errors` are reported.
//! 2. `files`: every file the manifest names exists with the recorded length and CRC-32.
//!    Leftover generation files the manifest does not name are mentioned, not failed.
//! 3. `docs`: the docs file holds exactly `doc_count` JSON records with unique, non-empty ids;
//!    vector rows are `0..vector_count`, each used once, in ordinal order.
//! 4. `vectors`: the vector files (the sealed segments' and the active segment's) hold
//!    `vector_count * dim` components in all (f32 or f16, as the manifest says); every vector
//!    is finite with unit norm (within 1e-3, which f16 rounding, at most 2^-11 relative, stays
//!    inside).
//! 5. `text`: the tantivy index opens, its own checksums hold, and its live documents with
//!    `ord < doc_count` carry each ordinal exactly once. Live documents with a larger `ord`
//!    (left by a commit interrupted between tantivy's commit and the manifest's) are
//!    mentioned, not failed: readers skip them and the next writer deletes them.
//! 6. `hnsw`: the active segment's graph dump reloads; it holds the active segment's rows as
//!    points of dimension `dim` whose data ids are the ordinals of the documents with those
//!    rows, each once, with the vectors of the vector file; and every point is reachable from
//!    the entry point, the way a search walks the graph (see below).
//! 7. `flat_graph`: the active segment's flat graph, which readers search, parses and equals
//!    the dump re-encoded.
//! 8. `segments`: each sealed segment's flat graph parses, its points are the segment's rows
//!    with the docs file's ordinals, and every point is reachable (computed on the flat
//!    arrays, as below).
//! 9. `errors`: `errors.jsonl`, the failure log, parses; informational (its count).
//!
//! # Reachability
//!
//! hnsw_rs's search starts at the entry point, descends greedily through the upper layers to a
//! pivot, and then explores layer 0 from that pivot. A point can only ever be returned if it
//! is reachable on layer 0 from some point the descent can reach through the upper layers'
//! neighbour lists. `check` computes that set (a superset of what any single search sees) and
//! fails the `hnsw` item for every point outside it: those documents can never be found by
//! vector search (exact search still finds them). It also reports, as a detail, how many
//! points are not reachable on layer 0 from the entry point itself. The entry point is read
//! from the dump's trailer (hnsw_rs has no accessor for it); if that fails, every point of
//! the top layer is used as a start.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use serde::ser::SerializeStruct;
use serde::Serialize;

use crate::docs::DocRecord;
use crate::docs::DocTable;
use crate::error::{IndexError, Result};
use crate::flat::FlatGraph;
use crate::graph::{dump_entry_point, panic_message, GraphSnapshot, HnswGraph};
use crate::layout;
use crate::manifest::{FileEntry, Manifest};
use crate::text;
use crate::writer::flat_words;
use crate::writer::Failure;

/// Largest accepted deviation of a stored vector's L2 norm from 1.
const NORM_TOLERANCE: f64 = 1e-3;
/// How many data ids (or ordinals) a detail lists at most.
const LIST_MAX: usize = 10;

/// One verified property of an index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckItem {
    /// Which check (one of the `CheckItem::*` constants).
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found: on failure the fault, naming the file and expected vs found values.
    pub detail: String,
}

impl CheckItem {
    /// `manifest.json` parses, has a readable format version and a sane spec.
    pub const MANIFEST: &'static str = "manifest";
    /// The files the manifest names exist with the recorded length and CRC-32.
    pub const FILES: &'static str = "files";
    /// The docs file matches the manifest (count, unique ids, vector rows).
    pub const DOCS: &'static str = "docs";
    /// The vector file has the right length and unit-norm, finite vectors.
    pub const VECTORS: &'static str = "vectors";
    /// The tantivy index opens and holds each committed ordinal once.
    pub const TEXT: &'static str = "text";
    /// The HNSW graph reloads, matches the vectors, and reaches every point.
    pub const HNSW: &'static str = "hnsw";
    /// The flat copy of the graph that readers search parses and equals the hnsw_rs dump.
    pub const FLAT_GRAPH: &'static str = "flat_graph";
    /// The sealed segments' graphs parse, match the documents and reach every point.
    pub const SEGMENTS: &'static str = "segments";
    /// The failure log parses (informational).
    pub const ERRORS: &'static str = "errors";

    fn new(name: &str, ok: bool, detail: impl Into<String>) -> CheckItem {
        CheckItem {
            name: name.to_string(),
            ok,
            detail: detail.into(),
        }
    }

    fn pass(name: &str, detail: impl Into<String>) -> CheckItem {
        CheckItem::new(name, true, detail)
    }

    fn fail(name: &str, detail: impl Into<String>) -> CheckItem {
        CheckItem::new(name, false, detail)
    }

    /// Passes with `info` when `faults` is empty, else fails with the faults.
    fn from_faults(name: &str, faults: Vec<String>, info: impl Into<String>) -> CheckItem {
        if faults.is_empty() {
            CheckItem::pass(name, info)
        } else {
            CheckItem::fail(name, faults.join("; "))
        }
    }
}

/// The result of [`check`]: one item per check, in the order they ran.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// The checks.
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    /// True when every item passed.
    pub fn ok(&self) -> bool {
        self.items.iter().all(|item| item.ok)
    }

    /// The item called `name`, if it ran.
    pub fn item(&self, name: &str) -> Option<&CheckItem> {
        self.items.iter().find(|item| item.name == name)
    }

    /// The items that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckItem> {
        self.items.iter().filter(|item| !item.ok)
    }
}

/// Serialised as `{"ok": bool, "items": [{"name", "ok", "detail"}, ...]}`.
impl Serialize for CheckReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("CheckReport", 2)?;
        s.serialize_field("ok", &self.ok())?;
        s.serialize_field("items", &self.items)?;
        s.end()
    }
}

/// One line per item: `ok   name: detail` or `FAIL name: detail`.
impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            let status = if item.ok { "ok  " } else { "FAIL" };
            writeln!(f, "{status} {}: {}", item.name, item.detail)?;
        }
        Ok(())
    }
}

/// Verifies the index in `dir` and reports every fault found (see the module docs for what
/// is checked). Reads only; safe to run next to readers and a writer (a commit racing the
/// check may make it report files of the replaced generation as missing: run it again).
///
/// Errors only when `dir` holds no `manifest.json` ([`IndexError::NotAnIndex`]) or it cannot
/// be read at all; a manifest that is corrupt or of an unsupported format version is a
/// failed `manifest` item.
pub fn check(dir: impl AsRef<Path>) -> Result<CheckReport> {
    let dir = dir.as_ref();
    let mut report = CheckReport::default();
    let manifest = match Manifest::read(dir) {
        Ok(manifest) => manifest,
        Err(e @ (IndexError::NotAnIndex { .. } | IndexError::Io { .. })) => return Err(e),
        Err(e) => {
            report
                .items
                .push(CheckItem::fail(CheckItem::MANIFEST, e.to_string()));
            report
                .items
                .push(guarded(CheckItem::ERRORS, || check_errors(dir)));
            return Ok(report);
        }
    };
    report.items.push(describe_manifest(&manifest));

    let mut bad_files = BTreeMap::new();
    report.items.push(guarded(CheckItem::FILES, || {
        check_files(dir, &manifest, &mut bad_files)
    }));
    let mut rows: Option<Vec<u32>> = None;
    let mut deleted: HashSet<u32> = HashSet::new();
    report.items.push(guarded(CheckItem::DOCS, || {
        check_docs(dir, &manifest, &mut rows, &mut deleted)
    }));
    let mut vectors: Option<Vec<f32>> = None;
    report.items.push(guarded(CheckItem::VECTORS, || {
        check_vectors(dir, &manifest, rows.as_deref(), &mut vectors)
    }));
    report.items.push(guarded(CheckItem::TEXT, || {
        check_text(dir, &manifest, &deleted)
    }));
    // The dump and the active flat graph cover the rows after the sealed segments'.
    let sealed = manifest.sealed_rows() as usize;
    let dim = manifest.spec.dim;
    report.items.push(guarded(CheckItem::HNSW, || {
        check_hnsw(
            dir,
            &manifest,
            &bad_files,
            rows.as_deref().and_then(|r| r.get(sealed..)),
            vectors.as_deref().and_then(|v| v.get(sealed * dim..)),
        )
    }));
    report.items.push(guarded(CheckItem::FLAT_GRAPH, || {
        check_flat_graph(dir, &manifest, &bad_files)
    }));
    report.items.push(guarded(CheckItem::SEGMENTS, || {
        check_segments(dir, &manifest, &bad_files, rows.as_deref())
    }));
    report
        .items
        .push(guarded(CheckItem::ERRORS, || check_errors(dir)));
    Ok(report)
}

/// Runs one check; a panic inside it becomes a failed item instead of unwinding further.
fn guarded(name: &str, f: impl FnOnce() -> CheckItem) -> CheckItem {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        CheckItem::fail(
            name,
            format!("the check panicked: {}", panic_message(&*payload)),
        )
    })
}

/// Up to [`LIST_MAX`] values, comma-separated, with "..." when there are more.
fn list<T: fmt::Display>(values: &[T]) -> String {
    let mut out: Vec<String> = values
        .iter()
        .take(LIST_MAX)
        .map(ToString::to_string)
        .collect();
    if values.len() > LIST_MAX {
        out.push("...".into());
    }
    out.join(", ")
}

fn describe_manifest(m: &Manifest) -> CheckItem {
    CheckItem::pass(
        CheckItem::MANIFEST,
        format!(
            "format version {}, generation {}, {} documents ({} deleted), {} vectors of \
             dimension {}, model `{}` ({}), HNSW M={} ef_construction={}",
            m.format_version,
            m.generation,
            m.doc_count - m.deleted_count.min(m.doc_count),
            m.deleted_count,
            m.vector_count,
            m.spec.dim,
            m.spec.model_name,
            m.spec.model_fingerprint,
            m.hnsw.max_nb_connection,
            m.hnsw.ef_construction,
        ),
    )
}

/// Length and CRC-32 of a file, streamed. `Ok(None)` when the file does not exist.
fn measure(path: &Path) -> std::io::Result<Option<(u64, u32)>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut hasher = crc32fast::Hasher::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok(Some((len, hasher.finalize())))
}

/// Checks every named file; `bad` gets (file name -> fault) for the others' use.
fn check_files(dir: &Path, manifest: &Manifest, bad: &mut BTreeMap<String, String>) -> CheckItem {
    let files = &manifest.files;
    let mut entries: Vec<&FileEntry> = Vec::new();
    entries.extend(manifest.docs_files());
    for segment in &files.sealed {
        entries.push(&segment.vectors);
        entries.push(&segment.flat_graph);
    }
    entries.extend(files.vectors.iter());
    if let Some(hnsw) = &files.hnsw {
        entries.push(&hnsw.graph);
        entries.push(&hnsw.data);
    }
    entries.extend(files.flat_graph.iter());
    let mut total = 0u64;
    for entry in &entries {
        let fault = match measure(&dir.join(&entry.name)) {
            Err(e) => Some(format!("cannot be read: {e}")),
            Ok(None) => Some("is missing".to_string()),
            Ok(Some((len, _))) if len != entry.len => Some(format!(
                "length is {len} bytes, the manifest says {}",
                entry.len
            )),
            Ok(Some((_, crc))) if crc != entry.crc32 => Some(format!(
                "CRC-32 is {crc:08x}, the manifest says {:08x}",
                entry.crc32
            )),
            Ok(Some((len, _))) => {
                total += len;
                None
            }
        };
        if let Some(fault) = fault {
            bad.insert(entry.name.clone(), fault);
        }
    }
    let faults: Vec<String> = bad
        .iter()
        .map(|(name, fault)| format!("`{name}` {fault}"))
        .collect();

    let named: HashSet<String> = manifest.referenced_files().into_iter().collect();
    let mut leftovers: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| {
                    (layout::is_generation_file(name) && !named.contains(name))
                        || name == layout::MANIFEST_TMP
                })
                .collect()
        })
        .unwrap_or_default();
    leftovers.sort();
    let mut info = format!(
        "{} files, {total} bytes: lengths and CRC-32s match the manifest",
        entries.len()
    );
    if !leftovers.is_empty() {
        info.push_str(&format!(
            "; {} leftover files the manifest does not name (removed by the next writer): {}",
            leftovers.len(),
            list(&leftovers)
        ));
    }
    CheckItem::from_faults(CheckItem::FILES, faults, info)
}

/// Checks the docs file; on success `rows_out` gets the row -> ordinal map. `deleted` gets
/// the ordinals of tombstones.
fn check_docs(
    dir: &Path,
    manifest: &Manifest,
    rows_out: &mut Option<Vec<u32>>,
    deleted: &mut HashSet<u32>,
) -> CheckItem {
    let parts: Vec<&FileEntry> = manifest.docs_files().collect();
    if parts.is_empty() {
        *rows_out = Some(Vec::new());
        return CheckItem::pass(CheckItem::DOCS, "no documents");
    }
    let mut faults = Vec::new();
    // The parts read back to back; each must end with a newline.
    let mut bytes = Vec::new();
    for entry in &parts {
        let part = match std::fs::read(dir.join(&entry.name)) {
            Ok(part) => part,
            Err(e) => return CheckItem::fail(CheckItem::DOCS, format!("`{}`: {e}", entry.name)),
        };
        if !part.is_empty() && !part.ends_with(b"\n") {
            faults.push(format!(
                "`{}` does not end with a newline (truncated?)",
                entry.name
            ));
        }
        bytes.extend_from_slice(&part);
    }
    let names: Vec<String> = parts.iter().map(|e| format!("`{}`", e.name)).collect();
    let name = names.join(" + ");
    let mut records = 0u64;
    let mut parse_errors: Vec<String> = Vec::new();
    let mut ids: HashSet<String> = HashSet::new();
    let mut duplicates: Vec<String> = Vec::new();
    let mut empty_ids = 0usize;
    let mut tombstones = 0u64;
    let mut kept_by_tombstones = 0u64;
    // ordinal of each row, in the order rows appear
    let mut row_ords: Vec<(u32, u32)> = Vec::new();
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    if !body.is_empty() {
        for (line_no, line) in body.split(|&b| b == b'\n').enumerate() {
            let ord = records as u32;
            records += 1;
            match serde_json::from_slice::<DocRecord>(line) {
                Ok(record) => {
                    if let Some(row) = record.row {
                        row_ords.push((row, ord));
                    }
                    if record.deleted {
                        tombstones += 1;
                        deleted.insert(ord);
                        if !record.id.is_empty() || !record.fields.is_empty() {
                            kept_by_tombstones += 1;
                        }
                    } else {
                        if record.id.is_empty() {
                            empty_ids += 1;
                        }
                        if !ids.insert(record.id.clone()) {
                            duplicates.push(record.id);
                        }
                    }
                }
                Err(e) => parse_errors.push(format!("line {}: {e}", line_no + 1)),
            }
        }
    }
    if records != manifest.doc_count {
        faults.push(format!(
            "{name} holds {records} records, the manifest says {}",
            manifest.doc_count
        ));
    }
    if tombstones != manifest.deleted_count {
        faults.push(format!(
            "{name} holds {tombstones} tombstones of deleted documents, the manifest says {}",
            manifest.deleted_count
        ));
    }
    if kept_by_tombstones > 0 {
        faults.push(format!(
            "{kept_by_tombstones} tombstones still hold an id or fields of the deleted document"
        ));
    }
    if !parse_errors.is_empty() {
        faults.push(format!(
            "{} records are not valid JSON ({})",
            parse_errors.len(),
            list(&parse_errors)
        ));
    }
    if !duplicates.is_empty() {
        faults.push(format!(
            "{} duplicate ids ({})",
            duplicates.len(),
            list(&duplicates)
        ));
    }
    if empty_ids > 0 {
        faults.push(format!("{empty_ids} records have an empty id"));
    }
    // Rows: 0..vector_count, each once, in ordinal order.
    let vector_count = manifest.vector_count;
    if row_ords.len() as u64 != vector_count {
        faults.push(format!(
            "{} records have a vector row, the manifest says {vector_count} vectors",
            row_ords.len()
        ));
    }
    let out_of_range: Vec<String> = row_ords
        .iter()
        .filter(|(row, _)| u64::from(*row) >= vector_count)
        .map(|(row, ord)| format!("ord {ord} -> row {row}"))
        .collect();
    if !out_of_range.is_empty() {
        faults.push(format!(
            "{} rows outside the vector file's 0..{vector_count} ({})",
            out_of_range.len(),
            list(&out_of_range)
        ));
    }
    let mut seen = HashSet::new();
    let repeated: Vec<u32> = row_ords
        .iter()
        .filter(|(row, _)| !seen.insert(*row))
        .map(|(row, _)| *row)
        .collect();
    if !repeated.is_empty() {
        faults.push(format!(
            "{} rows are used by more than one document ({})",
            repeated.len(),
            list(&repeated)
        ));
    }
    if out_of_range.is_empty() && repeated.is_empty() {
        if let Some(i) = row_ords
            .iter()
            .enumerate()
            .position(|(i, (row, _))| *row as usize != i)
        {
            let (row, ord) = row_ords[i];
            faults.push(format!(
                "vector rows are not in ordinal order: ord {ord} has row {row}, expected {i}"
            ));
        }
    }
    if faults.is_empty() {
        *rows_out = Some(row_ords.iter().map(|&(_, ord)| ord).collect());
    }
    CheckItem::from_faults(
        CheckItem::DOCS,
        faults,
        format!(
            "{records} records ({tombstones} deleted) with unique ids; {} vector rows \
             0..{vector_count}, each once",
            row_ords.len()
        ),
    )
}

/// The vector files in row order (sealed segments, then the active one) with their rows.
fn vector_files(manifest: &Manifest) -> Vec<(&FileEntry, u64)> {
    let mut files: Vec<(&FileEntry, u64)> = manifest
        .files
        .sealed
        .iter()
        .map(|s| (&s.vectors, s.rows))
        .collect();
    if let Some(entry) = &manifest.files.vectors {
        files.push((entry, manifest.active_rows()));
    }
    files
}

/// Checks the vector files; `out` gets all rows, in order, when every length is right.
fn check_vectors(
    dir: &Path,
    manifest: &Manifest,
    rows: Option<&[u32]>,
    out: &mut Option<Vec<f32>>,
) -> CheckItem {
    let files = vector_files(manifest);
    if files.is_empty() {
        return CheckItem::pass(CheckItem::VECTORS, "no vectors");
    }
    let dim = manifest.spec.dim;
    let storage = manifest.vector_storage;
    let mut faults = Vec::new();
    let mut data: Vec<f32> = Vec::new();
    let mut lengths_ok = true;
    for (entry, file_rows) in &files {
        let bytes = match std::fs::read(dir.join(&entry.name)) {
            Ok(bytes) => bytes,
            Err(e) => return CheckItem::fail(CheckItem::VECTORS, format!("`{}`: {e}", entry.name)),
        };
        let expected = file_rows * dim as u64 * storage.bytes_per_component() as u64;
        if bytes.len() as u64 != expected {
            lengths_ok = false;
            faults.push(format!(
                "`{}` is {} bytes, {file_rows} vectors of dimension {dim} in {storage} need \
                 {expected}",
                entry.name,
                bytes.len(),
            ));
        }
        // Rows stay aligned with the row numbering even when a file is short or long.
        let mut rows_here = crate::vectors::decode(&bytes, storage);
        rows_here.resize(*file_rows as usize * dim, f32::NAN);
        data.extend_from_slice(&rows_here);
    }
    let mut non_finite = 0usize;
    let mut off_norm = 0usize;
    let mut first: Option<(usize, String)> = None;
    let mut worst = 0f64;
    for (row, v) in data.chunks_exact(dim).enumerate() {
        let fault = if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            non_finite += 1;
            Some(format!("component {i} is {}", v[i]))
        } else {
            let norm = v
                .iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum::<f64>()
                .sqrt();
            worst = worst.max((norm - 1.0).abs());
            ((norm - 1.0).abs() > NORM_TOLERANCE).then(|| {
                off_norm += 1;
                if norm < 1e4 {
                    format!("norm is {norm:.4}")
                } else {
                    format!("norm is {norm:.3e}")
                }
            })
        };
        if let Some(fault) = fault {
            first.get_or_insert((row, fault));
        }
    }
    if let Some((row, fault)) = first.filter(|_| lengths_ok) {
        let ord = rows
            .and_then(|rows| rows.get(row))
            .map(|ord| format!(" (document ordinal {ord})"))
            .unwrap_or_default();
        faults.push(format!(
            "{non_finite} vectors have non-finite components and {off_norm} a norm off 1 by \
             more than {NORM_TOLERANCE}; the first is row {row}{ord}: {fault}"
        ));
    }
    if lengths_ok {
        *out = Some(data);
    }
    let segments = match files.len() {
        1 => String::new(),
        n => format!(" in {n} segments"),
    };
    CheckItem::from_faults(
        CheckItem::VECTORS,
        faults,
        format!(
            "{} vectors of dimension {dim} in {storage}{segments}, all finite with unit norm \
             (largest deviation {worst:.1e})",
            manifest.vector_count
        ),
    )
}

/// Sealed segments: each flat graph parses, and its points are exactly the segment's rows with
/// the ordinals the docs file gives them. Points no walk from the entry point reaches (see
/// [`FlatGraph::unreachable`]) are counted, not faulted: every search scores them exactly.
fn check_segments(
    dir: &Path,
    manifest: &Manifest,
    bad_files: &BTreeMap<String, String>,
    rows: Option<&[u32]>,
) -> CheckItem {
    let name = CheckItem::SEGMENTS;
    let sealed = &manifest.files.sealed;
    if sealed.is_empty() {
        return CheckItem::pass(
            name,
            format!(
                "none sealed: every vector is in the active segment (sealed at {} rows)",
                manifest.segment_rows
            ),
        );
    }
    let mut faults = Vec::new();
    let mut first_row = 0usize;
    let mut points = 0usize;
    let mut orphans = 0usize;
    for (i, segment) in sealed.iter().enumerate() {
        let seg_rows = segment.rows as usize;
        let flat = &segment.flat_graph;
        let start = first_row;
        first_row += seg_rows;
        if let Some(fault) = bad_files.get(&flat.name) {
            faults.push(format!("segment {i}: `{}` {fault}", flat.name));
            continue;
        }
        let graph = match FlatGraph::open(dir, flat, segment.rows, segment.rows) {
            Ok(graph) => graph,
            Err(e) => {
                faults.push(format!("segment {i}: {}", error_chain(&e)));
                continue;
            }
        };
        points += graph.len();
        if let Some(ords) = rows.and_then(|r| r.get(start..start + seg_rows)) {
            let mut seen = vec![false; seg_rows];
            let wrong = graph
                .points()
                .filter(|&(ord, row)| {
                    let row = row as usize;
                    let fresh = row < seg_rows && !std::mem::replace(&mut seen[row], true);
                    !fresh || ords[row] != ord
                })
                .count();
            if wrong > 0 {
                faults.push(format!(
                    "segment {i} (`{}`): {wrong} points name a row used twice or an ordinal \
                     other than the docs file's for that row",
                    flat.name
                ));
            }
        }
        orphans += graph.unreachable().len();
    }
    CheckItem::from_faults(
        name,
        faults,
        format!(
            "{} sealed segments, {points} points: graphs parse and match the docs file's rows; \
             {}",
            sealed.len(),
            reach_note(orphans)
        ),
    )
}

fn check_text(dir: &Path, manifest: &Manifest, deleted: &HashSet<u32>) -> CheckItem {
    let path = dir.join(&manifest.files.text_dir);
    let census = match text::census(&path, manifest.doc_count) {
        Ok(census) => census,
        Err(e) => return CheckItem::fail(CheckItem::TEXT, error_chain(&e)),
    };
    let mut faults = Vec::new();
    if !census.damaged_files.is_empty() {
        faults.push(format!(
            "tantivy checksums fail for {} files ({})",
            census.damaged_files.len(),
            list(&census.damaged_files)
        ));
    }
    let is_deleted = |ord: usize| deleted.contains(&(ord as u32));
    // A live document must be there exactly once; a deleted one at most once (tantivy learns of
    // a deletion after the manifest, see the writer).
    let missing: Vec<usize> = (0..census.per_ord.len())
        .filter(|&ord| census.per_ord[ord] == 0 && !is_deleted(ord))
        .collect();
    let repeated: Vec<usize> = (0..census.per_ord.len())
        .filter(|&ord| census.per_ord[ord] > 1)
        .collect();
    let unpurged = (0..census.per_ord.len())
        .filter(|&ord| census.per_ord[ord] == 1 && is_deleted(ord))
        .count() as u64;
    let live = manifest.doc_count - manifest.deleted_count;
    let committed = census.live_docs - census.beyond - census.without_ord - unpurged;
    if committed != live || !missing.is_empty() {
        faults.push(format!(
            "the text index holds {committed} live documents with ord < {}, the manifest says {live}; \
             {} ordinals missing ({})",
            manifest.doc_count,
            missing.len(),
            list(&missing)
        ));
    }
    if !repeated.is_empty() {
        faults.push(format!(
            "{} ordinals appear more than once ({})",
            repeated.len(),
            list(&repeated)
        ));
    }
    if census.without_ord > 0 {
        faults.push(format!(
            "{} live documents have no ordinal",
            census.without_ord
        ));
    }
    let mut info = format!(
        "{live} documents in {} segments, each ordinal once",
        census.segments
    );
    if unpurged > 0 {
        info.push_str(&format!(
            "; {unpurged} deleted documents not yet dropped by tantivy (readers skip them, the \
             next writer drops them)"
        ));
    }
    if census.beyond > 0 {
        info.push_str(&format!(
            "; warning: {} documents with ord >= {} (left by an interrupted commit; readers \
             skip them, the next writer deletes them)",
            census.beyond, manifest.doc_count
        ));
    }
    CheckItem::from_faults(CheckItem::TEXT, faults, info)
}

/// An error with its sources, `: `-separated (tantivy's messages live in the source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

/// The flat graph is what searches walk: it must parse, and hold exactly the structure of the
/// hnsw_rs dump it was made from (re-encoded here and compared word for word).
fn check_flat_graph(
    dir: &Path,
    manifest: &Manifest,
    bad_files: &BTreeMap<String, String>,
) -> CheckItem {
    let name = CheckItem::FLAT_GRAPH;
    let (Some(hnsw), Some(flat)) = (&manifest.files.hnsw, &manifest.files.flat_graph) else {
        return CheckItem::pass(
            name,
            if manifest.files.hnsw.is_some() {
                "none: written before flat graphs; readers convert the dump at open"
            } else {
                "no vectors, no graph"
            },
        );
    };
    if let Some(fault) = bad_files.get(&flat.name) {
        return CheckItem::fail(name, format!("`{}` {fault}", flat.name));
    }
    let rows = manifest.active_rows();
    let graph = match FlatGraph::open(dir, flat, rows, rows) {
        Ok(graph) => graph,
        Err(e) => return CheckItem::fail(name, error_chain(&e)),
    };
    // Searches only need the flat graph; what it is compared with may be damaged on its own
    // (the `hnsw`, `docs` and `files` items say so).
    let parses = format!(
        "{} points, {} layers, parses",
        graph.len(),
        graph.layer_count()
    );
    let others = [&hnsw.graph, &hnsw.data]
        .into_iter()
        .chain(manifest.docs_files());
    for entry in others {
        if let Some(fault) = bad_files.get(&entry.name) {
            return CheckItem::pass(
                name,
                format!("{parses}; not compared: `{}` {fault}", entry.name),
            );
        }
    }
    let expected = HnswGraph::load(dir, &hnsw.basename).and_then(|loaded| {
        let docs = DocTable::load(dir, manifest)?;
        let entry = dump_entry_point(&dir.join(&hnsw.graph.name));
        let row_of = |ord: usize| docs.ords.row(ord);
        flat_words(&loaded, entry, &row_of, manifest.sealed_rows() as usize)
            .map_err(|e| IndexError::corrupt(dir.join(&hnsw.graph.name), e))
    });
    match expected {
        Err(e) => CheckItem::pass(name, format!("{parses}; not compared: {}", error_chain(&e))),
        Ok(words) if words.as_slice() != graph.words() => CheckItem::fail(
            name,
            format!(
                "`{}` does not match the graph dump `{}`",
                flat.name, hnsw.graph.name
            ),
        ),
        Ok(_) => CheckItem::pass(
            name,
            format!(
                "{} points, {} layers, same as the dump",
                graph.len(),
                graph.layer_count()
            ),
        ),
    }
}

fn check_hnsw(
    dir: &Path,
    manifest: &Manifest,
    bad_files: &BTreeMap<String, String>,
    rows: Option<&[u32]>,
    vectors: Option<&[f32]>,
) -> CheckItem {
    let Some(files) = &manifest.files.hnsw else {
        return CheckItem::pass(CheckItem::HNSW, "no vectors, no graph");
    };
    // A dump that fails its length/CRC check is not handed to hnsw_rs: garbage sizes in it
    // can make the reload allocate without bound, which aborts rather than panics.
    for entry in [&files.graph, &files.data] {
        if let Some(fault) = bad_files.get(&entry.name) {
            return CheckItem::fail(
                CheckItem::HNSW,
                format!("not reloaded: `{}` {fault}", entry.name),
            );
        }
    }
    let graph = match HnswGraph::load(dir, &files.basename) {
        Ok(graph) => graph,
        Err(e) => return CheckItem::fail(CheckItem::HNSW, error_chain(&e)),
    };
    let dim = manifest.spec.dim;
    let vector_count = manifest.active_rows() as usize;
    let mut faults = Vec::new();
    if graph.len() != vector_count || graph.dim() != dim {
        faults.push(format!(
            "`{}` holds {} points of dimension {}, expected {vector_count} of dimension {dim}",
            files.graph.name,
            graph.len(),
            graph.dim()
        ));
    }
    // ordinal -> row, to compare the graph's copy of each vector with the vector file
    // (unless that file is damaged itself: the `files` item already says so)
    let vectors_damaged = manifest
        .files
        .vectors
        .as_ref()
        .is_some_and(|entry| bad_files.contains_key(&entry.name));
    let vectors = vectors.filter(|_| !vectors_damaged);
    let row_of: Option<HashMap<u32, usize>> =
        rows.map(|rows| rows.iter().enumerate().map(|(r, &o)| (o, r)).collect());
    let mut mismatched: Vec<usize> = Vec::new();
    let compared = row_of.is_some() && vectors.is_some();
    let snapshot = graph.snapshot(|id, v| {
        if let (Some(row_of), Some(vectors)) = (&row_of, vectors) {
            let Ok(ord) = u32::try_from(id) else { return };
            if let Some(&row) = row_of.get(&ord) {
                let stored = vectors.get(row * dim..(row + 1) * dim);
                if stored.is_some_and(|s| s != v) {
                    mismatched.push(id);
                }
            }
        }
    });
    let snapshot = match snapshot {
        Ok(snapshot) => snapshot,
        Err(panic) => {
            faults.push(format!("hnsw_rs panicked while walking the graph: {panic}"));
            return CheckItem::fail(CheckItem::HNSW, faults.join("; "));
        }
    };
    if !mismatched.is_empty() {
        mismatched.sort_unstable();
        faults.push(format!(
            "{} points hold a vector different from the vector file (data ids {})",
            mismatched.len(),
            list(&mismatched)
        ));
    }
    if snapshot.dangling > 0 {
        faults.push(format!(
            "{} neighbour references name no stored point",
            snapshot.dangling
        ));
    }
    faults.extend(check_data_ids(manifest, &snapshot, rows));

    let entry = find_entry(&snapshot, dump_entry_point(&dir.join(&files.graph.name)));
    let reach = reachability(&snapshot, &entry.starts);
    let unreachable: Vec<usize> = {
        let mut ids: Vec<usize> = (0..snapshot.points.len())
            .filter(|&i| !reach.searchable[i])
            .map(|i| snapshot.points[i].data_id)
            .collect();
        ids.sort_unstable();
        ids
    };
    let layer0_unreachable = reach.layer0.iter().filter(|&&r| !r).count();
    let layer0_note =
        format!("{layer0_unreachable} not reachable on layer 0 from the entry point itself");
    let reached = if unreachable.is_empty() {
        format!("all reachable from the entry point {}", entry.description)
    } else {
        format!(
            "{} not reachable from the entry point {} (data ids {}), which every search \
             scores exactly",
            unreachable.len(),
            entry.description,
            list(&unreachable)
        )
    };
    CheckItem::from_faults(
        CheckItem::HNSW,
        faults,
        format!(
            "{} points of dimension {dim} on {} layers, data ids match the documents{}; \
             {reached} ({layer0_note})",
            snapshot.points.len(),
            usize::from(snapshot.max_level) + 1,
            if compared {
                ", vectors match the vector file"
            } else {
                " (vectors not compared with the vector file)"
            },
        ),
    )
}

/// What a check says of the points no graph walk reaches.
fn reach_note(orphans: usize) -> String {
    match orphans {
        0 => "every point reachable from its entry point".into(),
        n => format!("{n} points no graph walk reaches, scored exactly by every search"),
    }
}

/// Data ids must be the ordinals of the documents with a vector, each once.
fn check_data_ids(
    manifest: &Manifest,
    snapshot: &GraphSnapshot,
    rows: Option<&[u32]>,
) -> Vec<String> {
    let mut faults = Vec::new();
    let expected: Option<HashSet<usize>> =
        rows.map(|rows| rows.iter().map(|&o| o as usize).collect());
    let mut count: HashMap<usize, u32> = HashMap::with_capacity(snapshot.points.len());
    for point in &snapshot.points {
        *count.entry(point.data_id).or_default() += 1;
    }
    let mut unexpected: Vec<usize> = count
        .keys()
        .copied()
        .filter(|&id| match &expected {
            Some(expected) => !expected.contains(&id),
            None => id as u64 >= manifest.doc_count,
        })
        .collect();
    unexpected.sort_unstable();
    if !unexpected.is_empty() {
        faults.push(format!(
            "{} data ids are not ordinals of documents with a vector ({})",
            unexpected.len(),
            list(&unexpected)
        ));
    }
    let mut repeated: Vec<usize> = count
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(&id, _)| id)
        .collect();
    repeated.sort_unstable();
    if !repeated.is_empty() {
        faults.push(format!(
            "{} data ids appear more than once ({})",
            repeated.len(),
            list(&repeated)
        ));
    }
    if let Some(expected) = &expected {
        let mut missing: Vec<usize> = expected
            .iter()
            .copied()
            .filter(|id| !count.contains_key(id))
            .collect();
        missing.sort_unstable();
        if !missing.is_empty() {
            faults.push(format!(
                "{} documents with a vector have no point in the graph (ordinals {})",
                missing.len(),
                list(&missing)
            ));
        }
    }
    faults
}

struct Entry {
    /// Indices into the snapshot's points to start from.
    starts: Vec<usize>,
    description: String,
}

/// The entry point named by the dump trailer, checked against the graph; else every point of
/// the top layer.
fn find_entry(snapshot: &GraphSnapshot, trailer: Option<(usize, u8, i32)>) -> Entry {
    if let Some((data_id, level, rank)) = trailer {
        let found = snapshot
            .points
            .iter()
            .position(|p| p.level == level && p.rank == rank && p.data_id == data_id);
        if let (Some(i), true) = (found, level == snapshot.max_level) {
            return Entry {
                starts: vec![i],
                description: format!("(data id {data_id}, level {level})"),
            };
        }
    }
    let starts: Vec<usize> = (0..snapshot.points.len())
        .filter(|&i| snapshot.points[i].level == snapshot.max_level)
        .collect();
    Entry {
        description: format!(
            "(not found in the dump trailer; started from all {} points of level {})",
            starts.len(),
            snapshot.max_level
        ),
        starts,
    }
}

struct Reach {
    /// Reachable the way a search walks: upper layers from the entry, then layer 0.
    searchable: Vec<bool>,
    /// Reachable on layer 0 from the entry point(s).
    layer0: Vec<bool>,
}

fn reachability(snapshot: &GraphSnapshot, starts: &[usize]) -> Reach {
    let n = snapshot.points.len();
    let bfs = |seeds: &[usize], layers: &dyn Fn(usize) -> std::ops::Range<usize>| {
        let mut seen = vec![false; n];
        let mut queue: VecDeque<usize> = VecDeque::new();
        for &s in seeds {
            if !seen[s] {
                seen[s] = true;
                queue.push_back(s);
            }
        }
        while let Some(u) = queue.pop_front() {
            let neighbours = &snapshot.points[u].neighbours;
            for layer in layers(neighbours.len()) {
                for &v in &neighbours[layer] {
                    let v = v as usize;
                    if !seen[v] {
                        seen[v] = true;
                        queue.push_back(v);
                    }
                }
            }
        }
        seen
    };
    let upper = bfs(starts, &|len| 1.min(len)..len);
    let upper_seeds: Vec<usize> = (0..n).filter(|&i| upper[i]).collect();
    let layer0_only = |len: usize| 0..1.min(len);
    Reach {
        searchable: bfs(&upper_seeds, &layer0_only),
        layer0: bfs(starts, &layer0_only),
    }
}

/// The failure log: each line a JSON failure record; a torn last line is tolerated.
fn check_errors(dir: &Path) -> CheckItem {
    let path = dir.join(layout::ERRORS);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return CheckItem::pass(CheckItem::ERRORS, "no failures recorded (no errors.jsonl)")
        }
        Err(e) => return CheckItem::fail(CheckItem::ERRORS, format!("`{}`: {e}", layout::ERRORS)),
    };
    let lines: Vec<&[u8]> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut bad: Vec<String> = Vec::new();
    let mut torn = false;
    for (i, line) in lines.iter().enumerate() {
        if let Err(e) = serde_json::from_slice::<Failure>(line) {
            if i + 1 == lines.len() {
                torn = true;
            } else {
                bad.push(format!("line {}: {e}", i + 1));
            }
        }
    }
    let recorded = lines.len() - bad.len() - usize::from(torn);
    let mut info = format!("{recorded} failures recorded in {}", layout::ERRORS);
    if torn {
        info.push_str("; the last line is torn (a crash mid-append) and is ignored");
    }
    let faults = if bad.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "`{}`: {} lines are not failure records ({})",
            layout::ERRORS,
            bad.len(),
            list(&bad)
        )]
    };
    CheckItem::from_faults(CheckItem::ERRORS, faults, info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::SnapshotPoint;

    fn point(data_id: usize, level: u8, rank: i32, neighbours: Vec<Vec<u32>>) -> SnapshotPoint {
        SnapshotPoint {
            data_id,
            level,
            rank,
            neighbours,
        }
    }

    /// Layer 0: 0 -> 1 -> 2, 3 -> 0 (3 has no in-edge), 4 -> 4's only link is from 5 on
    /// layer 1; 5 is the entry point (level 1) and links to 4 on layer 1 and 0 on layer 0.
    fn snapshot() -> GraphSnapshot {
        GraphSnapshot {
            points: vec![
                point(10, 0, 0, vec![vec![1]]),
                point(11, 0, 1, vec![vec![2]]),
                point(12, 0, 2, vec![vec![]]),
                point(13, 0, 3, vec![vec![0]]),
                point(14, 1, 0, vec![vec![], vec![5]]),
                point(15, 1, 1, vec![vec![0], vec![4]]),
            ],
            max_level: 1,
            dangling: 0,
        }
    }

    #[test]
    fn reachability_follows_upper_layers_then_layer_0() {
        let s = snapshot();
        let reach = reachability(&s, &[5]);
        assert_eq!(reach.searchable, [true, true, true, false, true, true]);
        // on layer 0 alone, 4 (only linked from 5 on layer 1) is not reachable from 5
        assert_eq!(reach.layer0, [true, true, true, false, false, true]);
    }

    #[test]
    fn the_entry_point_comes_from_the_trailer_or_the_top_layer() {
        let s = snapshot();
        let entry = find_entry(&s, Some((15, 1, 1)));
        assert_eq!(entry.starts, [5]);
        // a trailer that does not match the graph falls back to every top-level point
        let entry = find_entry(&s, Some((15, 1, 7)));
        assert_eq!(entry.starts, [4, 5]);
        assert!(entry.description.contains("not found"));
        assert_eq!(find_entry(&s, None).starts, [4, 5]);
    }

    #[test]
    fn lists_are_capped() {
        let values: Vec<usize> = (0..25).collect();
        assert_eq!(list(&values), "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...");
        assert_eq!(list(&[1, 2]), "1, 2");
    }
}
