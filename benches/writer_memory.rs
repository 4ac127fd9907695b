//! What the index writer holds per document: peak RSS of `IndexWriter::add` + `commit` over
//! N documents, each measured in a fresh process (the peak is per process), for documents
//! built up part by part, so the difference between two lines is what that part costs.
//!
//! - `ids`: documents with a 64-character id only (tantivy gets an empty document per ordinal);
//! - `fields`: plus the stored fields `cxr index` writes for a PNG (path, size, mtime, sha256);
//! - `vectors`: plus a vector of `--dim` components (rows, HNSW graph, the commit's graph files);
//! - `periodic`: `vectors` with a commit every 5,000 documents;
//! - `spaced`: `vectors` committed as `cxr index` commits by default (`embed::commit_due`:
//!   every 5,000 documents, or every tenth of the active segment when that is more); compare
//!   its seconds in commits with `periodic`'s;
//! - `append`: a new writer opens the `vectors` index of N documents and adds N/10 more: what
//!   appending to an archive costs (per added document, so the held archive shows up here);
//! - `segmented`: `periodic` in an index that seals a segment every 5,000 rows, so the writer
//!   holds one segment's graph and rows at most: what is left is the document table.
//! - `tracked`: `segmented` with the writer tracking the `sha256` field
//!   (`IndexWriter::track_field`), as `cxr index` does to find copies of a file.
//! - `open`: a reader (`Index::open`) of the `fields` index: what opening an index costs per
//!   document (time and memory), where documents are all a reader holds in memory.
//!
//! The RSS growth is split: `of which anonymous` (`RssAnon`) is the part the kernel cannot drop;
//! the rest is page cache of mapped files (the writer's scratch tables among them), written
//! out and dropped under memory pressure.
//!
//! Beside the RSS, each line reports the heap the writer still holds after its last commit
//! (`held B/doc`), counted by this binary's allocator: exact and the same in every run, where
//! the RSS moves by megabytes with the allocator's caching, so it resolves a few bytes per
//! document that the RSS cannot.
//!
//! `cargo bench --bench writer_memory -- [--n 20000,100000] [--dim 128] [--parts ids,...]`;
//! one JSON line per measurement (with the seconds spent in commits), then a table.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cxr_index::{CreateOptions, Document, IndexSpec, IndexWriter};
use cxr_search::embed::{commit_due, COMMIT_EVERY};
use serde_json::json;

const PARTS: [&str; 9] = [
    "ids",
    "fields",
    "vectors",
    "periodic",
    "spaced",
    "append",
    "segmented",
    "tracked",
    "open",
];

#[derive(Parser)]
struct Args {
    /// Document counts.
    #[arg(long, default_value = "20000,100000")]
    n: String,
    /// Vector dimension.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Lines to measure (`append` needs `vectors` before it in the same run, `open` needs
    /// `fields`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ids,fields,vectors,periodic,spaced,append,segmented,tracked,open"
    )]
    parts: Vec<String>,
    /// Where the indexes are built (removed afterwards).
    #[arg(long, default_value = "target/bench-data/writer-memory")]
    work_dir: PathBuf,
    /// Internal: measure one configuration in this process (`PART N`).
    #[arg(long, num_args = 2, hide = true)]
    child: Option<Vec<String>>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// (current RSS, peak RSS, current anonymous RSS) of this process in KiB, from /proc (Linux).
/// The anonymous part is what the kernel cannot drop under memory pressure (heap, not the
/// page cache of mapped files).
fn rss_kib() -> Result<(u64, u64, u64)> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let field = |key: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {key} in /proc/self/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?, field("RssAnon:")?))
}

fn document(i: usize, part: &str, dim: usize) -> Document {
    let mut fields = BTreeMap::new();
    if part != "ids" {
        fields.insert("path".into(), format!("images/{i:08}_000.png"));
        fields.insert("size".into(), (100_000 + i % 50_000).to_string());
        fields.insert("mtime".into(), "2026-01-01T00:00:00Z".into());
        fields.insert(
            "sha256".into(),
            format!("{:064x}", (i as u128) * 0x9E37_79B9_7F4A_7C15),
        );
    }
    let vector = matches!(
        part,
        "vectors" | "periodic" | "spaced" | "append" | "segmented" | "tracked"
    )
    .then(|| {
        (0..dim)
            .map(|d| ((i * 31 + d * 7) as f32 * 0.013).sin())
            .collect()
    });
    Document {
        id: format!("{i:064x}"),
        vector,
        fields,
        ..Default::default()
    }
}

/// The `open` line: opens the index the `fields` run left, in a process of its own.
fn open_child(n: usize, work: &Path) -> Result<()> {
    let dir = work.join(format!("fields-{n}"));
    let (start, _, anon_start) = rss_kib()?;
    let t = Instant::now();
    let index = cxr_index::Index::open(&dir)
        .with_context(|| format!("opening {} (run the `fields` line first)", dir.display()))?;
    let open_s = t.elapsed().as_secs_f64();
    let (after, peak, anon_after) = rss_kib()?;
    anyhow::ensure!(index.len() == n, "{} documents, expected {n}", index.len());
    drop(index);
    std::fs::remove_dir_all(&dir).ok();
    common::emit(json!({
        "row": "writer_memory", "part": "open", "n": n, "added": n,
        "rss_start_kib": start, "rss_after_add_kib": after, "peak_kib": peak,
        "anon_start_kib": anon_start, "anon_after_add_kib": anon_after, "commit_s": open_s,
    }));
    Ok(())
}

fn child(part: &str, n: usize, dim: usize, work: &Path) -> Result<()> {
    if part == "open" {
        return open_child(n, work);
    }
    let spec = IndexSpec {
        dim,
        model_fingerprint: "bench".into(),
        model_name: "bench-writer-memory".into(),
    };
    // `append` reopens the index the `vectors` run left (in a process of its own, so the
    // first writer's peak is not this one's).
    let dir = work.join(format!(
        "{}-{n}",
        if part == "append" { "vectors" } else { part }
    ));
    let (mut writer, range) = if part == "append" {
        (IndexWriter::open(&dir)?, n..n + n / 10)
    } else {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let options = CreateOptions {
            segment_rows: if matches!(part, "segmented" | "tracked") {
                COMMIT_EVERY as u64
            } else {
                CreateOptions::default().segment_rows
            },
            ..CreateOptions::default()
        };
        (IndexWriter::create_with(&dir, spec, options)?, 0..n)
    };
    if part == "tracked" {
        writer.track_field("sha256")?;
    }
    let (start, _, anon_start) = rss_kib()?;
    common::count_heap(true);
    let heap_start = common::live_heap_bytes();
    let added = range.len();
    let mut commit_s = 0.0;
    let mut timed_commit = |writer: &mut IndexWriter| -> Result<()> {
        let t = Instant::now();
        writer.commit()?;
        commit_s += t.elapsed().as_secs_f64();
        Ok(())
    };
    let mut since = 0;
    for i in range {
        writer.add(document(i, part, dim))?;
        since += 1;
        let due = match part {
            "periodic" | "segmented" | "tracked" => since >= COMMIT_EVERY,
            "spaced" => commit_due(since, None, writer.active_rows()),
            _ => false,
        };
        if due {
            timed_commit(&mut writer)?;
            since = 0;
        }
    }
    let (after_add, _, anon_after_add) = rss_kib()?;
    timed_commit(&mut writer)?;
    let (_, peak, _) = rss_kib()?;
    let held = common::live_heap_bytes().saturating_sub(heap_start);
    drop(writer);
    if !matches!(part, "vectors" | "fields") {
        std::fs::remove_dir_all(&dir).ok();
    }
    common::emit(json!({
        "row": "writer_memory", "part": part, "n": n, "dim": dim, "added": added,
        "rss_start_kib": start, "rss_after_add_kib": after_add, "peak_kib": peak,
        "anon_start_kib": anon_start, "anon_after_add_kib": anon_after_add,
        "commit_s": commit_s, "held_bytes": held,
    }));
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(c) = &args.child {
        let n = c[1].parse().context("child N")?;
        return child(&c[0], n, args.dim, &args.work_dir);
    }
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for n in args.n.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let n: usize = n.parse().with_context(|| format!("--n {n}"))?;
        for part in PARTS.iter().filter(|p| args.parts.iter().any(|a| a == *p)) {
            let out = Command::new(&exe)
                .args(["--dim", &args.dim.to_string(), "--work-dir"])
                .arg(&args.work_dir)
                .args(["--child", *part, &n.to_string()])
                .output()
                .context("running the measurement process")?;
            if !out.status.success() {
                bail!("{part} n={n}: {}", String::from_utf8_lossy(&out.stderr));
            }
            let line = String::from_utf8_lossy(&out.stdout);
            print!("{line}");
            let v: serde_json::Value = serde_json::from_str(line.trim())?;
            let kib = |k: &str| v[k].as_f64().unwrap_or(0.0);
            let added = kib("added").max(1.0);
            let grow = |k: &str| (kib(k) - kib("rss_start_kib")) * 1024.0 / added;
            let anon = (kib("anon_after_add_kib") - kib("anon_start_kib")) * 1024.0 / added;
            let held = match v["held_bytes"].as_f64() {
                Some(bytes) => format!("{:.1}", bytes / added),
                None => "-".into(),
            };
            rows.push(format!(
                "| {part} | {n} | {} | {:.0} | {anon:.0} | {:.0} | {:.0} | {held} | {:.1} |",
                v["added"],
                grow("rss_after_add_kib"),
                grow("peak_kib"),
                kib("peak_kib") / 1024.0,
                kib("commit_s"),
            ));
        }
        // Left by `fields` for `open`.
        std::fs::remove_dir_all(args.work_dir.join(format!("fields-{n}"))).ok();
    }
    eprintln!(
        "\n| part | N | added | RSS growth after add, B/doc | of which anonymous | peak growth, B/doc | peak MiB | held B/doc | commits (open: opening), s |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        eprintln!("{r}");
    }
    Ok(())
}
