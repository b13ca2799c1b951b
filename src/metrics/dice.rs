//! Overlap scores from the voxel confusion counts of one binary mask pair.

/// Voxel counts of a predicted mask against a reference mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Confusion {
    pub true_pos: u64,
    pub false_pos: u64,
    pub false_neg: u64,
    pub true_neg: u64,
}

impl Confusion {
    pub fn count(pred: &[bool], truth: &[bool]) -> Self {
        let mut c = Confusion::default();
        for (&p, &t) in pred.iter().zip(truth) {
            match (p, t) {
                (true, true) => c.true_pos += 1,
                (true, false) => c.false_pos += 1,
                (false, true) => c.false_neg += 1,
                (false, false) => c.true_neg += 1,
            }
        }
        c
    }

    /// 2·TP / (2·TP + FP + FN); 1 when both masks are empty (the BraTS rule).
    pub fn dice(&self) -> f64 {
        let denom = 2 * self.true_pos + self.false_pos + self.false_neg;
        ratio(2 * self.true_pos, denom)
    }

    /// TP / (TP + FN); 1 when the reference is empty, as there is nothing to miss.
    pub fn sensitivity(&self) -> f64 {
        ratio(self.true_pos, self.true_pos + self.false_neg)
    }

    /// TN / (TN + FP); 1 when the reference covers every voxel.
    pub fn specificity(&self) -> f64 {
        ratio(self.true_neg, self.true_neg + self.false_pos)
    }
}

fn ratio(num: u64, denom: u64) -> f64 {
    if denom == 0 {
        1.0
    } else {
        num as f64 / denom as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(n: usize, on: &[usize]) -> Vec<bool> {
        (0..n).map(|i| on.contains(&i)).collect()
    }

    #[test]
    fn hand_computed_scores() {
        // truth 6 voxels, prediction 4, overlap 3, in 20 voxels: TP 3, FP 1, FN 3, TN 13.
        let truth = mask(20, &[0, 1, 2, 3, 4, 5]);
        let pred = mask(20, &[3, 4, 5, 10]);
        let c = Confusion::count(&pred, &truth);
        assert_eq!(
            c,
            Confusion {
                true_pos: 3,
                false_pos: 1,
                false_neg: 3,
                true_neg: 13
            }
        );
        assert_eq!(c.dice(), 0.6);
        assert_eq!(c.sensitivity(), 0.5);
        assert_eq!(c.specificity(), 13.0 / 14.0);
    }

    #[test]
    fn empty_masks_follow_the_brats_rule() {
        let empty = mask(8, &[]);
        let some = mask(8, &[2]);
        let both = Confusion::count(&empty, &empty);
        assert_eq!(
            (both.dice(), both.sensitivity(), both.specificity()),
            (1.0, 1.0, 1.0)
        );
        let missed = Confusion::count(&empty, &some);
        assert_eq!((missed.dice(), missed.sensitivity()), (0.0, 0.0));
        let spurious = Confusion::count(&some, &empty);
        assert_eq!((spurious.dice(), spurious.specificity()), (0.0, 7.0 / 8.0));
    }
}
