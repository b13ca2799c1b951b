//! `evaluate --find-postprocessing`: picks the postprocessing steps that raise the Dice of
//! predictions against their references, as nnU-Net decides its postprocessing on the
//! cross-validation's predictions, plus the small-region rule of nnU-Net's BraTS entries.
//!
//! 1. Keep the largest component of the whole foreground, if that raises the mean Dice over
//!    the regions and lowers none (nnU-Net's rule).
//! 2. With more than one region, for each in turn: keep its largest component, if that
//!    raises its own Dice (nnU-Net's rule).
//! 3. For each region in turn: remove it whole below a voxel count, the count of a fixed
//!    ladder that gives it the highest Dice without lowering another region's, if that
//!    raises its Dice (Isensee et al., BraTS 2020: an enhancing tumour
//!    predicted tiny is more often a false alarm than a real one, and an empty reference
//!    scores Dice 1 only against an empty prediction).
//!
//! Each kept step applies to the trials after it. Dice is measured on every case at once,
//! held in memory cropped to the box around its foreground (which changes no Dice and no
//! component) as the steps kept so far left it.
use super::evaluate::{CasePair, CasePlan, EvalOptions, Reference};
use super::Confusion;
use crate::data::labels::LabelSpec;
use crate::error::Result;
use crate::infer::Postprocess;
use rayon::prelude::*;
use std::path::Path;

/// The voxel counts tried for removing a region whole.
pub const MIN_VOLUME_LADDER: [usize; 9] = [10, 20, 50, 100, 200, 300, 500, 750, 1000];

/// One tried step and what it did to the Dice it was judged on.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// A case cut to the box around the foreground of its prediction and reference: the
/// prediction as internal classes, the reference as file values.
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

/// `pair` cropped, its prediction turned into internal classes of `spec`.
fn crop(pair: CasePair, spec: &LabelSpec, truth_background: u8) -> Cropped {
    let pred_background = spec.classes()[0].file_value;
    let dims = pair.grid.dims;
    let foreground =
        |i: usize| pair.pred[i] != pred_background || pair.truth[i] != truth_background;
    let (lo, hi) = bounding_box(dims, foreground).unwrap_or(([0; 3], [1; 3]));
    let size = [0, 1, 2].map(|a| hi[a] - lo[a]);
    let mut pred = Vec::with_capacity(size.iter().product());
    let mut truth = Vec::with_capacity(pred.capacity());
    for z in lo[2]..hi[2] {
        for y in lo[1]..hi[1] {
            let row = (z * dims[1] + y) * dims[0];
            pred.extend(
                pair.pred[row + lo[0]..row + hi[0]]
                    .iter()
                    .map(|&v| spec.class_of_value(v as f32).unwrap_or(0)),
            );
            truth.extend_from_slice(&pair.truth[row + lo[0]..row + hi[0]]);
        }
    }
    Cropped {
        pred,
        truth,
        dims: size,
    }
}

/// The scored regions as lookup tables: per internal class of the prediction and per file
/// value of the reference, whether it is in each region.
struct Membership {
    pred: Vec<Vec<bool>>,
    truth: Vec<Vec<bool>>,
}

impl Membership {
    fn new(plan: &CasePlan) -> Self {
        let spec = plan.pred_spec;
        let pred = spec
            .classes()
            .iter()
            .map(|c| {
                plan.regions
                    .iter()
                    .map(|(p, _)| p.labels.contains(&c.file_value))
                    .collect()
            })
            .collect();
        let truth = (0..=255u8)
            .map(|v| {
                plan.regions
                    .iter()
                    .map(|(_, t)| t.labels.contains(&v))
                    .collect()
            })
            .collect();
        Self { pred, truth }
    }

    /// Each region's Dice of one case's prediction `pred` (classes) against `truth`.
    fn dice(&self, pred: &[u8], truth: &[u8]) -> Vec<f64> {
        let regions = self.truth[0].len();
        let mut counts = vec![Confusion::default(); regions];
        for (&p, &t) in pred.iter().zip(truth) {
            let (pm, tm) = (&self.pred[p as usize], &self.truth[t as usize]);
            for (c, (&a, &b)) in counts.iter_mut().zip(pm.iter().zip(tm)) {
                match (a, b) {
                    (true, true) => c.true_pos += 1,
                    (true, false) => c.false_pos += 1,
                    (false, true) => c.false_neg += 1,
                    (false, false) => {}
                }
            }
        }
        counts.iter().map(Confusion::dice).collect()
    }
}

/// The cases as the steps kept so far left them, and their mean Dice per region.
struct Search {
    cases: Vec<Cropped>,
    membership: Membership,
    dice: Vec<f64>,
}

impl Search {
    /// One more step applied to every case: the cases it leaves and their mean Dice.
    fn trial(&self, step: &Postprocess) -> (Vec<Vec<u8>>, Vec<f64>) {
        let results: Vec<(Vec<u8>, Vec<f64>)> = self
            .cases
            .par_iter()
            .map(|case| {
                let mut pred = case.pred.clone();
                step.apply(&mut pred, case.dims);
                let dice = self.membership.dice(&pred, &case.truth);
                (pred, dice)
            })
            .collect();
        let mut mean = vec![0.0; self.dice.len()];
        for (_, dice) in &results {
            for (m, d) in mean.iter_mut().zip(dice) {
                *m += d / results.len() as f64;
            }
        }
        (results.into_iter().map(|(p, _)| p).collect(), mean)
    }

    /// Makes a trial's cases the current ones.
    fn keep(&mut self, cases: Vec<Vec<u8>>, dice: Vec<f64>) {
        for (case, pred) in self.cases.iter_mut().zip(cases) {
            case.pred = pred;
        }
        self.dice = dice;
    }

    /// Records the trial of `step`, judged on region `r`'s Dice, whose cases and Dice are
    /// `outcome`; keeps the step (appending it to `chosen`) if it raised that Dice.
    fn judge_on_region(
        &mut self,
        step: Postprocess,
        r: usize,
        name: &str,
        (cases, after): (Vec<Vec<u8>>, Vec<f64>),
        chosen: &mut Postprocess,
        trials: &mut Vec<Trial>,
    ) {
        let kept = after[r] > self.dice[r];
        trials.push(Trial {
            step: step.to_string(),
            judged_on: name.to_string(),
            dice_before: self.dice[r],
            dice_after: after[r],
            kept,
        });
        if kept {
            *chosen = chosen.then(&step);
            self.keep(cases, after);
        }
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
    let truth_background = reference.spec().classes()[0].file_value;
    let cases: Vec<Cropped> = plan
        .cases
        .iter()
        .map(|id| Ok(crop(plan.read(id)?, plan.pred_spec, truth_background)))
        .collect::<Result<_>>()?;
    let membership = Membership::new(&plan);
    let mut search = Search {
        dice: vec![0.0; plan.regions.len()],
        cases,
        membership,
    };
    let (_, before) = search.trial(&Postprocess::default());
    search.dice = before.clone();
    let overall = |d: &[f64]| d.iter().sum::<f64>() / d.len() as f64;
    let parse = |text: &str| Postprocess::parse(text, plan.pred_spec, plan.predicts);
    let names: Vec<String> = plan.regions.iter().map(|(_, t)| t.name.clone()).collect();
    let mut chosen = Postprocess::default();
    let mut trials = Vec::new();

    let step = parse("largest")?;
    let (cases, after) = search.trial(&step);
    let now = &search.dice;
    let kept = overall(&after) > overall(now) && after.iter().zip(now).all(|(a, b)| a >= b);
    trials.push(Trial {
        step: step.to_string(),
        judged_on: "all regions".into(),
        dice_before: overall(now),
        dice_after: overall(&after),
        kept,
    });
    if kept {
        chosen = chosen.then(&step);
        search.keep(cases, after);
    }

    if plan.regions.len() > 1 {
        for (r, (p, _)) in plan.regions.iter().enumerate() {
            let step = parse(&format!("largest:{}", p.name))?;
            let outcome = search.trial(&step);
            search.judge_on_region(step, r, &names[r], outcome, &mut chosen, &mut trials);
        }
    }

    for (r, (p, _)) in plan.regions.iter().enumerate() {
        // The ladder's count that scores the region best (the smallest on a tie) without
        // lowering another region: a region dropped whole passes its voxels to the one
        // around it, so the others change too.
        let mut best: Option<(Postprocess, Vec<f64>)> = None;
        for n in MIN_VOLUME_LADDER {
            let step = parse(&format!("min-volume:{}:{n}", p.name))?;
            let (_, after) = search.trial(&step);
            let others_hold = (0..after.len()).all(|o| o == r || after[o] >= search.dice[o]);
            if others_hold && best.as_ref().is_none_or(|(_, d)| after[r] > d[r]) {
                best = Some((step, after));
            }
        }
        if let Some((step, _)) = best {
            let outcome = search.trial(&step);
            search.judge_on_region(step, r, &names[r], outcome, &mut chosen, &mut trials);
        }
    }

    Ok(PostprocessChoice {
        chosen,
        trials,
        regions: names,
        dice_before: before,
        dice_after: search.dice,
    })
}

impl PostprocessChoice {
    /// The trials and the choice, aligned for a terminal; the choice is quoted for a shell
    /// where its names need it ("tumor core").
    pub fn to_table(&self) -> String {
        use std::fmt::Write as _;
        let longest = |len: fn(&Trial) -> usize| self.trials.iter().map(len).max().unwrap_or(0);
        let step_w = longest(|t| t.step.len()).max(4);
        let judged_w = longest(|t| t.judged_on.len()).max(9);
        let mut out = format!(
            "{:<step_w$} {:<judged_w$} {:>11} {:>10}  kept\n",
            "step", "judged on", "Dice before", "Dice after"
        );
        for t in &self.trials {
            let _ = writeln!(
                out,
                "{:<step_w$} {:<judged_w$} {:>11.4} {:>10.4}  {}",
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
        let spec = self.chosen.to_string();
        let plain = spec
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":,._-".contains(c));
        let shown = if plain {
            spec
        } else {
            format!("'{}'", spec.replace('\'', "'\\''"))
        };
        let _ = writeln!(
            out,
            "chosen: --postprocess {shown} (mean Dice {})",
            dice.join(", ")
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::labels::LabelClass;
    use crate::infer::Predicts;

    #[test]
    fn the_choice_is_quoted_for_a_shell_where_a_name_has_a_space() {
        // nnU-Net's spelled-out region names.
        let classes = ["background", "edema", "non-enhancing", "enhancing"]
            .iter()
            .zip(0u8..)
            .map(|(name, file_value)| LabelClass {
                name: name.to_string(),
                file_value,
            })
            .collect();
        let regions = vec![
            ("whole tumor".to_string(), vec![1, 2, 3]),
            ("tumor core".to_string(), vec![2, 3]),
            ("enhancing tumor".to_string(), vec![3]),
        ];
        let spec = LabelSpec::new(classes, regions).unwrap();
        let chosen = Postprocess::parse("largest,largest:TC", &spec, Predicts::AnyClass).unwrap();
        let choice = PostprocessChoice {
            chosen,
            trials: vec![Trial {
                step: "largest:tumor core".into(),
                judged_on: "tumor core".into(),
                dice_before: 0.5,
                dice_after: 0.75,
                kept: true,
            }],
            regions: vec!["whole tumor".into(), "tumor core".into()],
            dice_before: vec![0.9, 0.5],
            dice_after: vec![0.9, 0.75],
        };
        let table = choice.to_table();
        assert!(
            table.contains(
                "chosen: --postprocess 'largest,largest:tumor core' (mean Dice whole tumor \
                 0.9000 -> 0.9000, tumor core 0.5000 -> 0.7500)"
            ),
            "{table}"
        );
        assert!(
            table.contains("largest:tumor core tumor core      0.5000     0.7500  yes"),
            "{table}"
        );
    }
}
