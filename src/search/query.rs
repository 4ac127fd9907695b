//! Reading a text query the way reports are read: what it asks to be present, and what it asks
//! to be absent.
//!
//! "cardiomegaly without pleural effusion" asks for reports that assert cardiomegaly and do not
//! assert an effusion; "no pneumothorax" asks for reports that deny a pneumothorax. The same
//! negation detection that splits reports into asserted and denied text
//! ([`crate::ingest::negation`]) splits the query, so both sides agree on what "no", "without"
//! or "is not seen" cover.

use crate::ingest::negation;

/// A text query split by polarity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedQuery {
    /// What the query asks to be present: the query without its negated scopes. Empty for a
    /// query that only denies ("no pneumothorax").
    pub asserted: String,
    /// The words the query denies, without negation triggers or function words.
    pub denied: Vec<String>,
    /// The denied words that name a finding rather than qualify one: a report asserting any of
    /// them is not what the query asks for. Qualifiers ("left", "large", "pleural") are left
    /// out, so "without large effusion" does not drop every report that mentions "large".
    pub denied_findings: Vec<String>,
}

impl ParsedQuery {
    pub fn parse(query: &str) -> ParsedQuery {
        let denied = negation::negated_words(query);
        if denied.is_empty() {
            // Left exactly as typed: nothing for the analysis to change.
            return ParsedQuery {
                asserted: query.to_string(),
                denied,
                denied_findings: Vec::new(),
            };
        }
        let asserted = negation::asserted_text(query)
            .trim_end_matches('.')
            .to_string();
        let denied_findings = denied
            .iter()
            .filter(|w| !QUALIFIERS.contains(&w.as_str()))
            .cloned()
            .collect();
        ParsedQuery {
            asserted,
            denied,
            denied_findings,
        }
    }

    /// Whether the query denies anything.
    pub fn has_negation(&self) -> bool {
        !self.denied.is_empty()
    }
}

/// Words that qualify a finding (side, size, place, time, certainty) or name a structure
/// without naming a finding; chest report vocabulary, from the laterality, severity and location
/// terms of the report readers (NegEx/pyConText modifiers, CheXpert's labeller phrases).
const QUALIFIERS: &[&str] = &[
    // laterality
    "left",
    "right",
    "bilateral",
    "bilaterally",
    "unilateral",
    "both",
    "sided",
    // severity and size
    "small",
    "tiny",
    "trace",
    "minimal",
    "mild",
    "mildly",
    "moderate",
    "moderately",
    "large",
    "severe",
    "severely",
    "significant",
    "massive",
    "marked",
    "markedly",
    "slight",
    "new",
    "increased",
    "decreased",
    "worsening",
    "improved",
    "residual",
    "persistent",
    "stable",
    "acute",
    "chronic",
    "old",
    "focal",
    "diffuse",
    "patchy",
    "definite",
    "obvious",
    "gross",
    "grossly",
    "evident",
    "apparent",
    "visible",
    "appreciable",
    "abnormal",
    "abnormality",
    "abnormalities",
    "active",
    "any",
    "other",
    // place
    "upper",
    "lower",
    "middle",
    "mid",
    "lobe",
    "lobes",
    "base",
    "bases",
    "basilar",
    "apex",
    "apical",
    "hilar",
    "perihilar",
    "lung",
    "lungs",
    "pulmonary",
    "pleural",
    "cardiac",
    "cardiopulmonary",
    "mediastinal",
    "thoracic",
    "chest",
    "zone",
    "zones",
    "space",
    "spaces",
    "airspace",
    "field",
    "fields",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_query_is_left_as_typed() {
        let q = ParsedQuery::parse("Small left pleural effusion");
        assert_eq!(q.asserted, "Small left pleural effusion");
        assert!(!q.has_negation());
    }

    #[test]
    fn denied_findings_are_split_from_what_is_asked() {
        let q = ParsedQuery::parse("cardiomegaly without large pleural effusion");
        assert_eq!(q.asserted, "cardiomegaly");
        assert_eq!(q.denied, vec!["large", "pleural", "effusion"]);
        assert_eq!(q.denied_findings, vec!["effusion"]);
    }

    #[test]
    fn a_query_that_only_denies() {
        let q = ParsedQuery::parse("no pneumothorax");
        assert_eq!(q.asserted, "");
        assert_eq!(q.denied, vec!["pneumothorax"]);
        assert_eq!(q.denied_findings, vec!["pneumothorax"]);
        let normal = ParsedQuery::parse("no acute cardiopulmonary abnormality");
        assert_eq!(normal.asserted, "");
        assert!(normal.denied_findings.is_empty());
    }
}
