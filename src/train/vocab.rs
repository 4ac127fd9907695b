//! One finding vocabulary shared by the three training sources, the label-aware soft targets and
//! zero-shot classification, plus the sentence templates that turn labels into training text.
//!
//! | finding | phrase (templates, prompts) | NIH label | COVID `finding` token | IU MeSH major (first component) |
//! |---|---|---|---|---|
//! | normal | no acute cardiopulmonary abnormality | No Finding | No Finding | normal |
//! | effusion | pleural effusion | Effusion | - | Pleural Effusion |
//! | cardiomegaly | cardiomegaly | Cardiomegaly | - | Cardiomegaly |
//! | atelectasis | atelectasis | Atelectasis | - | Pulmonary Atelectasis |
//! | infiltration | pulmonary infiltrate | Infiltration | ARDS | Opacity, Infiltrate, Airspace Disease, Density |
//! | consolidation | consolidation | Consolidation | - | Consolidation |
//! | pneumonia | pneumonia | Pneumonia | COVID-19, SARS, Pneumonia, Pneumocystis, bacterial/viral/fungal organisms, Lipoid, Influenza, Varicella | Pneumonia |
//! | edema | pulmonary edema | Edema | - | Pulmonary Edema, Pulmonary Congestion |
//! | pneumothorax | pneumothorax | Pneumothorax | - | Pneumothorax |
//! | nodule/mass | lung nodule or mass | Nodule, Mass | - | Nodule, Mass |
//! | emphysema | emphysema | Emphysema | - | Emphysema, Pulmonary Emphysema, Pulmonary Disease, Chronic Obstructive |
//! | fibrosis | pulmonary fibrosis | Fibrosis | - | Pulmonary Fibrosis |
//! | pleural thickening | pleural thickening | Pleural_Thickening | - | Thickening |
//! | hernia | hiatal hernia | Hernia | - | Hernia, Hiatal |
//! | covid-19 | covid-19 pneumonia | - | COVID-19 | - |
//!
//! Anything else (e.g. IU's Calcified Granuloma, devices, spine) maps to nothing; an item whose
//! labels all map to nothing has an empty label vector, which the loss treats as "unknown"
//! (instance targets only, never a label-similarity positive).

/// The findings, in vector order.
pub const FINDINGS: [&str; 15] = [
    "normal",
    "effusion",
    "cardiomegaly",
    "atelectasis",
    "infiltration",
    "consolidation",
    "pneumonia",
    "edema",
    "pneumothorax",
    "nodule/mass",
    "emphysema",
    "fibrosis",
    "pleural thickening",
    "hernia",
    "covid-19",
];

pub const NUM_FINDINGS: usize = FINDINGS.len();

/// Index of the `normal` finding.
pub const NORMAL: usize = 0;

/// The phrase of each finding, used in training templates and as the positive zero-shot prompt.
pub const PHRASES: [&str; NUM_FINDINGS] = [
    "no acute cardiopulmonary abnormality",
    "pleural effusion",
    "cardiomegaly",
    "atelectasis",
    "pulmonary infiltrate",
    "consolidation",
    "pneumonia",
    "pulmonary edema",
    "pneumothorax",
    "lung nodule or mass",
    "emphysema",
    "pulmonary fibrosis",
    "pleural thickening",
    "hiatal hernia",
    "covid-19 pneumonia",
];

/// Findings of an NIH ChestX-ray14 label (`No Finding`, `Effusion`, `Pleural_Thickening`, ...).
pub fn nih_findings(label: &str) -> &'static [usize] {
    match label.trim() {
        "No Finding" => &[0],
        "Effusion" => &[1],
        "Cardiomegaly" => &[2],
        "Atelectasis" => &[3],
        "Infiltration" => &[4],
        "Consolidation" => &[5],
        "Pneumonia" => &[6],
        "Edema" => &[7],
        "Pneumothorax" => &[8],
        "Nodule" | "Mass" => &[9],
        "Emphysema" => &[10],
        "Fibrosis" => &[11],
        "Pleural_Thickening" | "Pleural Thickening" => &[12],
        "Hernia" => &[13],
        _ => &[],
    }
}

/// The phrase an NIH label reads as in a template (Nodule and Mass keep their own words).
pub fn nih_phrase(label: &str) -> Option<&'static str> {
    match label.trim() {
        "Nodule" => Some("pulmonary nodule"),
        "Mass" => Some("lung mass"),
        l => nih_findings(l).first().map(|&f| PHRASES[f]),
    }
}

/// Findings of one token of the COVID collection's `finding` column (`COVID-19`,
/// `Pneumonia/Viral/COVID-19`, `COVID-19, ARDS`, `Streptococcus`, `No Finding`).
pub fn covid_findings(finding: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for token in finding.split(['/', ',']).map(str::trim) {
        let lower = token.to_ascii_lowercase();
        let found: &[usize] = match lower.as_str() {
            "" | "viral" | "bacterial" | "fungal" | "aspiration" => &[],
            "no finding" | "normal" => &[0],
            "covid-19" | "covid19" => &[14, 6],
            "ards" => &[4],
            "todo" | "unknown" => &[],
            // Every other entry of the collection is a pneumonia organism or kind: SARS,
            // Pneumocystis, Streptococcus, Klebsiella, Mycoplasma Bacterial Pneumonia,
            // Legionella, Lipoid, Varicella, E.Coli, Influenza, ...
            _ => &[6],
        };
        out.extend_from_slice(found);
    }
    // A bare "Bacterial"/"Viral" is still a pneumonia in this collection.
    if out.is_empty() && !finding.trim().is_empty() {
        let lower = finding.to_ascii_lowercase();
        if lower.contains("bacterial") || lower.contains("viral") || lower.contains("fungal") {
            out.push(6);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Findings of one IU MeSH major term (`Pleural Effusion/right/small`): its first component.
pub fn iu_findings(mesh: &str) -> &'static [usize] {
    let head = mesh.split('/').next().unwrap_or("").trim();
    match head.to_ascii_lowercase().as_str() {
        "normal" => &[0],
        "pleural effusion" => &[1],
        "cardiomegaly" => &[2],
        "pulmonary atelectasis" => &[3],
        "opacity" | "infiltrate" | "airspace disease" | "density" => &[4],
        "consolidation" => &[5],
        "pneumonia" => &[6],
        "pulmonary edema" | "pulmonary congestion" => &[7],
        "pneumothorax" => &[8],
        "nodule" | "mass" => &[9],
        "emphysema" | "pulmonary emphysema" | "pulmonary disease, chronic obstructive" => &[10],
        "pulmonary fibrosis" => &[11],
        "thickening" => &[12],
        "hernia, hiatal" => &[13],
        _ => &[],
    }
}

/// A multi-hot vector over [`FINDINGS`].
pub fn multi_hot(findings: &[usize]) -> Vec<f32> {
    let mut v = vec![0.0; NUM_FINDINGS];
    for &f in findings {
        v[f] = 1.0;
    }
    v
}

/// Sentences that stand for a normal study in NIH templates.
pub const NORMAL_SENTENCES: [&str; 3] = [
    "no acute cardiopulmonary abnormality.",
    "normal chest x-ray. no acute cardiopulmonary abnormality.",
    "the lungs are clear. no acute cardiopulmonary abnormality.",
];

/// Findings that templates may mention as absent ("no pleural effusion."): the common ones, so
/// the text tower sees the negated zero-shot prompts during training.
pub const NEGATABLE: [usize; 8] = [1, 2, 3, 4, 5, 7, 8, 9];

/// The templated report of an NIH image (documented in the model card):
///
/// - normal: one of [`NORMAL_SENTENCES`];
/// - abnormal: `chest x-ray showing A.`, `chest x-ray showing A and B.`,
///   `chest x-ray showing A, B and C.` (labels in the table's order, phrases from [`nih_phrase`]),
///   or the same list alone (`A and B.`) or as `findings consistent with A and B.`, uniformly;
///
/// then, with probability 1/2 each, up to two `no X.` sentences naming findings from
/// [`NEGATABLE`] the image does not have. `pick(n)` returns a uniform index below `n`.
pub fn nih_template(labels: &[String], pick: &mut dyn FnMut(usize) -> usize) -> String {
    let phrases: Vec<&str> = labels.iter().filter_map(|l| nih_phrase(l)).collect();
    let normal = labels.iter().any(|l| l.trim() == "No Finding") || phrases.is_empty();
    let mut text = if normal {
        NORMAL_SENTENCES[pick(NORMAL_SENTENCES.len())].to_string()
    } else {
        let list = match phrases.len() {
            1 => phrases[0].to_string(),
            n => format!("{} and {}", phrases[..n - 1].join(", "), phrases[n - 1]),
        };
        // Bare phrases too: most mentions of a finding in these texts are negated ones ("no
        // pleural effusion."), so without positive bare phrases a query or prompt that just
        // names the finding lands among the images that lack it (seen: zero-shot AUC 0.29 for
        // effusion after one epoch).
        match pick(3) {
            0 => format!("chest x-ray showing {list}."),
            1 => format!("{list}."),
            _ => format!("findings consistent with {list}."),
        }
    };
    let present: Vec<usize> = labels
        .iter()
        .flat_map(|l| nih_findings(l).iter().copied())
        .collect();
    let absent: Vec<usize> = NEGATABLE
        .iter()
        .copied()
        .filter(|f| !present.contains(f))
        .collect();
    let mut used = Vec::new();
    for _ in 0..2 {
        if pick(2) == 0 || absent.is_empty() {
            continue;
        }
        let f = absent[pick(absent.len())];
        if !used.contains(&f) {
            used.push(f);
            text.push_str(&format!(" no {}.", PHRASES[f]));
        }
    }
    text
}

/// The sentence for a COVID image: its finding's phrases, e.g. `chest x-ray showing covid-19
/// pneumonia.`, or the normal sentence.
pub fn finding_sentence(findings: &[usize]) -> String {
    if findings.is_empty() || findings.contains(&NORMAL) {
        return NORMAL_SENTENCES[0].to_string();
    }
    // covid-19 pneumonia already says pneumonia.
    let phrases: Vec<&str> = findings
        .iter()
        .filter(|&&f| !(f == 6 && findings.contains(&14)))
        .map(|&f| PHRASES[f])
        .collect();
    format!("chest x-ray showing {}.", phrases.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings() {
        assert_eq!(nih_findings("Pleural_Thickening"), &[12]);
        assert_eq!(covid_findings("Pneumonia/Viral/COVID-19"), vec![6, 14]);
        assert_eq!(covid_findings("COVID-19, ARDS"), vec![4, 6, 14]);
        assert_eq!(covid_findings("No Finding"), vec![0]);
        assert_eq!(covid_findings("Klebsiella"), vec![6]);
        assert_eq!(iu_findings("Pleural Effusion/right/small"), &[1]);
        assert!(iu_findings("Calcified Granuloma/lung").is_empty());
        assert_eq!(
            finding_sentence(&[6, 14]),
            "chest x-ray showing covid-19 pneumonia."
        );
    }

    #[test]
    fn templates() {
        let labels = vec!["Effusion".to_string(), "Atelectasis".to_string()];
        let mut never = |_n: usize| 0;
        assert_eq!(
            nih_template(&labels, &mut never),
            "chest x-ray showing pleural effusion and atelectasis."
        );
        let mut always = |n: usize| n - 1;
        assert!(nih_template(&labels, &mut always)
            .starts_with("findings consistent with pleural effusion and atelectasis."));
        let mut once = |n: usize| usize::from(n == 3);
        assert_eq!(
            nih_template(&labels, &mut once),
            "pleural effusion and atelectasis."
        );
        let t = nih_template(&["No Finding".to_string()], &mut always);
        assert!(t.starts_with("the lungs are clear."), "{t}");
        assert!(t.contains(" no lung nodule or mass."), "{t}");
    }
}
