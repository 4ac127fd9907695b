//! Row 2 of the peer comparison: embedding throughput of the dual encoder on the CPU.
//!
//! Images: one batch of `--batch` real radiographs (the first PNGs under `--images`, decoded and
//! preprocessed once), embedded again and again by `DualEncoder::embed_inputs`; images/s.
//! Texts: `--batch` reports from `--reports` (findings + impression), embedded by
//! `DualEncoder::embed_texts` (tokenisation included); texts/s. The inputs and our embeddings
//! are written to `--dump-dir` so the PyTorch peer runs the same inputs and compares outputs.
//! The thread count is `RAYON_NUM_THREADS`, set up as `cxr index` sets it up
//! (`model::threads::one_thread_per_product`: a chunk of the batch per thread).
//!
//! `cargo bench --bench embed -- --model DIR --images DIR --reports FILE --dump-dir DIR`

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Parser;
use cxr_search::ingest::{decode_file, DecodeOptions};
use cxr_search::model::DualEncoder;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    model: PathBuf,
    /// Folder searched (recursively, sorted) for PNG images.
    #[arg(long)]
    images: PathBuf,
    /// JSON lines of reports with `findings` and `impression`.
    #[arg(long)]
    reports: PathBuf,
    #[arg(long)]
    dump_dir: PathBuf,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Minimum measuring time per measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn pngs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            pngs(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "png") {
            out.push(p);
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    cxr_search::model::threads::one_thread_per_product();
    let model = DualEncoder::load(&args.model, &Device::Cpu)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    std::fs::create_dir_all(&args.dump_dir)?;
    let threads = common::threads();
    let min = Duration::from_secs_f64(args.seconds);

    let mut files = Vec::new();
    pngs(&args.images, &mut files)?;
    let mut inputs = Vec::with_capacity(args.batch);
    for path in &files {
        if inputs.len() == args.batch {
            break;
        }
        let decoded = decode_file(path, &DecodeOptions::default())
            .with_context(|| format!("decoding {}", path.display()))?;
        inputs.push(model.prepare_image(&decoded.image));
    }
    if inputs.len() < args.batch {
        bail!(
            "{} holds fewer than {} PNGs",
            args.images.display(),
            args.batch
        );
    }

    let reports = std::fs::read_to_string(&args.reports)
        .with_context(|| format!("reading {}", args.reports.display()))?;
    let mut texts = Vec::with_capacity(args.batch);
    for line in reports.lines() {
        if texts.len() == args.batch {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(line).context("parsing a report line")?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let text = format!("{} {}", field("findings"), field("impression"));
        if !text.trim().is_empty() {
            texts.push(text.trim().to_string());
        }
    }
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();

    let image_emb = model.embed_inputs(&inputs)?;
    let text_emb = model.embed_texts(&text_refs)?;
    let flat = |v: &[Vec<f32>]| v.iter().flatten().copied().collect::<Vec<f32>>();
    common::write_f32(&args.dump_dir.join("image_inputs.f32"), &flat(&inputs))?;
    common::write_f32(
        &args.dump_dir.join("image_embeddings.f32"),
        &flat(&image_emb),
    )?;
    common::write_f32(&args.dump_dir.join("text_embeddings.f32"), &flat(&text_emb))?;
    std::fs::write(
        args.dump_dir.join("texts.json"),
        serde_json::to_vec(&texts)?,
    )?;

    let (n, secs) = common::repeat_for(min, 2, || {
        std::hint::black_box(model.embed_inputs(&inputs).ok());
    });
    common::emit(json!({
        "row": "embed", "impl": "ours", "what": "images", "batch": args.batch,
        "threads": threads, "items": n * args.batch, "seconds": secs,
        "per_s": (n * args.batch) as f64 / secs,
    }));
    let (n, secs) = common::repeat_for(min, 2, || {
        std::hint::black_box(model.embed_texts(&text_refs).ok());
    });
    common::emit(json!({
        "row": "embed", "impl": "ours", "what": "texts", "batch": args.batch,
        "threads": threads, "items": n * args.batch, "seconds": secs,
        "per_s": (n * args.batch) as f64 / secs,
    }));
    Ok(())
}
