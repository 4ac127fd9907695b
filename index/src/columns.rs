//! Columns of stored fields, for filters: the values one field takes, each distinct value
//! once, and per ordinal which of them (if any) the document has.
//!
//! A reader keeps records as the lines of the docs file and parses fields when asked, which
//! for a filter over every document means a parse per document per query. A column is built
//! by one such pass the first time a field is asked for and kept by the [`Index`](crate::Index)
//! for the queries after (a long-lived process, `cxr eval`): a condition is then evaluated
//! once per distinct value, and a document is a table lookup. For fields with few values
//! (view, sex, modality) a column costs 4 bytes per document.

use std::collections::HashMap;

/// Marks a document without the field (or deleted) in [`FieldColumn::of_ord`].
const NONE: u32 = u32::MAX;

/// The values of one stored field over the documents of an index.
#[derive(Debug, Default)]
pub struct FieldColumn {
    values: Vec<String>,
    of_ord: Vec<u32>,
}

impl FieldColumn {
    /// The distinct values, in the order they first occur.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Which of [`values`](Self::values) document `ord` has; `None` for a document without
    /// the field, a deleted one, or an ordinal past the end.
    pub fn value_of(&self, ord: u32) -> Option<usize> {
        self.of_ord
            .get(ord as usize)
            .copied()
            .filter(|&v| v != NONE)
            .map(|v| v as usize)
    }
}

/// Builds the columns of `names` over ordinals `0..ords`, with `fields(ord, names)` giving a
/// document's values of those fields (`None` when it is deleted), in one pass.
pub(crate) fn build(
    names: &[&str],
    ords: u32,
    fields: impl Fn(u32, &[&str]) -> Option<std::collections::BTreeMap<String, String>>,
) -> Vec<FieldColumn> {
    let mut columns: Vec<FieldColumn> = names
        .iter()
        .map(|_| FieldColumn {
            values: Vec::new(),
            of_ord: vec![NONE; ords as usize],
        })
        .collect();
    let mut ids: Vec<HashMap<String, u32>> = vec![HashMap::new(); names.len()];
    for ord in 0..ords {
        let Some(mut found) = fields(ord, names) else {
            continue;
        };
        for (k, name) in names.iter().enumerate() {
            let Some(value) = found.remove(*name) else {
                continue;
            };
            let column = &mut columns[k];
            let id = *ids[k].entry(value).or_insert_with_key(|v| {
                column.values.push(v.clone());
                (column.values.len() - 1) as u32
            });
            column.of_ord[ord as usize] = id;
        }
    }
    columns
}
