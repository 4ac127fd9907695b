//! Row 1 of the peer comparison: DICOM decode + preprocess to model input, images/s per file.
//!
//! For every file: `cxr_search::ingest::decode_file` with the decode options `cxr index` uses
//! (`min_side` from the model, so JPEG 2000 stops at the wavelet level the model needs), then
//! `cxr_search::model::to_model_input` with the model's `PreprocessConfig`, repeated for at
//! least `--seconds`. With one thread
//! (`RAYON_NUM_THREADS=1`) the loop is sequential; with more, copies of the file are decoded
//! in parallel by rayon's global pool, as the indexer's decode workers do. The model input of
//! each file is written to `--dump-dir` so the Python peer can check it computes the same thing.
//!
//! `cargo bench --bench decode -- --dicom-dir DIR --model DIR [--seconds S] [--dump-dir DIR]`

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use cxr_search::ingest::{decode_file, DecodeOptions};
use cxr_search::model::{to_model_input, ModelConfig};
use rayon::prelude::*;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Folder of DICOM files (every regular file in it is measured).
    #[arg(long)]
    dicom_dir: PathBuf,
    /// Model folder whose config.json gives the preprocessing.
    #[arg(long)]
    model: PathBuf,
    /// Minimum measuring time per file.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Where to write each file's model input (`<stem>.f32`).
    #[arg(long)]
    dump_dir: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let config_path = args.model.join("config.json");
    let config: ModelConfig = serde_json::from_slice(
        &std::fs::read(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .with_context(|| format!("parsing {}", config_path.display()))?;
    let pre = config.image.preprocess().clone();
    // As `cxr index` decodes: no finer than the model's preprocessing needs.
    let opts = DecodeOptions {
        min_side: Some(pre.min_source_side()),
        ..DecodeOptions::default()
    };
    let threads = common::threads();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.dicom_dir)
        .with_context(|| format!("listing {}", args.dicom_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    if let Some(dir) = &args.dump_dir {
        std::fs::create_dir_all(dir)?;
    }
    let min = Duration::from_secs_f64(args.seconds);
    for path in &files {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let run = || -> Result<Vec<f32>, String> {
            let decoded = decode_file(path, &opts).map_err(|e| e.to_string())?;
            Ok(to_model_input(&decoded.image, &pre))
        };
        // Warm-up (page cache, allocator) and the reference output.
        let first = match run() {
            Ok(x) => x,
            Err(e) => {
                common::emit(json!({"row": "decode", "impl": "ours", "file": name,
                    "threads": threads, "error": e}));
                continue;
            }
        };
        if let Some(dir) = &args.dump_dir {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            common::write_f32(&dir.join(format!("{stem}.f32")), &first)?;
        }
        let (images, secs) = if threads <= 1 {
            common::repeat_for(min, 3, || {
                std::hint::black_box(run().ok());
            })
        } else {
            // Rounds of `4 * threads` decodes in parallel until the time is up.
            let start = Instant::now();
            let mut n = 0usize;
            while n < 3 * threads || start.elapsed() < min {
                let round = 4 * threads;
                (0..round).into_par_iter().for_each(|_| {
                    std::hint::black_box(run().ok());
                });
                n += round;
            }
            (n, start.elapsed().as_secs_f64())
        };
        // Where the time goes (one thread): decode_file alone, to_model_input alone.
        let (mut decode_ms, mut pre_ms) = (0.0, 0.0);
        if threads <= 1 {
            let reps = images.clamp(1, 5);
            for _ in 0..reps {
                let t = Instant::now();
                let decoded = decode_file(path, &opts).ok();
                decode_ms += t.elapsed().as_secs_f64() * 1e3 / reps as f64;
                let t = Instant::now();
                if let Some(d) = &decoded {
                    std::hint::black_box(to_model_input(&d.image, &pre));
                }
                pre_ms += t.elapsed().as_secs_f64() * 1e3 / reps as f64;
            }
        }
        common::emit(json!({
            "row": "decode", "impl": "ours", "file": name, "threads": threads,
            "images": images, "seconds": secs, "images_per_s": images as f64 / secs,
            "decode_ms": decode_ms, "preprocess_ms": pre_ms,
        }));
    }
    Ok(())
}
