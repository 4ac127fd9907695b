//! `cxr index`: walks the inputs, reads the reports table, and runs the batch indexer into a
//! new or existing index folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use cxr_index::{CreateOptions, IndexSpec, IndexWriter, VectorStorage};
use cxr_search::embed::{self, IndexJob};
use cxr_search::ingest::reports::{ReportTable, TableColumns};
use cxr_search::ingest::{walk, DecodeOptions};
use cxr_search::privacy::{DeidentifySettings, IndexPrivacy};

use crate::{decode_options_for, load_model, ModelArgs};

#[derive(Args)]
pub(crate) struct IndexArgs {
    /// Files or folders to index (walked recursively). None: index the reports alone.
    inputs: Vec<PathBuf>,
    /// Index folder to create, or to add to.
    #[arg(long, short)]
    out: PathBuf,
    /// Reports or per-image metadata: .jsonl or .csv, one record per report.
    #[arg(long)]
    reports: Option<PathBuf>,
    /// Column of the reports table that names the image, study or report [default: detected]
    #[arg(long)]
    key: Option<String>,
    /// Comma-separated report columns to search [default: findings,impression | report,text |
    /// clinical_notes]; `none` for metadata only.
    #[arg(long)]
    text: Option<String>,
    #[command(flatten)]
    model: ModelArgs,
    /// Images per inference batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Commit after this many new documents [default: 5000, or a tenth of the active vector
    /// segment's rows when that is more, as each commit rewrites that segment].
    #[arg(long)]
    commit_every: Option<usize>,
    /// Refuse images larger than this many pixels.
    #[arg(long, default_value_t = DecodeOptions::default().max_pixels)]
    max_pixels: u64,
    /// How a new index stores vectors: f32, or f16 (half the vector file and the memory a
    /// search maps; see benches/README.md for the recall it costs) [default: f32]. Chosen when
    /// the index is created; later runs follow it.
    #[arg(long)]
    vector_storage: Option<VectorStorage>,
    /// Vectors per sealed segment of a new index: what bounds this command's memory (about
    /// 2 KiB per vector of the open segment at dimension 128); each segment costs a query one
    /// more graph search [default: 500000]. Chosen when the index is created.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    segment_rows: Option<u64>,
    /// HNSW links per node and layer (M) of a new index: more links, better recall at a given
    /// search effort, a larger graph and a slower build [default: 16]. Chosen when the index is
    /// created.
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u16).range(2..=255))]
    hnsw_m: Option<u16>,
    /// Candidate list size while inserting into the HNSW graph of a new index: build time grows
    /// about in proportion, and so, up to a point, does the graph's quality (benches/README.md
    /// measures 100 against 200) [default: 200]. Chosen when the index is created.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    ef_construction: Option<u16>,
    /// Replace or drop identifying metadata (DICOM PS3.15 basic profile): UIDs and ids become
    /// salted-hash UIDs, paths are hashed, age, sex and dates are dropped. Chosen when the
    /// index is created; later runs follow it.
    #[arg(long)]
    deidentify: bool,
    /// With --deidentify: keep age and sex (for filters).
    #[arg(long, requires = "deidentify")]
    retain_patient_characteristics: bool,
    /// With --deidentify: keep study dates (for filters).
    #[arg(long, requires = "deidentify")]
    retain_dates: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

pub(crate) fn cmd_index(args: IndexArgs) -> Result<ExitCode> {
    if args.inputs.is_empty() && args.reports.is_none() {
        bail!("nothing to index: give image files or folders, or --reports");
    }
    for input in &args.inputs {
        if !input.exists() {
            bail!("{}: no such file or folder", input.display());
        }
    }
    let model = load_model(&args.model)?;
    if !args.inputs.is_empty() && !model.has_image_tower() {
        bail!(
            "model {} ({}) embeds text only and cannot index images; pass --model with an \
             image or dual model, or index reports alone with --reports",
            model.name(),
            model.layout()
        );
    }
    let reports = match &args.reports {
        Some(path) => {
            let columns = TableColumns {
                key: args.key.clone(),
                text: args.text.as_deref().map(|t| {
                    t.split(',')
                        .map(str::trim)
                        .filter(|c| !c.is_empty() && *c != "none")
                        .map(String::from)
                        .collect()
                }),
            };
            let table = ReportTable::load(path, &columns)?;
            if table.duplicate_keys > 0 {
                eprintln!(
                    "cxr: {}: {} records repeat an earlier key and were ignored",
                    path.display(),
                    table.duplicate_keys
                );
            }
            Some(table)
        }
        None => None,
    };

    let mut writer = if args.out.join(cxr_index::MANIFEST_FILE).exists() {
        let writer = IndexWriter::open(&args.out)
            .with_context(|| format!("opening index {}", args.out.display()))?;
        if writer.spec().model_fingerprint != model.fingerprint() {
            bail!(
                "{} was built by model {} ({}), not by {} ({}); pass --model with that model or \
                 choose another --out",
                args.out.display(),
                writer.spec().model_name,
                writer.spec().model_fingerprint,
                model.name(),
                model.fingerprint()
            );
        }
        if let Some(asked) = args.vector_storage {
            if asked != writer.vector_storage() {
                bail!(
                    "{} stores {} vectors, chosen when it was created; drop --vector-storage {asked} \
                     or choose another --out",
                    args.out.display(),
                    writer.vector_storage()
                );
            }
        }
        let hnsw = writer.hnsw_params();
        for (flag, asked, built) in [
            ("--hnsw-m", args.hnsw_m, hnsw.max_nb_connection),
            (
                "--ef-construction",
                args.ef_construction,
                hnsw.ef_construction,
            ),
        ] {
            if let Some(asked) = asked.filter(|&a| usize::from(a) != built) {
                bail!(
                    "{} was built with {flag} {built}, chosen when it was created; drop {flag} \
                     {asked} or choose another --out",
                    args.out.display()
                );
            }
        }
        if let Some(asked) = args.segment_rows {
            if asked != writer.segment_rows() {
                bail!(
                    "{} seals segments at {} vectors, chosen when it was created; drop \
                     --segment-rows {asked} or choose another --out",
                    args.out.display(),
                    writer.segment_rows()
                );
            }
        }
        writer
    } else {
        let spec = IndexSpec {
            dim: model.dim(),
            model_fingerprint: model.fingerprint().to_string(),
            model_name: model.name().to_string(),
        };
        let mut options = CreateOptions {
            vector_storage: args.vector_storage.unwrap_or_default(),
            ..CreateOptions::default()
        };
        if let Some(rows) = args.segment_rows {
            options.segment_rows = rows;
        }
        if let Some(m) = args.hnsw_m {
            options.hnsw.max_nb_connection = m.into();
        }
        if let Some(ef) = args.ef_construction {
            options.hnsw.ef_construction = ef.into();
        }
        IndexWriter::create_with(&args.out, spec, options)
            .with_context(|| format!("creating index {}", args.out.display()))?
    };
    let requested = args.deidentify.then_some(DeidentifySettings {
        deidentify: true,
        retain_patient_characteristics: args.retain_patient_characteristics,
        retain_dates: args.retain_dates,
    });
    let privacy = IndexPrivacy::load_or_create(&args.out, requested, !writer.is_empty())?;

    // The archive is walked twice: once here to count its files (the progress bar's length)
    // and report what cannot be walked, then again by the indexer as it goes, so that its file
    // list is never held whole (a path per file: about 100 bytes).
    let mut file_count = 0usize;
    let mut walk_failures = 0usize;
    // The index folder itself is never walked, should it lie inside an input.
    for item in walk::walk_except(&args.inputs, Some(&args.out)) {
        match item {
            Ok(_) => file_count += 1,
            Err((path, reason)) => {
                eprintln!("cxr: {}: {reason}", path.display());
                writer.record_failure(&privacy.stored_path(&path.to_string_lossy()), &reason)?;
                walk_failures += 1;
            }
        }
    }
    let roots: Vec<Arc<Path>> = args.inputs.iter().map(|r| r.as_path().into()).collect();
    let no_root: Arc<Path> = Path::new("").into();
    // What cannot be walked was reported by the count.
    let files = walk::walk_except(&args.inputs, Some(&args.out)).filter_map(move |item| {
        let path = item.ok()?;
        let root = roots
            .iter()
            .find(|r| path.starts_with(r))
            .unwrap_or(&no_root);
        Some((path, root.clone()))
    });
    let job = IndexJob {
        files: Box::new(files),
        file_count,
        reports: reports.as_ref(),
        decode: DecodeOptions {
            max_pixels: args.max_pixels,
            patient_salt: privacy.salt().to_string(),
            ..decode_options_for(Some(&model))
        },
        privacy: &privacy,
        batch_size: args.batch_size,
        commit_every: args.commit_every,
        progress: !args.quiet && !args.json,
    };
    let mut on_failure = |path: &Path, reason: &str| {
        eprintln!("cxr: {}: {reason}", path.display());
    };
    let mut on_notice = |path: &Path, note: &str| {
        eprintln!("cxr: {}: {note}", path.display());
    };
    let mut summary = embed::run(job, &model, &mut writer, &mut on_failure, &mut on_notice)?;
    summary.failed += walk_failures;
    let total = writer.len();
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        value["documents"] = total.into();
        println!("{value}");
    } else {
        let rate = summary.indexed as f64 / summary.seconds.max(1e-9);
        println!(
            "indexed {} images ({rate:.1}/s) and {} report-only documents; skipped {} already \
             indexed; failed {}; {:.1}s; the index holds {total} documents",
            summary.indexed, summary.report_only, summary.skipped, summary.failed, summary.seconds
        );
        if summary.replaced > 0 {
            println!(
                "{} files had changed since they were indexed and were indexed again",
                summary.replaced
            );
        }
        if summary.duplicates > 0 {
            println!(
                "{} files were copies of indexed files and were skipped",
                summary.duplicates
            );
        }
        if summary.unmatched_reports > 0 {
            println!("{} reports matched no image", summary.unmatched_reports);
        }
        if summary.failed > 0 {
            println!(
                "failures are listed in {}",
                args.out.join(cxr_index::ERRORS_FILE).display()
            );
        }
    }
    let nothing = summary.indexed + summary.report_only + summary.skipped + summary.duplicates == 0;
    Ok(if nothing {
        eprintln!("cxr: nothing could be indexed");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
