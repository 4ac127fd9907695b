//! ROC AUC as the Mann-Whitney U statistic: the probability that a random positive scores above a
//! random negative, ties counting one half.

/// AUC of `scores` against binary `labels`; `None` when either class is empty.
pub fn roc_auc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len());
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    // Mid-ranks (average rank within each group of tied scores), 1-based.
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0f64; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = mid;
        }
        i = j + 1;
    }
    let rank_sum: f64 = (0..scores.len())
        .filter(|&k| labels[k])
        .map(|k| ranks[k])
        .sum();
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_by_hand_with_ties() {
        // positives 0.9, 0.5, 0.3; negatives 0.5, 0.2.
        // pairs: (0.9>0.5) 1, (0.9>0.2) 1, (0.5=0.5) 0.5, (0.5>0.2) 1, (0.3<0.5) 0, (0.3>0.2) 1
        // = 4.5 / 6 = 0.75
        let s = [0.9, 0.5, 0.3, 0.5, 0.2];
        let l = [true, true, true, false, false];
        assert!((roc_auc(&s, &l).unwrap() - 0.75).abs() < 1e-12);
        // all tied: 0.5
        assert_eq!(roc_auc(&[1.0; 4], &[true, false, true, false]), Some(0.5));
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
        // perfect and inverted
        assert_eq!(roc_auc(&[0.9, 0.1], &[true, false]), Some(1.0));
        assert_eq!(roc_auc(&[0.1, 0.9], &[true, false]), Some(0.0));
    }
}
