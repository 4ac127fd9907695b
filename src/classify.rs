//! Zero-shot classification as in ELIXR (Xu et al. 2023) and CLIP: each finding has a positive
//! and a negative prompt ("pleural effusion" / "no pleural effusion"); an image's score is the
//! softmax over its scaled cosine similarities to the two, i.e.
//! `sigmoid(scale * (cos_pos - cos_neg))`. The scale is the model's learnt logit scale
//! (`logit_scale` in `model.safetensors`, exponentiated, at most 100) or CLIP's 100 when the
//! model has none.
//!
//! A side may hold several prompts, embedded and averaged as CLIP's prompt ensembling does
//! (Radford et al. 2021, section 3.1.4: the mean of the unit embeddings, made unit again).
//! Only `normal` uses that: its opposite is not one phrase but any abnormality, so its
//! negative side is every other finding of the vocabulary and its positive side the normal
//! phrase with the denial of each ("no pleural effusion", ...). A single phrase for the
//! opposite ("chest x-ray showing an acute abnormality", which no training text contains)
//! left No Finding at chance: mean NIH valid AUC 0.521 over the three seeds of
//! `tools/seed_spread.sh`, against 0.555 with the ensemble.

use std::path::Path;

use anyhow::{bail, Result};

use crate::model::{DualEncoder, WEIGHTS_FILE};
use crate::train::vocab::{self, NUM_FINDINGS, PHRASES};

/// Findings scored when none are asked for: four common NIH findings and No Finding.
pub const DEFAULT_FINDINGS: [&str; 5] = [
    "Effusion",
    "Cardiomegaly",
    "Atelectasis",
    "Infiltration",
    "No Finding",
];

/// Name of the learnt temperature in a checkpoint written by `cxr train`.
pub const LOGIT_SCALE_TENSOR: &str = "logit_scale";

/// The largest scale, as in CLIP.
pub const MAX_SCALE: f32 = 100.0;

/// One finding to score.
#[derive(Debug, Clone)]
pub struct FindingPrompt {
    /// As asked for (e.g. `Effusion`, `No Finding`).
    pub name: String,
    /// Index in [`vocab::FINDINGS`].
    pub finding: usize,
    /// Prompts asserting the finding, the finding's own phrase first; more than one are
    /// ensembled.
    pub positive: Vec<String>,
    /// Prompts denying it.
    pub negative: Vec<String>,
}

impl FindingPrompt {
    /// The finding's own phrase ("pleural effusion"): what a single prompt for it reads.
    pub fn phrase(&self) -> &str {
        self.positive.first().map_or("", String::as_str)
    }
}

/// Resolves a finding name: NIH labels (`Effusion`, `Pleural_Thickening`, `No Finding`),
/// vocabulary names (`effusion`, `normal`, `nodule/mass`), case-insensitive.
pub fn resolve(name: &str) -> Option<FindingPrompt> {
    let lower = name.trim().to_ascii_lowercase().replace('_', " ");
    let finding = vocab::FINDINGS
        .iter()
        .position(|f| *f == lower)
        .or_else(|| match lower.as_str() {
            "no finding" | "no findings" => Some(vocab::NORMAL),
            "nodule" | "mass" => Some(9),
            "covid" | "covid19" => Some(14),
            l => (0..NUM_FINDINGS).find(|&f| PHRASES[f] == l),
        })?;
    let (positive, negative) = if finding == vocab::NORMAL {
        let abnormal = || (0..NUM_FINDINGS).filter(|&f| f != vocab::NORMAL);
        let mut positive = vec![PHRASES[vocab::NORMAL].to_string()];
        positive.extend(abnormal().map(|f| format!("no {}", PHRASES[f])));
        (
            positive,
            abnormal().map(|f| PHRASES[f].to_string()).collect(),
        )
    } else {
        (
            vec![PHRASES[finding].to_string()],
            vec![format!("no {}", PHRASES[finding])],
        )
    };
    Some(FindingPrompt {
        name: name.trim().to_string(),
        finding,
        positive,
        negative,
    })
}

/// Resolves a list of names, failing on the first unknown one.
pub fn resolve_all<S: AsRef<str>>(names: &[S]) -> Result<Vec<FindingPrompt>> {
    names
        .iter()
        .map(|n| {
            resolve(n.as_ref()).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown finding `{}` (known: {}, or an NIH label)",
                    n.as_ref(),
                    vocab::FINDINGS.join(", ")
                )
            })
        })
        .collect()
}

/// Whether an image with these NIH labels has the finding.
pub fn nih_positive(finding: usize, labels: &[String]) -> bool {
    labels
        .iter()
        .any(|l| vocab::nih_findings(l).contains(&finding))
}

/// The exponentiated logit scale stored with a model, clamped to [`MAX_SCALE`]; `None` when the
/// checkpoint has none.
pub fn stored_scale(model_dir: &Path) -> Option<f32> {
    let path = model_dir.join(WEIGHTS_FILE);
    let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).ok()?;
    let t = tensors.get(LOGIT_SCALE_TENSOR)?;
    let v = t.flatten_all().ok()?.to_vec1::<f32>().ok()?;
    v.first().map(|s| s.exp().min(MAX_SCALE))
}

/// Prompt embeddings, ready to score image embeddings.
pub struct ZeroShot {
    pub prompts: Vec<FindingPrompt>,
    positive: Vec<Vec<f32>>,
    negative: Vec<Vec<f32>>,
    pub scale: f32,
}

/// Scores of one image: per finding, the probability of the positive prompt and the margin
/// `cos_pos - cos_neg` (monotone in it; AUCs use it so saturated probabilities cannot tie).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FindingScore {
    pub finding: String,
    pub probability: f32,
    pub margin: f32,
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Per finding, the embedding of its positive and of its negative side.
pub struct PromptEmbeddings {
    pub positive: Vec<Vec<f32>>,
    pub negative: Vec<Vec<f32>>,
}

/// Embeds each side of each finding: one prompt's unit embedding, or the ensemble of several
/// (see the module notes).
pub fn embed_prompts(
    model: &DualEncoder,
    prompts: &[FindingPrompt],
) -> Result<PromptEmbeddings, crate::model::ModelError> {
    let texts: Vec<&str> = prompts
        .iter()
        .flat_map(|p| p.positive.iter().chain(&p.negative))
        .map(String::as_str)
        .collect();
    let mut embedded = model.embed_texts(&texts)?.into_iter();
    let mut ensemble = |n: usize| -> Vec<f32> {
        let mut sum = vec![0f32; model.dim()];
        for e in embedded.by_ref().take(n) {
            for (s, v) in sum.iter_mut().zip(e) {
                *s += v;
            }
        }
        let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            sum.iter_mut().for_each(|v| *v /= norm);
        }
        sum
    };
    let mut positive = Vec::with_capacity(prompts.len());
    let mut negative = Vec::with_capacity(prompts.len());
    for p in prompts {
        positive.push(ensemble(p.positive.len()));
        negative.push(ensemble(p.negative.len()));
    }
    Ok(PromptEmbeddings { positive, negative })
}

impl ZeroShot {
    pub fn new(model: &DualEncoder, prompts: Vec<FindingPrompt>, scale: f32) -> Result<Self> {
        if prompts.is_empty() {
            bail!("no findings to score");
        }
        let PromptEmbeddings { positive, negative } = embed_prompts(model, &prompts)?;
        Ok(Self {
            positive,
            negative,
            prompts,
            scale,
        })
    }

    /// Scores one unit-length image embedding.
    pub fn score(&self, image: &[f32]) -> Vec<FindingScore> {
        self.prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let margin = dot(image, &self.positive[i]) - dot(image, &self.negative[i]);
                FindingScore {
                    finding: p.name.clone(),
                    probability: 1.0 / (1.0 + (-self.scale * margin).exp()),
                    margin,
                }
            })
            .collect()
    }

    /// AUC per finding of `embeddings` against NIH label lists (`None` where a class is empty).
    pub fn auc(&self, embeddings: &[Vec<f32>], labels: &[Vec<String>]) -> Vec<Option<f64>> {
        let scores: Vec<Vec<FindingScore>> = embeddings.iter().map(|e| self.score(e)).collect();
        self.prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let s: Vec<f32> = scores.iter().map(|s| s[i].margin).collect();
                let y: Vec<bool> = labels.iter().map(|l| nih_positive(p.finding, l)).collect();
                crate::train::metrics::roc_auc(&s, &y)
            })
            .collect()
    }
}

/// Mean of the defined AUCs.
pub fn mean_auc(aucs: &[Option<f64>]) -> Option<f64> {
    let v: Vec<f64> = aucs.iter().flatten().copied().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// A printable table of AUCs, one finding a line, then the mean.
pub fn auc_table(prompts: &[FindingPrompt], aucs: &[Option<f64>]) -> String {
    let mut out = String::new();
    for (p, a) in prompts.iter().zip(aucs) {
        let a = a.map(|a| format!("{a:.3}")).unwrap_or_else(|| "-".into());
        out.push_str(&format!("  {:<20} {a}\n", p.name));
    }
    let m = mean_auc(aucs)
        .map(|a| format!("{a:.3}"))
        .unwrap_or_else(|| "-".into());
    out.push_str(&format!("  {:<20} {m}\n", "mean"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names() {
        let p = resolve("Effusion").unwrap();
        assert_eq!(
            (p.positive.as_slice(), p.negative.as_slice()),
            (
                &["pleural effusion".to_string()][..],
                &["no pleural effusion".to_string()][..]
            )
        );
        // Normal: its phrase and every finding denied, against every finding.
        let n = resolve("No Finding").unwrap();
        assert_eq!(n.finding, vocab::NORMAL);
        assert_eq!(n.phrase(), PHRASES[vocab::NORMAL]);
        assert_eq!(n.positive.len(), NUM_FINDINGS);
        assert_eq!(n.negative.len(), NUM_FINDINGS - 1);
        assert!(n.positive.contains(&"no pleural effusion".to_string()));
        assert!(n.negative.contains(&"cardiomegaly".to_string()));
        assert!(!n.negative.contains(&PHRASES[vocab::NORMAL].to_string()));
        assert_eq!(resolve("pleural_thickening").unwrap().finding, 12);
        assert!(resolve("fracture").is_none());
        assert!(nih_positive(1, &["Effusion".into(), "Mass".into()]));
        assert!(!nih_positive(0, &["Effusion".into()]));
    }
}
