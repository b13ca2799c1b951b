//! Validation counts in one pass: the class each voxel's logits decide (as
//! `TargetSpec::decode` does on the probabilities: argmax of the softmax, or each sigmoid
//! region over 0.5 painting its class in order), against the voxel's label, counted per
//! scored region as true positives, false positives and false negatives. On a device only
//! the counts come back to the host.
mod cpu;

use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::metrics::Confusion;

/// Channels a painting decision can take (the device kernel's paint table); an argmax takes
/// any number.
pub const MAX_CHANNELS: usize = 16;
/// Regions one device launch counts; more take several launches.
pub const MAX_REGIONS: usize = 16;
/// Classes a region can name, every value of a u8 label map: its classes are a bit set of
/// `CLASS_WORDS` words.
pub const MAX_CLASSES: usize = 256;
pub const CLASS_WORDS: usize = MAX_CLASSES / 64;

/// A set of classes, bit `c % 64` of word `c / 64` for class `c`.
pub type ClassSet = [u64; CLASS_WORDS];

/// Whether `class` is in `set`.
pub fn in_set(set: &ClassSet, class: u32) -> bool {
    (class as usize) < MAX_CLASSES && (set[class as usize / 64] >> (class % 64)) & 1 == 1
}

/// How a voxel's logits become a class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The channel of the largest softmax probability (the first on a tie).
    Argmax,
    /// Start at class 0; for each channel in order whose sigmoid exceeds 0.5, the class
    /// becomes that channel's `paints` entry (later channels overwrite).
    Paint(Vec<u8>),
}

/// What to decide and what to count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionSpec {
    pub decision: Decision,
    /// Logit channels per voxel.
    pub channels: usize,
    /// Each scored region's classes.
    pub regions: Vec<ClassSet>,
}

impl ConfusionSpec {
    /// A spec counting the `regions` given as class lists.
    pub fn new(decision: Decision, channels: usize, regions: &[Vec<u8>]) -> Result<Self> {
        let masks = regions
            .iter()
            .map(|classes| {
                let mut set = [0u64; CLASS_WORDS];
                for &c in classes {
                    set[c as usize / 64] |= 1 << (c % 64);
                }
                set
            })
            .collect();
        let spec = Self {
            decision,
            channels,
            regions: masks,
        };
        spec.check()?;
        Ok(spec)
    }

    /// Fails unless the channels and regions fit a launch.
    pub fn check(&self) -> Result<()> {
        let paints_fit = match &self.decision {
            Decision::Argmax => true,
            Decision::Paint(p) => p.len() == self.channels && self.channels <= MAX_CHANNELS,
        };
        if self.channels == 0 || !paints_fit {
            return Err(Error::shape(
                "region_confusion",
                format!(
                    "{} channels with decision {:?} (a painting takes one class per channel, \
                     {MAX_CHANNELS} channels at most)",
                    self.channels, self.decision
                ),
            ));
        }
        Ok(())
    }

    /// Fails unless `logits` and `labels` hold the same number of voxels; returns it.
    pub fn voxels(&self, logits: usize, labels: usize) -> Result<usize> {
        self.check()?;
        if logits != labels * self.channels {
            return Err(Error::shape(
                "region_confusion",
                format!(
                    "{logits} logits for {labels} labels of {} channels",
                    self.channels
                ),
            ));
        }
        Ok(labels)
    }

    /// The class `row` (one voxel's logits) decides, computed in f32 with the host's
    /// formulas (`infer::probabilities`, then `TargetSpec::decode`).
    pub fn decide(&self, row: &[f32]) -> u32 {
        match &self.decision {
            Decision::Argmax => {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = row.iter().map(|&l| (l - max).exp()).sum();
                let mut best = 0;
                let mut best_p = (row[0] - max).exp() / sum;
                for (k, &l) in row.iter().enumerate().skip(1) {
                    let p = (l - max).exp() / sum;
                    if p > best_p {
                        (best, best_p) = (k, p);
                    }
                }
                best as u32
            }
            Decision::Paint(paints) => row.iter().zip(paints).fold(0, |class, (&l, &paint)| {
                if crate::tensor_ops::unary::sigmoid(l) > 0.5 {
                    u32::from(paint)
                } else {
                    class
                }
            }),
        }
    }
}

/// The class of a label value: an integer in 0..MAX_CLASSES, else none (it then belongs to
/// no region).
pub fn label_class(label: f64) -> Option<u32> {
    (label >= 0.0 && label < MAX_CLASSES as f64 && label == label.floor()).then_some(label as u32)
}

/// Adds one voxel's outcome to the counts of every region.
pub fn count_voxel(regions: &[ClassSet], pred: u32, truth: Option<u32>, counts: &mut [Confusion]) {
    for (set, c) in regions.iter().zip(counts) {
        let in_pred = in_set(set, pred);
        let in_truth = truth.is_some_and(|t| in_set(set, t));
        match (in_pred, in_truth) {
            (true, true) => c.true_pos += 1,
            (true, false) => c.false_pos += 1,
            (false, true) => c.false_neg += 1,
            (false, false) => c.true_neg += 1,
        }
    }
}

pub trait ConfusionKernel: BackendBase {
    /// Per scored region of `spec`, the counts of the decided classes of `logits`
    /// (`[voxels, channels]`, channels last) against `labels` (`[voxels]` class indices).
    fn region_confusion(
        &self,
        logits: &Self::Storage,
        labels: &Self::Storage,
        spec: &ConfusionSpec,
    ) -> Result<Vec<Confusion>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::{Cpu, Cpu64};

    #[test]
    fn argmax_and_painting_decide_like_the_host() {
        let argmax = ConfusionSpec::new(Decision::Argmax, 3, &[]).unwrap();
        assert_eq!(argmax.decide(&[0.1, 2.0, -1.0]), 1);
        assert_eq!(argmax.decide(&[3.0, 3.0, -1.0]), 0, "first on a tie");
        // BraTS regions WT, TC, ET painting 2, 1, 3.
        let paint = ConfusionSpec::new(Decision::Paint(vec![2, 1, 3]), 3, &[]).unwrap();
        assert_eq!(paint.decide(&[-1.0, -1.0, -1.0]), 0);
        assert_eq!(paint.decide(&[1.0, -1.0, -1.0]), 2);
        assert_eq!(paint.decide(&[1.0, 1.0, -1.0]), 1);
        assert_eq!(paint.decide(&[1.0, 1.0, 1.0]), 3);
        assert_eq!(
            paint.decide(&[-1.0, -1.0, 1.0]),
            3,
            "later regions overwrite"
        );
        // The sigmoid of a tiny positive logit rounds to 0.5 in f32: not over it.
        assert_eq!(paint.decide(&[1e-9, -1.0, -1.0]), 0);
    }

    #[test]
    fn counts_per_region_with_brats_regions() {
        // Internal classes 0..3, regions WT {1,2,3}, TC {1,3}, ET {3}.
        let regions = [vec![1, 2, 3], vec![1, 3], vec![3]];
        let spec = ConfusionSpec::new(Decision::Argmax, 4, &regions).unwrap();
        // Predictions 0, 1, 2, 3, 3 (one-hot logits) against labels 0, 3, 2, 3, 0.
        let mut logits = vec![0.0; 5 * 4];
        for (v, class) in [0, 1, 2, 3, 3].into_iter().enumerate() {
            logits[v * 4 + class] = 5.0;
        }
        let labels = [0.0, 3.0, 2.0, 3.0, 0.0];
        let got = Cpu::new()
            .region_confusion(&logits, &labels.to_vec(), &spec)
            .unwrap();
        let c = |tp, fp, fn_, tn| Confusion {
            true_pos: tp,
            false_pos: fp,
            false_neg: fn_,
            true_neg: tn,
        };
        assert_eq!(got, vec![c(3, 1, 0, 1), c(2, 1, 0, 2), c(1, 1, 1, 2)]);
    }

    #[test]
    fn labels_that_are_not_classes_belong_to_no_region() {
        let spec = ConfusionSpec::new(Decision::Paint(vec![1]), 1, &[vec![1]]).unwrap();
        let got = Cpu64::new()
            .region_confusion(&vec![-1.0; 4], &vec![1.5, -1.0, f64::NAN, 1.0], &spec)
            .unwrap();
        assert_eq!((got[0].false_neg, got[0].true_neg), (1, 3));
    }

    #[test]
    fn bad_specs_and_lengths_are_errors() {
        let wide = ConfusionSpec::new(Decision::Paint(vec![1; 17]), 17, &[]).unwrap_err();
        assert!(wide.to_string().contains("17 channels"), "{wide}");
        let none = ConfusionSpec::new(Decision::Argmax, 0, &[]).unwrap_err();
        assert!(none.to_string().contains("0 channels"), "{none}");
        // An argmax takes any number of channels, and a region any u8 class.
        let any = ConfusionSpec::new(Decision::Argmax, 17, &[vec![255]]).unwrap();
        assert!(in_set(&any.regions[0], 255) && !in_set(&any.regions[0], 254));
        let paints = ConfusionSpec::new(Decision::Paint(vec![1]), 2, &[]).unwrap_err();
        assert!(paints.to_string().contains("region_confusion"), "{paints}");
        let spec = ConfusionSpec::new(Decision::Argmax, 2, &[vec![1]]).unwrap();
        let err = Cpu::new()
            .region_confusion(&vec![0.0; 5], &vec![0.0; 3], &spec)
            .unwrap_err()
            .to_string();
        assert!(err.contains("5 logits for 3 labels"), "{err}");
    }
}
