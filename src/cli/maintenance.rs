//! `cxr delete` and `cxr compact`: removing documents from an index and reclaiming the space
//! they leave.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use cxr_index::IndexWriter;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
#[command(
    after_help = "Deleted documents vanish from every search at once; their vectors \
and graph points stay on disk until `cxr compact`. Examples: cxr delete IDX --ids ID1,ID2; \
cxr delete IDX --missing ARCHIVE --dry-run"
)]
pub struct DeleteArgs {
    /// Index folder.
    index: PathBuf,
    /// Document ids to delete (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    ids: Vec<String>,
    /// File with one document id per line (`-` reads standard input).
    #[arg(long, value_name = "FILE")]
    ids_from: Option<PathBuf>,
    /// Delete the image documents whose file is gone: their stored path (relative to the folder
    /// they were indexed from) exists under none of these folders. Give every folder the index
    /// was built from; a folder that does not exist is refused (an unmounted archive must not
    /// empty the index).
    #[arg(long, value_name = "ROOT", num_args = 1..)]
    missing: Vec<PathBuf>,
    /// List what would be deleted; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

pub fn cmd_delete(args: DeleteArgs) -> Result<ExitCode> {
    if args.ids.is_empty() && args.ids_from.is_none() && args.missing.is_empty() {
        bail!("nothing to delete: give --ids, --ids-from or --missing");
    }
    for root in &args.missing {
        if !root.is_dir() {
            bail!(
                "{}: not a folder; refusing --missing against an archive that is not there",
                root.display()
            );
        }
    }
    let mut requested: BTreeSet<String> = args
        .ids
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(path) = &args.ids_from {
        requested.extend(read_ids(path)?);
    }

    let mut writer = IndexWriter::open(&args.index)
        .with_context(|| format!("opening index {}", args.index.display()))?;
    let mut not_found = Vec::new();
    let mut targets: BTreeSet<String> = BTreeSet::new();
    for id in requested {
        if writer.contains(&id)? {
            targets.insert(id);
        } else {
            not_found.push(id);
        }
    }
    let mut missing_files = 0usize;
    if !args.missing.is_empty() {
        for record in writer.records() {
            let doc = record?;
            let Some(rel) = doc.fields.get("path") else {
                continue; // report-only documents have no file
            };
            if !args.missing.iter().any(|root| root.join(rel).exists()) && targets.insert(doc.id) {
                missing_files += 1;
            }
        }
    }

    for id in &not_found {
        eprintln!("cxr: {id}: no such document in {}", args.index.display());
    }
    let deleted = if args.dry_run {
        0
    } else {
        let mut n = 0;
        for id in &targets {
            if writer.delete(id)? {
                n += 1;
            }
        }
        writer.commit()?;
        n
    };
    let remaining = writer.len();
    if args.json {
        let value = serde_json::json!({
            "dry_run": args.dry_run,
            "selected": targets.len(),
            "missing_files": missing_files,
            "deleted": deleted,
            "not_found": not_found,
            "documents": remaining,
            "ids": targets,
        });
        println!("{value}");
    } else if args.dry_run {
        for id in &targets {
            println!("{id}");
        }
        println!(
            "would delete {} documents ({missing_files} with their file gone); nothing changed",
            targets.len()
        );
    } else {
        println!(
            "deleted {deleted} documents ({missing_files} with their file gone); the index holds \
             {remaining} documents; `cxr compact` reclaims their space"
        );
    }
    Ok(if not_found.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn read_ids(path: &Path) -> Result<Vec<String>> {
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut ids = Vec::new();
    for line in reader.lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let id = line.trim();
        if !id.is_empty() {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

#[derive(Args)]
pub struct CompactArgs {
    /// Index folder.
    index: PathBuf,
    #[arg(long)]
    json: bool,
    /// No progress spinner.
    #[arg(long, short)]
    quiet: bool,
}

pub fn cmd_compact(args: CompactArgs) -> Result<ExitCode> {
    let start = Instant::now();
    let mut writer = IndexWriter::open(&args.index)
        .with_context(|| format!("opening index {}", args.index.display()))?;
    let spinner = if args.quiet || args.json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}") {
            bar.set_style(style);
        }
        bar.set_message("compacting: rewriting vectors, rebuilding the graph, merging text");
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    };
    let info = writer.compact()?;
    spinner.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        let value = serde_json::json!({
            "vectors_removed": info.vectors_removed,
            "vector_count": info.vector_count,
            "bytes_before": info.bytes_before,
            "bytes_after": info.bytes_after,
            "seconds": seconds,
        });
        println!("{value}");
    } else {
        let mb = |b: u64| b as f64 / 1e6;
        println!(
            "removed {} vectors of deleted documents; {} vectors left; {:.1} MB -> {:.1} MB; {seconds:.1}s",
            info.vectors_removed,
            info.vector_count,
            mb(info.bytes_before),
            mb(info.bytes_after)
        );
    }
    Ok(ExitCode::SUCCESS)
}
