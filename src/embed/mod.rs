//! The batch indexer: files -> decoded, preprocessed pixels (rayon workers) -> batched inference
//! -> documents appended to the index, committed at a fixed interval.
//!
//! Decoding runs on a producer thread one batch ahead of inference, through a channel of depth
//! one, so at most three batches of pixels exist at any time whatever the archive's size.
//!
//! Re-runs are idempotent. Each image document stores its path (relative to the folder it was
//! found under), the file's size, modification time and SHA-256. A file whose path is indexed
//! is skipped without reading it when size and time agree, and after hashing it when only the
//! time changed; a file whose content changed replaces its document. A new path whose content
//! is already indexed (a copy) is skipped too.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use cxr_index::scratch::{Plain, ScratchVec, SPILL_BYTES};
use cxr_index::{Document, IndexError, IndexWriter};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::ingest::reports::{Report, ReportTable};
use crate::ingest::{self, DecodeOptions, ImageMeta, IngestError};
use crate::model::DualEncoder;
use crate::privacy::IndexPrivacy;

/// One indexing run.
pub struct IndexJob<'a> {
    /// Image files, in the order they are indexed, with the root each was found under, shared
    /// by the files under it (used to store paths relative to it and to match reports by
    /// relative path). Drawn a batch at a time, so that an archive's file list need not be
    /// held whole: `cxr index` walks the archive again as it goes.
    pub files: Box<dyn Iterator<Item = (PathBuf, Arc<Path>)> + Send + 'a>,
    /// How many `files` yields: the progress bar's length, and 0 for a report-only corpus.
    pub file_count: usize,
    pub reports: Option<&'a ReportTable>,
    pub decode: DecodeOptions,
    /// What may be stored about patients (the salt, `--deidentify`).
    pub privacy: &'a IndexPrivacy,
    pub batch_size: usize,
    /// Commit after this many new documents (and always at the end); `None`: see
    /// [`commit_due`].
    pub commit_every: Option<usize>,
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    pub indexed: usize,
    /// Documents already in the index (a resumed or repeated run).
    pub skipped: usize,
    pub failed: usize,
    /// Files whose content was already indexed under another path.
    pub duplicates: usize,
    /// Indexed files whose content changed since; their documents were replaced.
    pub replaced: usize,
    pub report_only: usize,
    /// Reports that matched no image of this run.
    pub unmatched_reports: usize,
    pub seconds: f64,
}

/// Why the run as a whole stopped (single bad files never stop it).
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Index(#[from] cxr_index::IndexError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
}

struct Prepared {
    path: PathBuf,
    rel: PathBuf,
    id: String,
    meta: ImageMeta,
    input: Vec<f32>,
    file: FileStamp,
    /// The document (ordinal) of an earlier version of this file, replaced by this one.
    replaces: Option<u32>,
}

/// What identifies a file's content: size and modification time (cheap, from the file
/// system) and the SHA-256 of its bytes (the truth).
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    size: String,
    mtime: String,
    sha256: String,
}

const PATH_FIELD: &str = "path";
const SIZE_FIELD: &str = "size";
const MTIME_FIELD: &str = "mtime";
const SHA256_FIELD: &str = "sha256";

/// A file indexed before the run, as a re-run needs to recognise it: 64-bit hashes of its
/// document's stored path, size and time, and content hash, and the document's ordinal (for
/// the rest, the writer reads the record back). 32 bytes per file, where the stored strings
/// would take about 400; past a mebibyte they live in a scratch file in the index folder
/// ([`ScratchVec`]), so a re-run over a large archive does not hold them on the heap.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Known {
    /// [`key_hash`] of the stored path.
    path: u64,
    /// [`stamp_hash`] of the stored size and time, if both were stored ([`HAS_STAMP`]).
    stamp: u64,
    /// [`key_hash`] of the stored SHA-256, if it was stored ([`HAS_SHA256`]).
    sha256: u64,
    ord: u32,
    has: u8,
    /// Explicit, so that the struct has no padding bytes ([`Plain`]).
    _pad: [u8; 3],
}

// SAFETY: `repr(C)`, 8 + 8 + 8 + 4 + 1 + 3 = 32 bytes with no padding, integers only: every
// bit pattern is a valid `Known`.
unsafe impl Plain for Known {}
const _: () = assert!(std::mem::size_of::<Known>() == 32);

const HAS_STAMP: u8 = 1;
const HAS_SHA256: u8 = 2;

impl Known {
    fn stamp(&self) -> Option<u64> {
        (self.has & HAS_STAMP != 0).then_some(self.stamp)
    }

    fn sha256(&self) -> Option<u64> {
        (self.has & HAS_SHA256 != 0).then_some(self.sha256)
    }
}

/// The files indexed before the run, sorted by path hash: looked up by every file the walk
/// finds, from the decoding threads, so it is built once and shared read-only.
struct KnownFiles(ScratchVec<Known>);

impl KnownFiles {
    /// Reads every live record of `writer` once.
    fn read(writer: &IndexWriter) -> Result<KnownFiles, EmbedError> {
        let scratch = |source| IndexError::Io {
            path: writer.path().to_path_buf(),
            source,
        };
        let mut known = ScratchVec::spilling(Arc::from(writer.path()), SPILL_BYTES);
        for record in writer.records() {
            let doc = record?;
            let Some(path) = doc.fields.get(PATH_FIELD) else {
                continue;
            };
            let mut file = Known {
                path: key_hash(path),
                stamp: 0,
                sha256: 0,
                ord: doc.ord,
                has: 0,
                _pad: [0; 3],
            };
            if let (Some(size), Some(mtime)) =
                (doc.fields.get(SIZE_FIELD), doc.fields.get(MTIME_FIELD))
            {
                file.stamp = stamp_hash(size, mtime);
                file.has |= HAS_STAMP;
            }
            if let Some(sha256) = doc.fields.get(SHA256_FIELD) {
                file.sha256 = key_hash(sha256);
                file.has |= HAS_SHA256;
            }
            known.push(file).map_err(scratch)?;
        }
        known.sort_unstable_by_key(|k| (k.path, k.ord));
        Ok(KnownFiles(known))
    }

    /// The newest document indexed under the stored path whose hash is `path`.
    fn get(&self, path: u64) -> Option<&Known> {
        let end = self.0.partition_point(|k| k.path <= path);
        self.0[..end].last().filter(|k| k.path == path)
    }
}

/// A fixed-key 64-bit hash of a stored value (path, content hash). Two paths of a
/// million-file archive share one with odds of about 3e-8; the content hash's matches are
/// confirmed against the stored value before a file is skipped as a copy.
fn key_hash(value: &str) -> u64 {
    use std::hash::BuildHasher;
    std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
        .hash_one(value)
}

/// [`key_hash`] of a (size, time) pair as stored.
fn stamp_hash(size: &str, mtime: &str) -> u64 {
    key_hash(&format!("{size}\0{mtime}"))
}

/// Size and modification time of `path` as stored (`mtime`: seconds.nanoseconds since 1970).
fn stat(path: &Path) -> std::io::Result<(String, String)> {
    let meta = std::fs::metadata(path)?;
    let mtime = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
        .unwrap_or_default();
    Ok((meta.len().to_string(), mtime))
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// What to do with a file whose relative path is already indexed.
enum Revisit {
    /// Same content: nothing to do.
    Unchanged,
    /// The content changed: index it again, replacing the document with this ordinal.
    Changed(u32),
}

fn revisit(
    path: &Path,
    known: &Known,
    privacy: &IndexPrivacy,
) -> Result<Revisit, (PathBuf, String)> {
    let io_err = |e: std::io::Error| (path.to_path_buf(), e.to_string());
    let Some(sha) = known.sha256() else {
        // Indexed before content hashes were stored: the path alone decides.
        return Ok(Revisit::Unchanged);
    };
    let (size, mtime) = stat(path).map_err(io_err)?;
    let mtime = privacy.stored_token(MTIME_FIELD, &mtime);
    if known.stamp() == Some(stamp_hash(&size, &mtime)) {
        return Ok(Revisit::Unchanged);
    }
    let digest = sha256_file(path).map_err(io_err)?;
    if key_hash(&privacy.stored_token(SHA256_FIELD, &digest)) == sha {
        return Ok(Revisit::Unchanged);
    }
    Ok(Revisit::Changed(known.ord))
}

/// A prepared file, `None` for a file already indexed, or the file and why it failed.
type Decoded = Result<Option<Prepared>, (PathBuf, String)>;

/// Runs the job, calling `on_failure` with each file that could not be indexed and why, and
/// `on_notice` with files indexed in an unusual way (e.g. under a disambiguated id).
pub fn run(
    job: IndexJob<'_>,
    model: &DualEncoder,
    writer: &mut IndexWriter,
    on_failure: &mut dyn FnMut(&Path, &str),
    on_notice: &mut dyn FnMut(&Path, &str),
) -> Result<Summary, EmbedError> {
    let start = Instant::now();
    let mut summary = Summary::default();
    let total = job.file_count as u64;
    let bar = progress_bar(job.progress, total);
    let mut since_commit = 0usize;
    let privacy = job.privacy;
    // Ids given in the batch at hand, with the (stored) path of the file each came from: once
    // the batch is added, the writer answers for them, so this holds one batch, not the run.
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut matched_reports: HashSet<String> = HashSet::new();
    let batch_size = job.batch_size.max(1);

    // Files already in the index (by the hash of their stored path) are looked at before
    // any decoding, so a resumed run over a large archive costs a walk and a stat per file.
    let indexed = &KnownFiles::read(writer)?;
    // Content of the batch at hand (stored SHA-256 -> stored path): its documents are added
    // after the batch is embedded, and join `content` then.
    let mut batch_content: HashMap<String, String> = HashMap::new();

    std::thread::scope(|scope| -> Result<(), EmbedError> {
        let (tx, rx) = mpsc::sync_channel::<Vec<Decoded>>(1);
        let mut files = job.files;
        let decode = &job.decode;
        scope.spawn(move || loop {
            let chunk: Vec<(PathBuf, Arc<Path>)> = files.by_ref().take(batch_size).collect();
            if chunk.is_empty() {
                break;
            }
            let batch: Vec<Decoded> = chunk
                .par_iter()
                .map(|(path, root)| {
                    let rel = rel_path(path, root);
                    let stored = privacy.stored_path(&rel.to_string_lossy());
                    let replaces = match indexed.get(key_hash(&stored)) {
                        None => None,
                        Some(known) => match revisit(path, known, privacy)? {
                            Revisit::Unchanged => return Ok(None),
                            Revisit::Changed(id) => Some(id),
                        },
                    };
                    let mut p = prepare(path, root, decode, model, privacy)?;
                    p.replaces = replaces;
                    Ok(Some(p))
                })
                .collect();
            if tx.send(batch).is_err() {
                break; // the consumer stopped on an error
            }
        });

        for batch in rx {
            let mut ok = Vec::with_capacity(batch.len());
            for item in batch {
                match item {
                    Ok(None) => summary.skipped += 1,
                    Ok(Some(mut p)) => {
                        let rel = privacy.stored_path(&p.rel.to_string_lossy());
                        if let Some(old) = p.replaces.take() {
                            if let Some(doc) = writer.record(old)? {
                                writer.delete(&doc.id)?;
                            }
                            summary.replaced += 1;
                            on_notice(&p.path, "changed since it was indexed; indexed again");
                        } else if let Some(first) = copy_of(writer, &batch_content, &p.file.sha256)?
                        {
                            if first != rel {
                                on_notice(
                                    &p.path,
                                    &format!("same content as {first}, already indexed; skipped"),
                                );
                                summary.duplicates += 1;
                                continue;
                            }
                        }
                        match resolve_id(writer, &seen, &p, privacy)? {
                            IdResolution::Indexed => summary.skipped += 1,
                            IdResolution::New(id) => {
                                if id != privacy.stored_id(&p.id) {
                                    on_notice(
                                    &p.path,
                                    &format!("document id already used by another file; indexed as {id}"),
                                );
                                }
                                seen.insert(id.clone(), rel.clone());
                                batch_content.insert(p.file.sha256.clone(), rel);
                                ok.push((p, id));
                            }
                            IdResolution::Clash => {
                                let reason = format!("document id {} is used by other files", p.id);
                                fail(writer, on_failure, &p.path, &reason, &mut summary, privacy)?;
                            }
                        }
                    }
                    Err((path, reason)) => {
                        fail(writer, on_failure, &path, &reason, &mut summary, privacy)?
                    }
                }
            }
            if !ok.is_empty() {
                let inputs: Vec<Vec<f32>> = ok
                    .iter_mut()
                    .map(|(p, _)| std::mem::take(&mut p.input))
                    .collect();
                let vectors = model.embed_inputs(&inputs)?;
                for ((p, id), vector) in ok.into_iter().zip(vectors) {
                    // Reports are matched on the natural identifiers, before any are replaced.
                    let report = job.reports.and_then(|t| {
                        t.find(&p.id, Some(&p.rel), p.meta.study_instance_uid.as_deref())
                    });
                    if let Some(r) = report {
                        matched_reports.insert(r.key.clone());
                    }
                    writer.add(image_document(&p, id, vector, report, privacy))?;
                    summary.indexed += 1;
                    since_commit += 1;
                }
            }
            seen.clear();
            batch_content.clear();
            bar.set_position((summary.indexed + summary.skipped + summary.failed) as u64);
            if commit_due(since_commit, job.commit_every, writer.active_rows()) {
                writer.commit()?;
                since_commit = 0;
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();

    if let Some(table) = job.reports {
        if job.file_count == 0 {
            // A report-only corpus: every report is a document of its own.
            for report in table.reports() {
                if writer.contains(&privacy.stored_id(&report.key))? {
                    summary.skipped += 1;
                    continue;
                }
                match report_document(report, privacy) {
                    Some(doc) => {
                        writer.add(doc)?;
                        summary.report_only += 1;
                    }
                    None => {
                        let reason = "empty report: no text in the report columns";
                        let at = format!("{}: {}", table.source.display(), report.key);
                        fail(
                            writer,
                            on_failure,
                            Path::new(&at),
                            reason,
                            &mut summary,
                            privacy,
                        )?;
                    }
                }
            }
        } else {
            summary.unmatched_reports = table.len().saturating_sub(matched_reports.len());
        }
    }
    writer.commit()?;
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

enum IdResolution {
    /// This very file is already in the index (a repeated or resumed run).
    Indexed,
    /// Index it under this id.
    New(String),
    /// Both the natural and the disambiguated id belong to other files.
    Clash,
}

/// Chooses the id of a file. The natural id (SOPInstanceUID, or the file stem) is used unless
/// another file already holds it: archives keep transcoded copies of one instance (same
/// SOPInstanceUID, other transfer syntax) and PNG folders repeat file names. Such a file is
/// indexed as `ID+RELATIVE/PATH`, so it stays findable and a re-run recognises it by its path.
fn resolve_id(
    writer: &IndexWriter,
    seen: &HashMap<String, String>,
    p: &Prepared,
    privacy: &IndexPrivacy,
) -> Result<IdResolution, EmbedError> {
    let rel = p.rel.to_string_lossy().replace('\\', "/");
    let stored_rel = privacy.stored_path(&p.rel.to_string_lossy());
    let natural = privacy.stored_id(&p.id);
    let alt = privacy.stored_id(&format!("{}+{rel}", p.id));
    for id in [natural, alt] {
        let holder = match writer.doc_fields(&id)? {
            Some(fields) => Some(
                fields
                    .get(PATH_FIELD)
                    .map(String::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            None => seen.get(&id).cloned(),
        };
        match holder {
            None => return Ok(IdResolution::New(id)),
            Some(path) if path == stored_rel => return Ok(IdResolution::Indexed),
            Some(_) => continue,
        }
    }
    Ok(IdResolution::Clash)
}

/// Documents between two commits when none is asked for, at least.
pub const COMMIT_EVERY: usize = 5000;

/// Whether `since` documents added since the last commit call for one. With `every`, after
/// that many. Without, after [`COMMIT_EVERY`], or after a tenth of the active vector
/// segment's rows when that is more: each commit rewrites the active segment (its rows and
/// graph), so commits spaced in proportion to it cost a fixed amount per image (about ten
/// rows rewritten per row added) instead of one growing with the segment. A crash then loses
/// at most that tenth (50,000 images with the default `--segment-rows`), which a re-run
/// indexes again.
pub fn commit_due(since: usize, every: Option<usize>, active_rows: usize) -> bool {
    since >= every.unwrap_or(COMMIT_EVERY.max(active_rows / 10))
}

/// The stored path of an indexed file with this (stored) content hash: one of this batch, or
/// a document whose stored hash is confirmed to be the same, committed or added in this run.
/// The writer's lookup of stored hashes is built at the first new file, so a re-run that finds
/// nothing new reads the records once, not twice.
fn copy_of(
    writer: &mut IndexWriter,
    batch_content: &HashMap<String, String>,
    sha256: &str,
) -> Result<Option<String>, EmbedError> {
    if let Some(rel) = batch_content.get(sha256) {
        return Ok(Some(rel.clone()));
    }
    writer.track_field(SHA256_FIELD)?;
    let Some(&first) = writer.find_by_field(SHA256_FIELD, sha256)?.first() else {
        return Ok(None);
    };
    Ok(writer
        .record(first)?
        .map(|doc| doc.fields.get(PATH_FIELD).cloned().unwrap_or_default()))
}

/// Reports a file that could not be indexed: to the caller (who prints the real path) and to
/// the index's failure log (the stored form of the path under `--deidentify`).
fn fail(
    writer: &mut IndexWriter,
    on_failure: &mut dyn FnMut(&Path, &str),
    path: &Path,
    reason: &str,
    summary: &mut Summary,
    privacy: &IndexPrivacy,
) -> Result<(), EmbedError> {
    on_failure(path, reason);
    writer.record_failure(&privacy.stored_path(&path.to_string_lossy()), reason)?;
    summary.failed += 1;
    Ok(())
}

/// The path stored in the index: relative to the input it was found under.
fn rel_path(path: &Path, root: &Path) -> PathBuf {
    path.strip_prefix(root)
        .ok()
        .filter(|r| !r.as_os_str().is_empty())
        .unwrap_or(path)
        .to_path_buf()
}

fn prepare(
    path: &Path,
    root: &Path,
    opts: &DecodeOptions,
    model: &DualEncoder,
    privacy: &IndexPrivacy,
) -> Result<Prepared, (PathBuf, String)> {
    // Stamp first: a file rewritten while it is decoded gets a new stamp on the next run.
    let io_err = |e: std::io::Error| (path.to_path_buf(), e.to_string());
    let (size, mtime) = stat(path).map_err(io_err)?;
    let sha256 = privacy.stored_token(SHA256_FIELD, &sha256_file(path).map_err(io_err)?);
    let mtime = privacy.stored_token(MTIME_FIELD, &mtime);
    let decoded = ingest::decode_file(path, opts).map_err(|e| (path.to_path_buf(), reason(&e)))?;
    let rel = rel_path(path, root);
    let id = match &decoded.meta.sop_instance_uid {
        Some(uid) => uid.clone(),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let input = model.prepare_image(&decoded.image);
    Ok(Prepared {
        path: path.to_path_buf(),
        rel,
        id,
        meta: decoded.meta,
        input,
        file: FileStamp {
            size,
            mtime,
            sha256,
        },
        replaces: None,
    })
}

/// The error's message without the path prefix, since the caller prints the path itself.
fn reason(e: &IngestError) -> String {
    let text = e.to_string();
    match text.split_once(": ") {
        Some((_, rest)) => rest.to_string(),
        None => text,
    }
}

fn image_document(
    p: &Prepared,
    id: String,
    vector: Vec<f32>,
    report: Option<&Report>,
    privacy: &IndexPrivacy,
) -> Document {
    let mut fields = std::collections::BTreeMap::new();
    let m = &p.meta;
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            fields.insert(k.to_string(), v.clone());
        }
    };
    put("study_uid", &m.study_instance_uid);
    put("series_uid", &m.series_instance_uid);
    put("modality", &m.modality);
    put("view", &m.view_position);
    put("body_part", &m.body_part);
    put("sex", &m.patient_sex);
    put("date", &m.study_date);
    put("patient", &m.patient_hash);
    if let Some(age) = m.patient_age {
        fields.insert("age".into(), age.to_string());
    }
    let mut text = None;
    let mut negated_text = None;
    if let Some(r) = report {
        for (k, v) in &r.meta {
            // The image header wins over the table where both have a value.
            fields.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &r.sections {
            if !v.trim().is_empty() {
                fields.insert(k.clone(), v.clone());
            }
        }
        text = report_text(r);
        negated_text = r.negated_text();
    }
    privacy.clean_fields(&mut fields);
    // Already in stored form (see `prepare`).
    fields.insert(
        PATH_FIELD.into(),
        privacy.stored_path(&p.rel.to_string_lossy()),
    );
    fields.insert(SIZE_FIELD.into(), p.file.size.clone());
    fields.insert(MTIME_FIELD.into(), p.file.mtime.clone());
    fields.insert(SHA256_FIELD.into(), p.file.sha256.clone());
    Document {
        id,
        vector: Some(vector),
        text,
        negated_text,
        fields,
    }
}

/// What BM25 indexes for a report: its asserted (and uncertain) text, negated findings left
/// out (see [`crate::ingest::negation`]); the full sections stay in the document's fields for
/// display. `Some("")` for a report whose every statement is negated: it is a normal study and
/// must stay a document. `None` only when the report has no text at all.
fn report_text(r: &Report) -> Option<String> {
    r.text()?;
    Some(r.asserted_text().unwrap_or_default())
}

fn report_document(r: &Report, privacy: &IndexPrivacy) -> Option<Document> {
    let text = report_text(r)?;
    let mut fields: std::collections::BTreeMap<String, String> = r.meta.clone();
    for (k, v) in &r.sections {
        if !v.trim().is_empty() {
            fields.insert(k.clone(), v.clone());
        }
    }
    privacy.clean_fields(&mut fields);
    Some(Document {
        id: privacy.stored_id(&r.key),
        vector: None,
        text: Some(text),
        negated_text: r.negated_text(),
        fields,
    })
}

fn progress_bar(enabled: bool, total: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} images, {per_sec}, eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of files indexed before, once in a scratch file: sorted there, found there.
    #[test]
    fn known_files_in_a_scratch_file_are_found_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = ScratchVec::spilling(Arc::from(dir.path()), 64);
        for ord in 0..5000u32 {
            table
                .push(Known {
                    path: key_hash(&format!("img/{}.png", ord % 1000)),
                    stamp: u64::from(ord) * 3,
                    sha256: u64::from(ord) * 7,
                    ord,
                    has: HAS_STAMP | HAS_SHA256,
                    _pad: [0; 3],
                })
                .unwrap();
        }
        assert!(table.is_mapped());
        table.sort_unstable_by_key(|k| (k.path, k.ord));
        let known = KnownFiles(table);
        // The newest document under a path answers for it.
        let found = known.get(key_hash("img/42.png")).unwrap();
        assert_eq!(
            (found.ord, found.stamp(), found.sha256()),
            (4042, Some(4042 * 3), Some(4042 * 7))
        );
        assert!(known.get(key_hash("img/1000.png")).is_none());
    }

    #[test]
    fn commits_are_spaced_by_the_active_segment_unless_asked_for() {
        // An explicit interval is kept whatever the segment.
        assert!(commit_due(10, Some(10), 400_000));
        assert!(!commit_due(9, Some(10), 400_000));
        // By default: every 5,000 while the active segment is small...
        assert!(commit_due(COMMIT_EVERY, None, 20_000));
        assert!(!commit_due(COMMIT_EVERY - 1, None, 20_000));
        // ...then every tenth of it.
        assert!(!commit_due(39_999, None, 400_000));
        assert!(commit_due(40_000, None, 400_000));
    }
}
