//! Training and validation data from `../shared/data`: NIH ChestX-ray14 images with templated
//! sentences, COVID images with notes, IU reports (text only).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::rng::Rng;
use super::vocab;
use crate::ingest::{self, DecodeOptions};
use crate::model::DualEncoder;

/// Where an item's text comes from.
#[derive(Debug, Clone)]
pub enum ItemText {
    Fixed(String),
    /// NIH labels: a fresh template each time it is drawn ([`vocab::nih_template`]).
    NihTemplate(Vec<String>),
}

impl ItemText {
    pub fn draw(&self, rng: &mut Rng) -> String {
        match self {
            ItemText::Fixed(t) => t.clone(),
            ItemText::NihTemplate(labels) => vocab::nih_template(labels, &mut |n| rng.below(n)),
        }
    }
}

/// An image with its text and labels.
#[derive(Debug, Clone)]
pub struct ImageItem {
    /// Prepared tower input (`prepare_image`).
    pub input: Vec<f32>,
    pub text: ItemText,
    pub labels: Vec<f32>,
}

/// A report without an image.
#[derive(Debug, Clone)]
pub struct TextItem {
    pub text: String,
    pub labels: Vec<f32>,
}

/// Which sources to train on.
#[derive(Debug, Clone, Copy)]
pub struct Sources {
    pub nih: bool,
    pub covid: bool,
    pub iu: bool,
}

impl Sources {
    pub fn parse(s: &str) -> Result<Self> {
        let mut out = Sources {
            nih: false,
            covid: false,
            iu: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "nih" => out.nih = true,
                "covid" => out.covid = true,
                "iu" => out.iu = true,
                p => bail!("unknown source `{p}` (expected nih, covid, iu)"),
            }
        }
        Ok(out)
    }
}

/// One NIH image of `labels.csv`.
#[derive(Debug, Clone)]
pub struct NihRecord {
    /// Relative to `nih1000/`, e.g. `train/1_abnormal/00000003_000.png`.
    pub path: String,
    pub labels: Vec<String>,
}

/// Reads NIH's `labels.csv` (`path`, `Finding Labels` `A|B`, ...).
pub fn read_nih_labels(csv_path: &Path) -> Result<Vec<NihRecord>> {
    let mut reader = csv::Reader::from_path(csv_path)
        .with_context(|| format!("reading {}", csv_path.display()))?;
    let headers = reader.headers()?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let path_col = col("path").or_else(|| col("Image Index"));
    let (Some(path_col), Some(label_col)) = (path_col, col("Finding Labels")) else {
        bail!(
            "{}: needs `path` (or `Image Index`) and `Finding Labels` columns",
            csv_path.display()
        );
    };
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record?;
        out.push(NihRecord {
            path: record.get(path_col).unwrap_or("").to_string(),
            labels: record
                .get(label_col)
                .unwrap_or("")
                .split('|')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        });
    }
    Ok(out)
}

fn decode_and_prepare(paths: &[PathBuf], model: &DualEncoder) -> Vec<Result<Vec<f32>>> {
    paths
        .par_iter()
        .map(|p| {
            let decoded = ingest::decode_file(p, &DecodeOptions::default())
                .with_context(|| format!("decoding {}", p.display()))?;
            Ok(model.prepare_image(&decoded.image))
        })
        .collect()
}

/// The NIH images of one split (`train`, `valid`, `test`): prepared inputs and label lists.
pub fn nih_split(
    data: &Path,
    split: &str,
    model: &DualEncoder,
) -> Result<(Vec<Vec<f32>>, Vec<NihRecord>)> {
    let root = data.join("nih1000");
    let records: Vec<NihRecord> = read_nih_labels(&root.join("labels.csv"))?
        .into_iter()
        .filter(|r| r.path.starts_with(&format!("{split}/")))
        .collect();
    if records.is_empty() {
        bail!(
            "{}: no `{split}/` images listed",
            root.join("labels.csv").display()
        );
    }
    let paths: Vec<PathBuf> = records.iter().map(|r| root.join(&r.path)).collect();
    let inputs = decode_and_prepare(&paths, model)
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok((inputs, records))
}

/// Training items: NIH `train/` only (valid and test are held out), all COVID images, all IU
/// reports.
pub fn training_data(
    data: &Path,
    sources: Sources,
    model: &DualEncoder,
) -> Result<(Vec<ImageItem>, Vec<TextItem>)> {
    let mut images = Vec::new();
    let mut texts = Vec::new();
    if sources.nih {
        let (inputs, records) = nih_split(data, "train", model)?;
        for (input, r) in inputs.into_iter().zip(records) {
            let findings: Vec<usize> = r
                .labels
                .iter()
                .flat_map(|l| vocab::nih_findings(l).iter().copied())
                .collect();
            images.push(ImageItem {
                input,
                labels: vocab::multi_hot(&findings),
                text: ItemText::NihTemplate(r.labels),
            });
        }
    }
    if sources.covid {
        images.extend(covid_items(data, model)?);
    }
    if sources.iu {
        texts = iu_items(&data.join("iu-reports.jsonl"))?;
    }
    Ok((images, texts))
}

/// COVID images whose file exists, with text `finding sentence + clinical notes` (the sentence
/// first: the tower reads 64 tokens and notes open with dates and history, not the radiograph).
fn covid_items(data: &Path, model: &DualEncoder) -> Result<Vec<ImageItem>> {
    let root = data.join("covid");
    let csv_path = root.join("metadata.csv");
    let mut reader = csv::Reader::from_path(&csv_path)
        .with_context(|| format!("reading {}", csv_path.display()))?;
    let headers: Vec<String> = reader
        .byte_headers()?
        .iter()
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(file_col), Some(finding_col)) = (col("filename"), col("finding")) else {
        bail!(
            "{}: needs `filename` and `finding` columns",
            csv_path.display()
        );
    };
    let notes_col = col("clinical_notes");
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for record in reader.byte_records() {
        let record = record?;
        let get = |c: usize| String::from_utf8_lossy(record.get(c).unwrap_or(b"")).into_owned();
        let file = get(file_col);
        let path = root.join("images").join(&file);
        if file.is_empty() || !path.is_file() || !seen.insert(file) {
            continue;
        }
        let findings = vocab::covid_findings(&get(finding_col));
        let notes = notes_col.map(get).unwrap_or_default();
        let sentence = vocab::finding_sentence(&findings);
        let text = if notes.trim().is_empty() {
            sentence
        } else {
            format!("{sentence} {}", notes.trim())
        };
        rows.push((path, text, vocab::multi_hot(&findings)));
    }
    let paths: Vec<PathBuf> = rows.iter().map(|r| r.0.clone()).collect();
    let inputs = decode_and_prepare(&paths, model);
    let mut out = Vec::new();
    for ((_, text, labels), input) in rows.into_iter().zip(inputs) {
        match input {
            Ok(input) => out.push(ImageItem {
                input,
                text: ItemText::Fixed(text),
                labels,
            }),
            Err(e) => eprintln!("cxr: skipped: {e:#}"),
        }
    }
    Ok(out)
}

/// IU reports: text `impression + findings`, labels from MeSH major terms.
fn iu_items(path: &Path) -> Result<Vec<TextItem>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: bad JSON", path.display(), n + 1))?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").trim();
        let report = format!("{} {}", field("impression"), field("findings"));
        let report = report.trim();
        if report.is_empty() {
            continue;
        }
        let mut findings: Vec<usize> = v
            .get("mesh_major")
            .and_then(|m| m.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .flat_map(|m| vocab::iu_findings(m).iter().copied())
                    .collect()
            })
            .unwrap_or_default();
        findings.sort_unstable();
        findings.dedup();
        out.push(TextItem {
            text: report.to_string(),
            labels: vocab::multi_hot(&findings),
        });
    }
    Ok(out)
}

/// Text the tokenizer of a fresh model is learnt from: IU reports, COVID notes and NIH templates.
pub fn vocabulary_corpus(data: &Path) -> Result<Vec<String>> {
    let mut corpus: Vec<String> = iu_items(&data.join("iu-reports.jsonl"))?
        .into_iter()
        .map(|t| t.text)
        .collect();
    let csv_path = data.join("covid/metadata.csv");
    if let Ok(mut reader) = csv::Reader::from_path(&csv_path) {
        let headers = reader.byte_headers()?.clone();
        if let Some(c) = headers.iter().position(|h| h == b"clinical_notes") {
            for r in reader.byte_records().flatten() {
                let notes = String::from_utf8_lossy(r.get(c).unwrap_or(b"")).into_owned();
                if !notes.trim().is_empty() {
                    corpus.push(notes);
                }
            }
        }
    }
    // Every phrase the templates and prompts use, several times so min_frequency keeps them.
    for _ in 0..5 {
        corpus.extend(
            vocab::PHRASES
                .iter()
                .map(|p| format!("chest x-ray showing {p}. no {p}.")),
        );
        corpus.extend(vocab::NORMAL_SENTENCES.iter().map(|s| s.to_string()));
        corpus.push("pulmonary nodule. lung mass. an acute abnormality.".into());
    }
    Ok(corpus)
}
