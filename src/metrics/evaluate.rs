//! `evaluate`: scores a folder of predicted label maps against the reference labels, per
//! case and region. Each side is read in its own label convention and its values are
//! checked against it, as training checks its labels; regions are matched by name, so a
//! prediction in one convention (BraTS 2021, ET = 4) can be scored on a reference in
//! another (BraTS 2023, ET = 3).
use super::{score_case_across, CaseScores, EmptyHd95, EmptyHd95Used, EvalReport, Region};
use crate::data::case::grid_difference;
use crate::data::labels::LabelSpec;
use crate::data::layout::{is_junk_name, list};
use crate::data::nifti::{read_volume, NiftiHeaderInfo};
use crate::data::split::{Split, Subset};
use crate::error::{few, Error, Result};
use crate::infer::{Postprocess, Predicts};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The regions (or, without regions, the foreground classes) of a label convention, as
/// sets of file values.
pub fn regions_of(spec: &LabelSpec) -> Vec<Region> {
    let value = |c: u8| spec.classes()[c as usize].file_value;
    if spec.regions().is_empty() {
        return spec
            .classes()
            .iter()
            .skip(1)
            .map(|c| Region::new(c.name.clone(), &[c.file_value]))
            .collect();
    }
    spec.regions()
        .iter()
        .map(|r| {
            Region::new(
                r.name.clone(),
                &r.classes.iter().map(|&c| value(c)).collect::<Vec<_>>(),
            )
        })
        .collect()
}

/// Whether two region names are the same region: equal but for case, or the BraTS
/// abbreviation and nnU-Net's spelled-out name ("WT" and "whole tumor").
pub(crate) fn same_region_name(a: &str, b: &str) -> bool {
    const SPELLED: [(&str, &[&str]); 3] = [
        (
            "wt",
            &["whole tumor", "whole tumour", "whole_tumor", "whole_tumour"],
        ),
        (
            "tc",
            &["tumor core", "tumour core", "tumor_core", "tumour_core"],
        ),
        (
            "et",
            &[
                "enhancing tumor",
                "enhancing tumour",
                "enhancing_tumor",
                "enhancing_tumour",
            ],
        ),
    ];
    let canonical = |name: &str| {
        let lower = name.to_ascii_lowercase();
        SPELLED
            .iter()
            .find(|(_, spelled)| spelled.contains(&lower.as_str()))
            .map_or(lower, |(short, _)| short.to_string())
    };
    canonical(a) == canonical(b)
}

/// Pairs each region of the reference's convention with the region of the same name
/// (case-insensitive) in the prediction's, as (prediction, reference). A region that only
/// one convention has is an error naming it.
pub fn match_regions(pred: &LabelSpec, truth: &LabelSpec) -> Result<Vec<(Region, Region)>> {
    let (p, t) = (regions_of(pred), regions_of(truth));
    let names = |rs: &[Region]| rs.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    let unmatched = |from: &[Region], to: &[Region]| {
        from.iter()
            .find(|r| !to.iter().any(|o| same_region_name(&o.name, &r.name)))
            .map(|r| r.name.clone())
    };
    if let Some(name) = unmatched(&t, &p) {
        return Err(Error::config(
            "label conventions",
            format!(
                "the reference's region '{name}' does not exist in the prediction's convention \
                 (regions {:?}); the two cannot be compared",
                names(&p)
            ),
        ));
    }
    if let Some(name) = unmatched(&p, &t) {
        return Err(Error::config(
            "label conventions",
            format!(
                "the prediction's region '{name}' does not exist in the reference's convention \
                 (regions {:?}); the two cannot be compared",
                names(&t)
            ),
        ));
    }
    Ok(t.into_iter()
        .map(|tr| {
            let pr = p
                .iter()
                .find(|r| same_region_name(&r.name, &tr.name))
                .expect("every reference region was matched above")
                .clone();
            (pr, tr)
        })
        .collect())
}

/// The class `name` in both conventions, as one region each (prediction, reference); an
/// error where either lacks a foreground class of that name.
pub fn match_class(name: &str, pred: &LabelSpec, truth: &LabelSpec) -> Result<(Region, Region)> {
    let region = |spec: &LabelSpec, whose: &str| {
        spec.class_by_name(name)
            .filter(|&c| c > 0)
            .map(|c| {
                let class = &spec.classes()[c as usize];
                Region::new(class.name.clone(), &[class.file_value])
            })
            .ok_or_else(|| {
                let names: Vec<&str> = spec
                    .classes()
                    .iter()
                    .skip(1)
                    .map(|c| c.name.as_str())
                    .collect();
                Error::config(
                    "label conventions",
                    format!(
                        "the predictions hold class '{name}', which {whose} convention does not \
                         have (its classes: {names:?}); the two cannot be compared"
                    ),
                )
            })
    };
    Ok((
        region(pred, "the prediction's")?,
        region(truth, "the reference's")?,
    ))
}

/// Reads a label map and checks every value against `spec`, as training does: a value
/// outside the convention is an error naming the file, the value, its (x, y, z) and the
/// allowed values; `whose` names the convention, `hint` (may be empty) says how to fix it.
/// Returns the values and the file's header (its grid).
pub(crate) fn read_labels(
    path: &Path,
    spec: &LabelSpec,
    whose: &str,
    hint: &str,
) -> Result<(Vec<u8>, NiftiHeaderInfo)> {
    let (vol, header) = read_volume(path)?;
    if let Some(first) = vol
        .data
        .iter()
        .position(|&v| spec.class_of_value(v).is_none())
    {
        let others = vol.data[first + 1..]
            .iter()
            .filter(|&&v| spec.class_of_value(v).is_none())
            .count();
        let at = crate::data::grid::position_text(first, vol.dims);
        let more = if others > 0 {
            format!(" ({others} more voxel(s) outside them)")
        } else {
            String::new()
        };
        return Err(Error::file(
            path,
            format!(
                "label value {} at {at} is not one of the values {:?} of {whose}{more}{hint}",
                vol.data[first],
                spec.file_values()
            ),
        ));
    }
    let values = vol.data.iter().map(|&v| v as u8).collect();
    Ok((values, header))
}

/// The label maps in `dir` (`CASE.nii.gz` or `CASE.nii`) by case id. One case with both
/// endings is an error: which of the two to score would be a guess.
pub(crate) fn label_files(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let Some(id) = label_case_id(&path) else {
            continue;
        };
        if let Some(other) = found.insert(id.clone(), path.clone()) {
            let mut both = [other, path].map(|p| p.display().to_string());
            both.sort();
            return Err(Error::data(
                dir.display().to_string(),
                format!(
                    "{} and {} are both case {id}; which one to use is ambiguous: keep one of \
                     them in the folder",
                    both[0], both[1]
                ),
            ));
        }
    }
    Ok(found)
}

/// The case whose labels `evaluate` reads `path` as (`CASE.nii.gz` or `CASE.nii`; not a
/// probability map or a hidden file), or None.
pub fn label_case_id(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let id = name
        .strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))?;
    (!id.ends_with("_probabilities") && !name.starts_with('.')).then(|| id.to_string())
}

/// The reference of an evaluation: its label convention and the label file of every
/// labelled case.
#[derive(Clone, Debug)]
pub struct Reference {
    root: PathBuf,
    spec: LabelSpec,
    labels: BTreeMap<String, PathBuf>,
    /// Cases the dataset lists without a label (its test cases): `predict --split test`
    /// predicts them too, and they have nothing to be scored against.
    unlabelled: BTreeSet<String>,
    is_dataset: bool,
}

/// Whether `path` is meant as a dataset rather than a plain folder of label maps: a
/// manifest file, a folder with a `dataset.json`, or a folder of case folders.
fn looks_like_dataset(path: &Path) -> bool {
    if path.is_file() || path.join("dataset.json").exists() {
        return true;
    }
    std::fs::read_dir(path).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| !is_junk_name(&e.file_name().to_string_lossy()) && e.path().is_dir())
    })
}

impl Reference {
    /// `truth` is a dataset folder or manifest (its labels and convention are used, and
    /// `folder_spec` is ignored) or a folder of `CASE.nii.gz` (or `.nii`) label maps in the convention
    /// `folder_spec`.
    /// A folder that looks like a dataset but is not one (an unparsable `dataset.json`, a
    /// missing label file) is an error: the layout's own. Missing images are no obstacle.
    pub fn open(truth: &Path, folder_spec: Option<&LabelSpec>) -> Result<Self> {
        // Only the labels are read: a dataset missing an image can still be scored.
        match list(truth).and_then(|l| l.require_labels()) {
            Ok(d) => {
                let labels = d
                    .cases
                    .iter()
                    .filter_map(|c| c.label.clone().map(|l| (c.id.clone(), l)))
                    .collect();
                let unlabelled = d
                    .cases
                    .iter()
                    .filter(|c| c.label.is_none())
                    .chain(&d.test_cases)
                    .map(|c| c.id.clone())
                    .collect();
                return Ok(Self {
                    root: truth.to_path_buf(),
                    spec: d.label_spec,
                    labels,
                    unlabelled,
                    is_dataset: true,
                });
            }
            Err(e) if looks_like_dataset(truth) => return Err(e),
            Err(_) => {}
        }
        let spec = folder_spec.cloned().ok_or_else(|| {
            Error::config(
                "truth",
                format!(
                    "{} is not a dataset folder; name the label convention with --labels \
                     (brats2021, brats2023) or --model RUN",
                    truth.display()
                ),
            )
        })?;
        let labels = label_files(truth)?;
        Ok(Self {
            root: truth.to_path_buf(),
            spec,
            labels,
            unlabelled: BTreeSet::new(),
            is_dataset: false,
        })
    }

    pub fn spec(&self) -> &LabelSpec {
        &self.spec
    }

    /// Whether the reference is a dataset (with its own convention), not a plain folder.
    pub fn is_dataset(&self) -> bool {
        self.is_dataset
    }

    /// The ids of the labelled cases, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.labels.keys()
    }

    /// The predictions in `pred` of cases the dataset lists without a label (its test
    /// cases), sorted: evaluation without a case list leaves them out.
    pub fn unlabelled_predictions(&self, pred: &Path) -> Result<Vec<String>> {
        Ok(label_files(pred)?
            .into_keys()
            .filter(|id| self.unlabelled.contains(id))
            .collect())
    }

    /// The ids of one subset (`train`, `val` or `test`) of a run's `split.json`, checked
    /// to be cases of this reference.
    pub fn split_subset(&self, split: &Path, subset: &str) -> Result<Vec<String>> {
        let bytes = std::fs::read(split)
            .map_err(|e| Error::io(format!("reading {}", split.display()), e))?;
        let parsed = Split::from_json(&bytes)
            .map_err(|e| Error::file(split, format!("not a split file: {e}")))?;
        crate::json_keys::refuse_repeated_keys(&bytes)
            .map_err(|e| Error::file(split, e.to_string()))?;
        // A case twice would be scored twice and weigh double in every mean; training
        // refuses such a split file too.
        parsed
            .check_each_case_once()
            .map_err(|e| Error::file(split, e.to_string()))?;
        let ids = parsed.subset(subset.parse::<Subset>()?).to_vec();
        if ids.is_empty() {
            return Err(Error::file(
                split,
                format!("its '{subset}' subset lists no cases: nothing to score"),
            ));
        }
        let unknown: Vec<&String> = ids
            .iter()
            .filter(|id| !self.labels.contains_key(*id))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::file(
                split,
                format!(
                    "{} of the {} '{subset}' cases are not labelled cases of {} ({}); the \
                     split is from another dataset's run",
                    unknown.len(),
                    ids.len(),
                    self.root.display(),
                    few(&unknown)
                ),
            ));
        }
        Ok(ids)
    }
}

/// What to do with a reference case that has no prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Refuse to score.
    Error,
    /// Leave it out of the scores; the report lists it.
    Skip,
    /// Score it as an all-background prediction: Dice 0 and the empty-mask HD95 (see
    /// [`empty_hd95_rule`]) in every region the reference has, 1 and 0 in the others.
    Empty,
}

/// The empty-mask HD95 for a reference in `spec`: BraTS's fixed 373.13 mm for the BraTS
/// conventions (their challenge's rule), else the reference image's diagonal, since a fixed
/// BraTS-sized penalty would dwarf every real distance on a small image.
pub fn empty_hd95_rule(spec: &LabelSpec) -> EmptyHd95 {
    if *spec == LabelSpec::brats2021() || *spec == LabelSpec::brats2023() {
        EmptyHd95::Brats
    } else {
        EmptyHd95::ImageDiagonal
    }
}

/// How to evaluate.
#[derive(Clone, Copy, Debug)]
pub struct EvalOptions<'a> {
    /// Score only these cases (a split's subset); None: every prediction.
    pub cases: Option<&'a [String]>,
    /// The predictions' label convention (a model's); None: the reference's.
    pub pred_spec: Option<&'a LabelSpec>,
    /// The one class the predictions hold, by name (a model trained on `class:NAME`): only
    /// that class is scored, against the reference's class of the same name. Its regions
    /// would compare the one class with unions it was never trained to find.
    pub pred_class: Option<&'a str>,
    /// What to do with reference cases (of `cases`, or all labelled ones) lacking a
    /// prediction.
    pub missing: Missing,
    /// Applied to each prediction before it is scored (parsed for `pred_spec`).
    pub postprocess: Option<&'a Postprocess>,
}

/// Scores every `CASE.nii.gz` (or `CASE.nii`) in `pred` (or only `cases`) against the reference: `truth`
/// is a dataset folder (its labels and label convention are used) or a folder of
/// `CASE.nii.gz` label maps, for which `spec` gives the convention. With `cases`, a case
/// without a prediction is an error; without, it is left out and listed in the report.
pub fn evaluate(
    pred: &Path,
    truth: &Path,
    cases: Option<&[String]>,
    spec: Option<&LabelSpec>,
) -> Result<EvalReport> {
    let missing = if cases.is_some() {
        Missing::Error
    } else {
        Missing::Skip
    };
    evaluate_reference(
        pred,
        &Reference::open(truth, spec)?,
        &EvalOptions {
            cases,
            pred_spec: None,
            pred_class: None,
            missing,
            postprocess: None,
        },
    )
}

/// The reference cases (those `opts` asks for) without a prediction in `pred`, sorted; the
/// errors `evaluate_reference` would give first (a prediction of an unknown case, missing
/// predictions with `Missing::Error`, nothing to score). Lists files, reads none.
pub fn missing_predictions(
    pred: &Path,
    reference: &Reference,
    opts: &EvalOptions,
) -> Result<Vec<String>> {
    Ok(CasePlan::new(pred, reference, opts)?.missing)
}

/// The cases an evaluation scores, with what it needs to read them.
pub(crate) struct CasePlan<'a> {
    reference: &'a Reference,
    pub(crate) pred_spec: &'a LabelSpec,
    /// Whether `pred_spec` is a model's rather than the reference's.
    model_convention: bool,
    /// What the predictions can hold (one class, for a model trained on one).
    pub(crate) predicts: Predicts,
    /// Each scored region as the prediction's file values and as the reference's.
    pub(crate) regions: Vec<(Region, Region)>,
    /// Case ids to score, sorted.
    pub(crate) cases: Vec<String>,
    /// Reference cases (of those asked for) without a prediction, sorted.
    pub(crate) missing: Vec<String>,
    found: BTreeMap<String, PathBuf>,
    postprocess: Option<&'a Postprocess>,
}

/// One case read for scoring: label values of prediction (postprocessed, in the
/// prediction's convention) and reference, on the reference's grid.
pub(crate) struct CasePair {
    pub(crate) pred: Vec<u8>,
    pub(crate) truth: Vec<u8>,
    pub(crate) grid: NiftiHeaderInfo,
}

impl<'a> CasePlan<'a> {
    /// Lists the cases `opts` asks for in `pred`: a prediction of a case the reference does
    /// not know is an error, and so are missing predictions with `Missing::Error`.
    pub(crate) fn new(
        pred: &Path,
        reference: &'a Reference,
        opts: &EvalOptions<'a>,
    ) -> Result<Self> {
        let truth_spec = &reference.spec;
        let pred_spec = opts.pred_spec.unwrap_or(truth_spec);
        let regions = match opts.pred_class {
            None => match_regions(pred_spec, truth_spec)?,
            Some(name) => vec![match_class(name, pred_spec, truth_spec)?],
        };
        let found = label_files(pred)?;
        // A prediction of a case the reference does not know is an error also when a
        // subset is scored: it names another dataset's cases, or a mistyped id.
        if let Some((extra, file)) = found.iter().find(|(id, _)| {
            !reference.labels.contains_key(*id) && !reference.unlabelled.contains(*id)
        }) {
            return Err(Error::file(
                file,
                format!(
                    "a prediction of case '{extra}', which has no reference label in {}",
                    reference.root.display()
                ),
            ));
        }
        let wanted: Vec<String> = match opts.cases {
            Some(cases) => cases.to_vec(),
            None => reference.labels.keys().cloned().collect(),
        };
        let mut missing: Vec<String> = wanted
            .iter()
            .filter(|id| !found.contains_key(*id))
            .cloned()
            .collect();
        missing.sort();
        if !missing.is_empty() && opts.missing == Missing::Error {
            return Err(Error::data(
                pred.display().to_string(),
                format!(
                    "{} of the {} cases to score have no prediction CASE.nii.gz or CASE.nii ({})",
                    missing.len(),
                    wanted.len(),
                    few(&missing)
                ),
            ));
        }
        let mut cases = wanted;
        cases.sort();
        if opts.missing == Missing::Skip {
            cases.retain(|id| !missing.contains(id));
        }
        if cases.is_empty() {
            let why = if found.is_empty() {
                "no predictions (CASE.nii.gz or CASE.nii) to evaluate"
            } else {
                "no predictions of labelled cases to evaluate (those here are of the dataset's \
                 unlabelled cases, which have no reference)"
            };
            return Err(Error::data(pred.display().to_string(), why));
        }
        Ok(Self {
            reference,
            pred_spec,
            model_convention: opts.pred_spec.is_some(),
            predicts: opts
                .pred_class
                .and_then(|name| pred_spec.class_by_name(name))
                .map_or(Predicts::AnyClass, Predicts::OneClass),
            regions,
            cases,
            missing,
            found,
            postprocess: opts.postprocess,
        })
    }

    /// Reads case `id`'s reference and prediction (all background where it has none),
    /// checks their values and grids, and postprocesses the prediction.
    pub(crate) fn read(&self, id: &str) -> Result<CasePair> {
        let reference = self.reference;
        let (pred_whose, pred_hint) = if self.model_convention {
            ("the model's label convention", "")
        } else {
            (
                "the reference's label convention",
                "; if the predictions come from a model trained on another convention, pass \
                 --model RUN",
            )
        };
        let (truth_whose, truth_hint) = if reference.is_dataset {
            ("the dataset's label convention", "")
        } else {
            (
                "the convention named for the reference",
                "; name the reference's convention with --labels",
            )
        };
        let truth_path = reference.labels.get(id).ok_or_else(|| {
            Error::data(
                id,
                format!("no reference label in {}", reference.root.display()),
            )
        })?;
        let (truth, grid) = read_labels(truth_path, &reference.spec, truth_whose, truth_hint)?;
        let mut pred = match self.found.get(id) {
            None => vec![self.pred_spec.classes()[0].file_value; truth.len()],
            Some(pred_path) => {
                let (p, pred_grid) = read_labels(pred_path, self.pred_spec, pred_whose, pred_hint)?;
                if let Some(what) = grid_difference(&pred_grid, &grid) {
                    return Err(Error::file(
                        pred_path,
                        format!(
                            "not on the grid of its reference {}: {what}; a prediction must \
                             keep the reference's voxel grid and affine (undo any \
                             reorientation or resampling before scoring)",
                            truth_path.display()
                        ),
                    ));
                }
                p
            }
        };
        if let Some(steps) = self.postprocess {
            pred = steps.apply_to_file_values(self.pred_spec, &pred, grid.dims)?;
        }
        Ok(CasePair { pred, truth, grid })
    }
}

/// Scores the predictions in `pred` against `reference` as `opts` says. Without
/// `opts.cases`, predictions of the dataset's unlabelled cases are left out (see
/// [`Reference::unlabelled_predictions`]) and any other prediction without a reference
/// label is an error.
pub fn evaluate_reference(
    pred: &Path,
    reference: &Reference,
    opts: &EvalOptions,
) -> Result<EvalReport> {
    let plan = CasePlan::new(pred, reference, opts)?;
    let pairs: Vec<(&Region, &Region)> = plan.regions.iter().map(|(p, t)| (p, t)).collect();
    let rule = empty_hd95_rule(&reference.spec);
    let mut empty_hd95 = BTreeMap::new();
    let mut values = ConventionValues::default();
    let scores: Vec<CaseScores> = plan
        .cases
        .iter()
        .map(|id| {
            let CasePair { pred, truth, grid } = plan.read(id)?;
            values.add(&pred, &truth);
            let empty = rule.mm(grid.dims, grid.spacing);
            empty_hd95.insert(id.clone(), empty);
            score_case_across(id, &pred, &truth, grid.dims, grid.spacing, empty, &pairs)
        })
        .collect::<Result<_>>()?;
    let order = pairs.iter().map(|(_, t)| t.name.clone()).collect();
    let warnings = (!plan.model_convention && reference.spec == LabelSpec::brats2023())
        .then(|| values.brats2021_on_brats2023())
        .flatten();
    Ok(EvalReport::new(scores)
        .with_warnings(warnings)
        .with_missing(plan.missing, opts.missing == Missing::Empty)
        .with_empty_hd95(EmptyHd95Used {
            rule,
            mm: empty_hd95,
        })
        .with_region_order(order)
        .with_postprocess(opts.postprocess.map(ToString::to_string)))
}

/// Which label values the predictions and the references hold, over all cases.
struct ConventionValues {
    pred: [bool; 256],
    truth: [bool; 256],
}

impl Default for ConventionValues {
    fn default() -> Self {
        Self {
            pred: [false; 256],
            truth: [false; 256],
        }
    }
}

impl ConventionValues {
    fn add(&mut self, pred: &[u8], truth: &[u8]) {
        for &v in pred {
            self.pred[v as usize] = true;
        }
        for &v in truth {
            self.truth[v as usize] = true;
        }
    }

    /// BraTS 2021 predictions read as BraTS 2023 labels: ET written as 4 is 2023's
    /// resection cavity, which is valid, so nothing else says so. Predictions that hold 4
    /// and never 3, where the references hold 3, are most likely that.
    fn brats2021_on_brats2023(&self) -> Option<String> {
        (self.pred[4] && !self.pred[3] && self.truth[3]).then(|| {
            "the predictions hold label 4 and never 3, while the references' enhancing tumour \
             is 3 (BraTS 2023): if they come from a model trained on BraTS 2021 labels (ET = \
             4), 4 is read here as the resection cavity and ET scores 0; pass --model RUN to \
             read them in their model's convention"
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brats2021_predictions_on_brats2023_references_are_suspected() {
        let mut values = ConventionValues::default();
        values.add(&[0, 1, 2, 4], &[0, 1, 2, 3]);
        assert!(values
            .brats2021_on_brats2023()
            .unwrap()
            .contains("--model RUN"));
        values.add(&[3], &[0]);
        assert_eq!(values.brats2021_on_brats2023(), None);
        let mut cavity = ConventionValues::default();
        cavity.add(&[0, 4], &[0, 4]);
        assert_eq!(cavity.brats2021_on_brats2023(), None);
    }

    #[test]
    fn nnunet_spelled_region_names_match_the_brats_abbreviations() {
        assert!(same_region_name("WT", "whole tumor"));
        assert!(same_region_name("Tumour Core", "tc"));
        assert!(same_region_name("enhancing_tumor", "ET"));
        assert!(same_region_name("edema", "EDEMA"));
        assert!(!same_region_name("WT", "TC"));
        assert!(!same_region_name("whole tumor", "tumor core"));
    }

    /// A 4x4x4 grid of 1 x 1 x 2 mm with this sform (rows x, y, z).
    fn grid(srow: [[f32; 4]; 3]) -> NiftiHeaderInfo {
        let mut h = NiftiHeaderInfo::new([4, 4, 4], [1.0, 1.0, 2.0]);
        h.srow = srow;
        h
    }

    const PLAIN: [[f32; 4]; 3] = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 2.0, 0.0],
    ];

    #[test]
    fn grid_differences_are_named() {
        let truth = grid(PLAIN);
        let mut noise = PLAIN;
        noise[0][3] = 1e-4;
        assert_eq!(grid_difference(&grid(noise), &truth), None);
        let mirrored = grid([
            [-1.0, 0.0, 0.0, 0.0],
            [0.0, -1.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 0.0],
        ]);
        assert_eq!(
            grid_difference(&mirrored, &truth).as_deref(),
            Some("the x and y axes are mirrored")
        );
        let mut flipped_z = PLAIN;
        flipped_z[2] = [0.0, 0.0, -2.0, 6.0];
        assert_eq!(
            grid_difference(&grid(flipped_z), &truth).as_deref(),
            Some(
                "the z axis is mirrored; origin (0.000, 0.000, 6.000) mm differs from the \
                 reference's (0.000, 0.000, 0.000) mm"
            )
        );
        let swapped = grid([
            [0.0, 1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 0.0],
        ]);
        assert_eq!(
            grid_difference(&swapped, &truth).as_deref(),
            Some("the axes point in other directions (another orientation)")
        );
        let mut coarser = PLAIN;
        coarser[2][2] = 3.0;
        assert_eq!(
            grid_difference(&grid(coarser), &truth).as_deref(),
            Some(
                "voxel size 1.000x1.000x3.000 mm differs from the reference's 1.000x1.000x2.000 mm"
            )
        );
        // 5 mm voxels turned by 0.5 mrad: each direction within the tolerance, the affine
        // not.
        let coarse = grid([
            [5.0, 0.0, 0.0, 0.0],
            [0.0, 5.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 0.0],
        ]);
        let turned = grid([
            [5.0, 0.0025, 0.0, 0.0],
            [-0.0025, 5.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 0.0],
        ]);
        assert_eq!(
            grid_difference(&turned, &coarse).as_deref(),
            Some("the affines differ by up to 0.0025")
        );
        // The same affine with another pixdim: the voxel size voxseg would use differs.
        let mut stretched = truth.clone();
        stretched.spacing = [2.0, 1.0, 2.0];
        assert_eq!(
            grid_difference(&stretched, &truth).as_deref(),
            Some(
                "voxel size 2.000x1.000x2.000 mm (pixdim) differs from the reference's \
                 1.000x1.000x2.000 mm"
            )
        );
        let mut larger = truth.clone();
        larger.dims = [4, 4, 5];
        assert_eq!(
            grid_difference(&larger, &truth).as_deref(),
            Some("size 4x4x5 differs from the reference's 4x4x4")
        );
    }

    #[test]
    fn label_files_take_either_ending_and_refuse_both_for_one_case() {
        let dir = std::env::temp_dir().join(format!("voxseg-label-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "a.nii",
            "b.nii.gz",
            "b_probabilities.nii.gz",
            ".c.nii.gz",
            "notes.txt",
        ] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let found = label_files(&dir).unwrap();
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            [
                ("a".into(), dir.join("a.nii")),
                ("b".into(), dir.join("b.nii.gz"))
            ]
        );
        std::fs::write(dir.join("a.nii.gz"), b"").unwrap();
        let err = label_files(&dir).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "{} and {}",
                dir.join("a.nii").display(),
                dir.join("a.nii.gz").display()
            )) && err.contains("both case a"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
