//! Segmentation metrics: Dice, HD95, sensitivity, specificity, with the BraTS conventions.
//!
//! Label arrays are x fastest with dims [x, y, z] and spacing in mm, like
//! `data::LabelVolume`. A region is a set of label values (BraTS WT/TC/ET) or one class.
pub mod dice;
pub mod distance;
pub mod evaluate;
pub mod postprocess_search;
pub mod report;

pub use dice::Confusion;
pub use report::{CaseScores, EvalReport};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// HD95 in mm when exactly one of the masks is empty: the diagonal of the BraTS volume,
/// sqrt(240² + 240² + 155²), as the legacy BraTS scoring (and nnU-Net) uses.
pub const LEGACY_EMPTY_HD95: f64 = 373.12866;

/// The HD95 of a region where exactly one of prediction and reference is empty (there is
/// no surface to measure from), a penalty as large as the image allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmptyHd95 {
    /// `LEGACY_EMPTY_HD95` on every image: the BraTS challenge's rule, for its data.
    Brats,
    /// The diagonal of the reference image's extent in mm (size times voxel size per
    /// axis): the largest distance two voxels of that image can have.
    ImageDiagonal,
}

impl EmptyHd95 {
    /// The value in mm for an image of `dims` voxels of `spacing` mm.
    pub fn mm(self, dims: [usize; 3], spacing: [f64; 3]) -> f64 {
        match self {
            EmptyHd95::Brats => LEGACY_EMPTY_HD95,
            EmptyHd95::ImageDiagonal => (0..3)
                .map(|i| (dims[i] as f64 * spacing[i]).powi(2))
                .sum::<f64>()
                .sqrt(),
        }
    }
}

/// The empty-mask HD95 an evaluation used: the rule and its value for each case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmptyHd95Used {
    pub rule: EmptyHd95,
    pub mm: std::collections::BTreeMap<String, f64>,
}

/// A named set of label values scored as one foreground mask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    pub labels: Vec<u8>,
}

impl Region {
    pub fn new(name: impl Into<String>, labels: &[u8]) -> Self {
        Self {
            name: name.into(),
            labels: labels.to_vec(),
        }
    }

    fn mask(&self, labels: &[u8]) -> Vec<bool> {
        labels.iter().map(|l| self.labels.contains(l)).collect()
    }
}

/// The four scores of one region in one case (HD95 in mm).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub dice: f64,
    pub hd95: f64,
    pub sensitivity: f64,
    pub specificity: f64,
}

/// Scores a predicted mask against a reference mask. Both empty: Dice 1, HD95 0; exactly
/// one empty: Dice 0, HD95 `empty_hd95` (mm).
pub fn score_masks(
    pred: &[bool],
    truth: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    empty_hd95: f64,
) -> Scores {
    let c = Confusion::count(pred, truth);
    let pred_empty = c.true_pos + c.false_pos == 0;
    let truth_empty = c.true_pos + c.false_neg == 0;
    let hd95 = match (pred_empty, truth_empty) {
        (true, true) => 0.0,
        (false, false) => distance::hd95(pred, truth, dims, spacing)
            .expect("both masks are non-empty, so both have surface voxels"),
        _ => empty_hd95,
    };
    Scores {
        dice: c.dice(),
        hd95,
        sensitivity: c.sensitivity(),
        specificity: c.specificity(),
    }
}

/// Scores every region of one case, with BraTS's `LEGACY_EMPTY_HD95` for a region where
/// exactly one mask is empty. `pred` and `truth` are label maps on the same grid.
pub fn score_case(
    case: &str,
    pred: &[u8],
    truth: &[u8],
    dims: [usize; 3],
    spacing: [f64; 3],
    regions: &[Region],
) -> Result<CaseScores> {
    let pairs: Vec<(&Region, &Region)> = regions.iter().map(|r| (r, r)).collect();
    score_case_across(case, pred, truth, dims, spacing, LEGACY_EMPTY_HD95, &pairs)
}

/// Scores one case whose prediction and reference use different label conventions: each
/// pair is one region as the prediction's file values and as the reference's, scored under
/// the reference's name. `empty_hd95` (mm) is the HD95 where exactly one mask is empty.
pub fn score_case_across(
    case: &str,
    pred: &[u8],
    truth: &[u8],
    dims: [usize; 3],
    spacing: [f64; 3],
    empty_hd95: f64,
    regions: &[(&Region, &Region)],
) -> Result<CaseScores> {
    let voxels: usize = dims.iter().product();
    if pred.len() != voxels || truth.len() != voxels {
        return Err(Error::data(
            case,
            format!(
                "scoring needs prediction and reference of {dims:?} = {voxels} voxels, got {} and {}",
                pred.len(),
                truth.len()
            ),
        ));
    }
    if let Some(s) = spacing.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(Error::data(
            case,
            format!("voxel spacing {s} is not a positive size"),
        ));
    }
    let regions = regions
        .iter()
        .map(|(p, t)| {
            let scores = score_masks(&p.mask(pred), &t.mask(truth), dims, spacing, empty_hd95);
            (t.name.clone(), scores)
        })
        .collect();
    Ok(CaseScores {
        case: case.to_string(),
        regions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_combine_labels_and_empty_rules_apply() {
        let dims = [4, 4, 2];
        let mut truth = vec![0u8; 32];
        let mut pred = vec![0u8; 32];
        // Truth: labels 1 and 2 (WT 4 voxels, ET none). Prediction: label 2 only on 2 of them
        // plus label 3 (ET) on one voxel.
        truth[5] = 1;
        truth[6] = 2;
        truth[9] = 2;
        truth[10] = 1;
        pred[6] = 2;
        pred[9] = 2;
        pred[21] = 3;
        let regions = [
            Region::new("WT", &[1, 2, 3]),
            Region::new("TC", &[1, 3]),
            Region::new("ET", &[3]),
            Region::new("none", &[7]),
        ];
        let c = score_case("c1", &pred, &truth, dims, [1.0; 3], &regions).unwrap();
        let wt = c.regions["WT"];
        assert_eq!(wt.dice, 2.0 * 2.0 / (3.0 + 4.0));
        assert_eq!(wt.sensitivity, 0.5);
        assert_eq!(wt.specificity, 27.0 / 28.0);
        let et = c.regions["ET"];
        assert_eq!((et.dice, et.hd95), (0.0, LEGACY_EMPTY_HD95));
        // TC: truth (1,1,0) and (2,2,0), prediction (1,1,1): pooled distances 1, 1, sqrt 3.
        let tc = c.regions["TC"];
        assert_eq!(tc.dice, 0.0);
        assert!(
            (tc.hd95 - (1.0 + 0.9 * (3f64.sqrt() - 1.0))).abs() < 1e-12,
            "{}",
            tc.hd95
        );
        let none = c.regions["none"];
        assert_eq!((none.dice, none.hd95), (1.0, 0.0));
    }

    #[test]
    fn the_empty_mask_hd95_is_bratss_or_the_image_diagonal() {
        assert_eq!(
            EmptyHd95::Brats.mm([30, 26, 10], [1.0, 1.0, 5.0]),
            LEGACY_EMPTY_HD95
        );
        // 30 x 26 x 50 mm: sqrt(900 + 676 + 2500).
        let diagonal = EmptyHd95::ImageDiagonal.mm([30, 26, 10], [1.0, 1.0, 5.0]);
        assert!((diagonal - 4076f64.sqrt()).abs() < 1e-12, "{diagonal}");
        let (empty, full) = ([false; 8], [true; 8]);
        let s = score_masks(&empty, &full, [2, 2, 2], [1.0; 3], diagonal);
        assert_eq!((s.dice, s.hd95), (0.0, diagonal));
        let s = score_masks(&full, &empty, [2, 2, 2], [1.0; 3], 7.5);
        assert_eq!((s.dice, s.hd95), (0.0, 7.5));
    }

    #[test]
    fn mismatched_sizes_and_bad_spacing_are_errors() {
        let r = [Region::new("WT", &[1])];
        let err = score_case("c7", &[0; 7], &[0; 8], [2, 2, 2], [1.0; 3], &r).unwrap_err();
        assert!(
            err.to_string().contains("c7") && err.to_string().contains("got 7 and 8"),
            "{err}"
        );
        let err = score_case("c7", &[0; 8], &[0; 8], [2, 2, 2], [1.0, 0.0, 1.0], &r).unwrap_err();
        assert!(err.to_string().contains("spacing"), "{err}");
    }
}
