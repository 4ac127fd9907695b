//! `cxr classify`: ELIXR's zero-shot classification by positive and negative prompts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use cxr_search::model;

use crate::{embed_files, load_model, ModelArgs};

#[derive(Args)]
pub(crate) struct ClassifyArgs {
    /// Image files or folders (walked recursively).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Comma-separated findings [default: Effusion,Cardiomegaly,Atelectasis,Infiltration,No
    /// Finding]; NIH labels or vocabulary names (normal, nodule/mass, covid-19, ...).
    #[arg(long)]
    findings: Option<String>,
    /// NIH-style labels CSV (`Image Index` or `path`, `Finding Labels`): print AUC per finding.
    #[arg(long)]
    labels: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Images per inference batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// One JSON object per image: `scores` (each finding's probability) and `margins` (its
    /// positive prompt's cosine minus its negative one's: what AUCs and image search by
    /// findings read).
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_classify(args: ClassifyArgs) -> Result<ExitCode> {
    use cxr_search::classify;
    let names: Vec<String> = match &args.findings {
        Some(f) => f
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        None => classify::DEFAULT_FINDINGS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let prompts = classify::resolve_all(&names)?;
    let model_dir = args
        .model
        .model
        .clone()
        .unwrap_or_else(model::default_model_dir);
    let model = load_model(&args.model)?;
    let scale = classify::stored_scale(&model_dir).unwrap_or(classify::MAX_SCALE);
    let zs = classify::ZeroShot::new(&model, prompts.clone(), scale)?;

    let mut ids = Vec::new();
    let mut embeddings = Vec::new();
    let failed = embed_files(&model, &args.images, args.batch_size, |files, batch| {
        ids.extend_from_slice(files);
        embeddings.extend(batch);
        Ok(())
    })?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    match &args.labels {
        None => {
            if !args.json {
                write!(out, "{:<40}", "image")?;
                for p in &prompts {
                    write!(out, " {:>12}", p.name)?;
                }
                writeln!(out)?;
            }
            for (path, emb) in ids.iter().zip(&embeddings) {
                let scores = zs.score(emb);
                if args.json {
                    let by_finding = |value: fn(&classify::FindingScore) -> f32| {
                        scores
                            .iter()
                            .map(|s| (s.finding.clone(), serde_json::json!(value(s))))
                            .collect::<serde_json::Map<String, serde_json::Value>>()
                    };
                    let v = serde_json::json!({
                        "image": path.display().to_string(),
                        "scores": by_finding(|s| s.probability),
                        "margins": by_finding(|s| s.margin),
                    });
                    writeln!(out, "{v}")?;
                } else {
                    write!(out, "{:<40}", file_name(path))?;
                    for s in &scores {
                        write!(out, " {:>12.4}", s.probability)?;
                    }
                    writeln!(out)?;
                }
            }
        }
        Some(csv_path) => {
            let records = cxr_search::train::data::read_nih_labels(csv_path)?;
            let by_name: std::collections::HashMap<String, Vec<String>> = records
                .into_iter()
                .map(|r| (file_name(Path::new(&r.path)), r.labels))
                .collect();
            let mut kept_emb = Vec::new();
            let mut kept_labels = Vec::new();
            let mut unlabelled = 0usize;
            for (path, emb) in ids.iter().zip(&embeddings) {
                match by_name.get(&file_name(path)) {
                    Some(l) => {
                        kept_emb.push(emb.clone());
                        kept_labels.push(l.clone());
                    }
                    None => unlabelled += 1,
                }
            }
            if kept_emb.is_empty() {
                bail!("{}: labels no image given", csv_path.display());
            }
            if unlabelled > 0 {
                eprintln!(
                    "cxr: {unlabelled} images have no row in {}",
                    csv_path.display()
                );
            }
            let aucs = zs.auc(&kept_emb, &kept_labels);
            if args.json {
                let per: serde_json::Map<String, serde_json::Value> = prompts
                    .iter()
                    .zip(&aucs)
                    .map(|(p, a)| (p.name.clone(), serde_json::json!(a)))
                    .collect();
                let v = serde_json::json!({
                    "images": kept_emb.len(),
                    "scale": scale,
                    "auc": per,
                    "mean_auc": classify::mean_auc(&aucs),
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "zero-shot ROC AUC over {} images (scale {scale:.1}):",
                    kept_emb.len()
                )?;
                write!(out, "{}", classify::auc_table(&prompts, &aucs))?;
            }
        }
    }
    Ok(if embeddings.is_empty() {
        eprintln!("cxr: no image could be classified ({failed} failed)");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
