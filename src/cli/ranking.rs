//! What `cxr search` and `cxr eval` share about ranking a text query: the fusion flags, and the
//! rerank stage (its flags, loading the reranker, and what it could not score).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use cxr_search::model::{self, DualEncoder};
use cxr_search::privacy;
use cxr_search::rerank::{self, Reranker};
use cxr_search::search::{self, SearchOptions};

use crate::ModelArgs;

/// How a text query's signals are chosen and combined.
#[derive(Args)]
pub(crate) struct RankingArgs {
    /// How image-vector and report-text results are combined: `convex` (weighted sum of
    /// normalised scores) or `rrf` (reciprocal rank fusion).
    #[arg(long, value_enum, default_value_t = FusionKind::Convex)]
    fusion: FusionKind,
    /// Weight of the image-vector list in convex fusion; the report text gets 1 minus it.
    #[arg(long, default_value_t = 0.5, value_parser = unit_interval)]
    vector_weight: f32,
    /// Signals a text query uses: `vector`, `text`, or both.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "vector,text")]
    signals: Vec<SignalKind>,
    /// How an example image is compared with the indexed ones: `findings` (the model's
    /// zero-shot evidence for each finding it knows: images with the same findings) or
    /// `appearance` (the whole embedding: images that look alike).
    #[arg(long, value_enum, default_value_t = ImageMatchKind::Findings)]
    image_match: ImageMatchKind,
}

#[derive(Clone, Copy, ValueEnum)]
enum ImageMatchKind {
    Findings,
    Appearance,
}

#[derive(Clone, Copy, ValueEnum)]
enum FusionKind {
    Convex,
    Rrf,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum SignalKind {
    Vector,
    Text,
}

impl RankingArgs {
    pub(crate) fn apply(&self, opts: &mut SearchOptions) {
        opts.fusion = match self.fusion {
            FusionKind::Convex => search::Fusion::Convex {
                vector_weight: self.vector_weight,
            },
            FusionKind::Rrf => search::Fusion::Rrf,
        };
        opts.signals = search::Signals {
            vector: self.signals.contains(&SignalKind::Vector),
            text: self.signals.contains(&SignalKind::Text),
        };
        opts.image_match = match self.image_match {
            ImageMatchKind::Findings => search::ImageMatch::Findings,
            ImageMatchKind::Appearance => search::ImageMatch::Appearance,
        };
    }
}

fn unit_interval(s: &str) -> Result<f32, String> {
    let w: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&w) {
        Ok(w)
    } else {
        Err(format!("{w} is not between 0 and 1"))
    }
}

/// The second stage of text queries (`--rerank N`).
#[derive(Args)]
pub(crate) struct RerankArgs {
    /// Re-order the top N hits of a text query by the reranker's image-text match probability
    /// (reads each candidate's image again; needs --image-root).
    #[arg(long, value_name = "N")]
    pub(crate) rerank: Option<usize>,
    /// Reranker folder [default: reranker/ inside the model folder]
    #[arg(long, value_name = "DIR", requires = "rerank")]
    reranker: Option<PathBuf>,
    /// Folders the index's images were indexed from (stored paths are relative to them); the
    /// first that holds a candidate's file is used.
    #[arg(long = "image-root", value_name = "DIR", num_args = 1.., requires = "rerank")]
    image_roots: Vec<PathBuf>,
}

/// A loaded reranker with what `--rerank` asked for.
pub(crate) struct RerankSetup<'a> {
    pub(crate) reranker: Reranker<'a>,
    pub(crate) depth: usize,
    pub(crate) roots: Vec<PathBuf>,
    pub(crate) dir: PathBuf,
}

/// Resolves `--rerank`: `None` when not asked for (or when the index has no images to score,
/// which is said); an error naming the fix when it cannot run.
pub(crate) fn open_reranker<'a>(
    args: &RerankArgs,
    index_dir: &Path,
    model_args: &ModelArgs,
    model: Option<&'a DualEncoder>,
) -> Result<Option<RerankSetup<'a>>> {
    let Some(depth) = args.rerank else {
        return Ok(None);
    };
    if depth == 0 {
        bail!("--rerank 0: give the number of top hits to rerank, e.g. --rerank 20");
    }
    if privacy::read_settings(index_dir)?.is_some_and(|s| s.deidentify) {
        bail!(
            "{} was built with --deidentify: it stores no image paths (only salted hashes of \
             them), so --rerank cannot read the candidates' images; search it without --rerank",
            index_dir.display()
        );
    }
    let Some(model) = model else {
        eprintln!(
            "cxr: {} holds no images (report-only documents): --rerank has nothing to score; \
             first-stage order kept",
            index_dir.display()
        );
        return Ok(None);
    };
    let model_dir = model_args
        .model
        .clone()
        .unwrap_or_else(model::default_model_dir);
    let dir = args
        .reranker
        .clone()
        .unwrap_or_else(|| rerank::default_dir(&model_dir));
    let reranker = Reranker::load(&dir, model, model.device())
        .with_context(|| format!("loading reranker {}", dir.display()))?;
    if args.image_roots.is_empty() {
        bail!(
            "--rerank reads each candidate's image again: give --image-root with the folder(s) \
             {} was built from (its stored paths are relative to them)",
            index_dir.display()
        );
    }
    for root in &args.image_roots {
        if !root.is_dir() {
            bail!("--image-root {}: not a folder", root.display());
        }
    }
    Ok(Some(RerankSetup {
        reranker,
        depth,
        roots: args.image_roots.clone(),
        dir,
    }))
}

/// Prints what the second stage could not do: each unreadable document once, report-only
/// documents once.
#[derive(Default)]
pub(crate) struct NoticePrinter {
    seen: std::collections::HashSet<String>,
    report_only_said: bool,
}

impl NoticePrinter {
    pub(crate) fn print(&mut self, notices: &[search::RerankNotice]) {
        for n in notices {
            match n {
                search::RerankNotice::Unreadable { id, reason } => {
                    if self.seen.insert(id.clone()) {
                        eprintln!(
                            "cxr: document {id}: not reranked ({reason}); kept at its \
                             first-stage rank"
                        );
                    }
                }
                search::RerankNotice::ReportOnly { .. } => {
                    if !self.report_only_said {
                        self.report_only_said = true;
                        eprintln!(
                            "cxr: report-only documents have no image to rerank; they keep \
                             their first-stage rank"
                        );
                    }
                }
            }
        }
    }
}
