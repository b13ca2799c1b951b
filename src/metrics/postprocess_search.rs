//! `evaluate --find-postprocessing`: picks the postprocessing steps that raise the Dice of
//! predictions against their references, as nnU-Net decides its postprocessing on the
//! cross-validation's predictions, plus the small-region rule of nnU-Net's BraTS entries.
//!
//! 1. Keep the largest component of the whole foreground, if that raises the mean Dice over
//!    the regions and lowers none (nnU-Net's rule).
//! 2. With more than one region, for each in turn: keep its largest component, if that
//!    raises its own Dice (nnU-Net's rule).
//! 3. For each region in turn: remove it whole below a voxel count, the count of a fixed
//!    ladder that gives it the highest Dice, if that raises its Dice (Isensee et al., BraTS 2020: an enhancing tumour
//!    predicted tiny is more often a false alarm than a real one, and an empty reference
//!    scores Dice 1 only against an empty prediction).
//!
//! Each kept step applies to the trials after it. Dice is measured on every case at once,
//! held in memory cropped to the box around its foreground (which changes no Dice and no
//! component).
use super::evaluate::{postprocess_values, CasePair, CasePlan, EvalOptions, Reference};
use super::Confusion;
use crate::error::Result;
use crate::infer::Postprocess;
use std::path::Path;

/// The voxel counts tried for removing a region whole.
pub const MIN_VOLUME_LADDER: [usize; 9] = [10, 20, 50, 100, 200, 300, 500, 750, 1000];

/// One tried step and what it did to the Dice it was judged on.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Trial {
    /// The step, as `--postprocess` takes it.
    pub step: String,
    /// The region whose mean Dice decided, or "all regions".
    pub judged_on: String,
    pub dice_before: f64,
    pub dice_after: f64,
    pub kept: bool,
}

/// The steps chosen, with every trial.
#[derive(Clone, Debug)]
pub struct PostprocessChoice {
    pub chosen: Postprocess,
    pub trials: Vec<Trial>,
    /// Mean Dice per scored region (the report's order) before and after the chosen steps.
    pub regions: Vec<String>,
    pub dice_before: Vec<f64>,
    pub dice_after: Vec<f64>,
}

/// A case cut to the box around the foreground of its prediction and reference.
struct Cropped {
    pred: Vec<u8>,
    truth: Vec<u8>,
    dims: [usize; 3],
}

/// The box (inclusive lower, exclusive upper corner) holding every voxel `keep` accepts.
fn bounding_box(
    dims: [usize; 3],
    keep: impl Fn(usize) -> bool,
) -> Option<([usize; 3], [usize; 3])> {
    let mut lo = dims;
    let mut hi = [0; 3];
    let mut i = 0;
    for z in 0..dims[2] {
        for y in 0..dims[1] {
            for x in 0..dims[0] {
                if keep(i) {
                    for (a, v) in [x, y, z].into_iter().enumerate() {
                        lo[a] = lo[a].min(v);
                        hi[a] = hi[a].max(v + 1);
                    }
                }
                i += 1;
            }
        }
    }
    (hi[0] > 0).then_some((lo, hi))
}

fn crop(pair: CasePair, pred_background: u8, truth_background: u8) -> Cropped {
    let dims = pair.grid.dims;
    let foreground =
        |i: usize| pair.pred[i] != pred_background || pair.truth[i] != truth_background;
    let Some((lo, hi)) = bounding_box(dims, foreground) else {
        return Cropped {
            pred: vec![pred_background],
            truth: vec![truth_background],
            dims: [1; 3],
        };
    };
    let size = [0, 1, 2].map(|a| hi[a] - lo[a]);
    let mut pred = Vec::with_capacity(size.iter().product());
    let mut truth = Vec::with_capacity(pred.capacity());
    for z in lo[2]..hi[2] {
        for y in lo[1]..hi[1] {
            let row = (z * dims[1] + y) * dims[0];
            pred.extend_from_slice(&pair.pred[row + lo[0]..row + hi[0]]);
            truth.extend_from_slice(&pair.truth[row + lo[0]..row + hi[0]]);
        }
    }
    Cropped {
        pred,
        truth,
        dims: size,
    }
}

/// Finds the postprocessing for the predictions in `pred`, scored against `reference` as
/// `opts` says (its own `postprocess` is ignored).
pub fn find_postprocessing(
    pred: &Path,
    reference: &Reference,
    opts: &EvalOptions,
) -> Result<PostprocessChoice> {
    let opts = EvalOptions {
        postprocess: None,
        ..*opts
    };
    let plan = CasePlan::new(pred, reference, &opts)?;
    let pred_background = plan.pred_spec.classes()[0].file_value;
    let truth_background = reference.spec().classes()[0].file_value;
    let cases: Vec<Cropped> = plan
        .cases
        .iter()
        .map(|id| Ok(crop(plan.read(id)?, pred_background, truth_background)))
        .collect::<Result<_>>()?;
    let mean_dice = |steps: &Postprocess| -> Result<Vec<f64>> {
        let mut sums = vec![0.0; plan.regions.len()];
        for case in &cases {
            let pred = postprocess_values(steps, plan.pred_spec, &case.pred, case.dims)?;
            for (sum, (p, t)) in sums.iter_mut().zip(&plan.regions) {
                let pm: Vec<bool> = pred.iter().map(|v| p.labels.contains(v)).collect();
                let tm: Vec<bool> = case.truth.iter().map(|v| t.labels.contains(v)).collect();
                *sum += Confusion::count(&pm, &tm).dice();
            }
        }
        Ok(sums.iter().map(|s| s / cases.len() as f64).collect())
    };
    let overall = |d: &[f64]| d.iter().sum::<f64>() / d.len() as f64;
    let parse = |text: &str| Postprocess::parse(text, plan.pred_spec);
    let names: Vec<String> = plan.regions.iter().map(|(_, t)| t.name.clone()).collect();

    let mut chosen = Postprocess::default();
    let before = mean_dice(&chosen)?;
    let mut current = before.clone();
    let mut trials = Vec::new();

    let step = parse("largest")?;
    let after = mean_dice(&step)?;
    let kept =
        overall(&after) > overall(&current) && after.iter().zip(&current).all(|(a, b)| a >= b);
    trials.push(Trial {
        step: step.to_string(),
        judged_on: "all regions".into(),
        dice_before: overall(&current),
        dice_after: overall(&after),
        kept,
    });
    if kept {
        chosen = step;
        current = after;
    }

    if plan.regions.len() > 1 {
        for (r, (p, _)) in plan.regions.iter().enumerate() {
            let candidate = chosen.then(&parse(&format!("largest:{}", p.name))?);
            let after = mean_dice(&candidate)?;
            let kept = after[r] > current[r];
            trials.push(Trial {
                step: format!("largest:{}", p.name),
                judged_on: names[r].clone(),
                dice_before: current[r],
                dice_after: after[r],
                kept,
            });
            if kept {
                chosen = candidate;
                current = after;
            }
        }
    }

    for (r, (p, _)) in plan.regions.iter().enumerate() {
        // The ladder's best count (the smallest on a tie) is the trial of this region.
        let mut best: Option<(Postprocess, Vec<f64>, String)> = None;
        for n in MIN_VOLUME_LADDER {
            let text = format!("min-volume:{}:{n}", p.name);
            let candidate = chosen.then(&parse(&text)?);
            let after = mean_dice(&candidate)?;
            if best.as_ref().is_none_or(|(_, d, _)| after[r] > d[r]) {
                best = Some((candidate, after, text));
            }
        }
        let (candidate, after, text) = best.expect("the ladder is not empty");
        let kept = after[r] > current[r];
        trials.push(Trial {
            step: text,
            judged_on: names[r].clone(),
            dice_before: current[r],
            dice_after: after[r],
            kept,
        });
        if kept {
            chosen = candidate;
            current = after;
        }
    }

    Ok(PostprocessChoice {
        chosen,
        trials,
        regions: names,
        dice_before: before,
        dice_after: current,
    })
}

impl PostprocessChoice {
    /// The trials and the choice, aligned for a terminal.
    pub fn to_table(&self) -> String {
        use std::fmt::Write as _;
        let width = self
            .trials
            .iter()
            .map(|t| t.step.len())
            .max()
            .unwrap_or(0)
            .max(4);
        let mut out = format!(
            "{:<width$} {:<12} {:>11} {:>10}  kept\n",
            "step", "judged on", "Dice before", "Dice after"
        );
        for t in &self.trials {
            let _ = writeln!(
                out,
                "{:<width$} {:<12} {:>11.4} {:>10.4}  {}",
                t.step,
                t.judged_on,
                t.dice_before,
                t.dice_after,
                if t.kept { "yes" } else { "no" }
            );
        }
        let dice: Vec<String> = self
            .regions
            .iter()
            .zip(self.dice_before.iter().zip(&self.dice_after))
            .map(|(r, (b, a))| format!("{r} {b:.4} -> {a:.4}"))
            .collect();
        let _ = writeln!(
            out,
            "chosen: --postprocess {} (mean Dice {})",
            self.chosen,
            dice.join(", ")
        );
        out
    }
}
