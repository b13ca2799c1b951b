//! `evaluate`: scores a folder of predicted label maps against the reference labels, per
//! case and region, in the label convention of the reference.
use super::{score_case, CaseScores, EvalReport, Region};
use crate::data::labels::LabelSpec;
use crate::data::layout::detect;
use crate::data::nifti::read_volume;
use crate::error::{Error, Result};
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

fn read_labels(path: &Path) -> Result<(Vec<u8>, [usize; 3], [f64; 3])> {
    let (vol, _) = read_volume(path)?;
    let mut out = Vec::with_capacity(vol.data.len());
    for &v in &vol.data {
        if !(0.0..=255.0).contains(&v) || v.fract() != 0.0 {
            return Err(Error::file(
                path,
                format!("value {v} is not a label (integers 0..255)"),
            ));
        }
        out.push(v as u8);
    }
    Ok((out, vol.dims, vol.spacing))
}

fn case_id(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let id = name
        .strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))?;
    (!id.ends_with("_probabilities") && !name.starts_with('.')).then(|| id.to_string())
}

/// Scores every `CASE.nii.gz` in `pred` (or only `cases`) against the reference: `truth`
/// is a dataset folder (its labels and label convention are used) or a folder of
/// `CASE.nii.gz` label maps, for which `spec` gives the convention.
pub fn evaluate(
    pred: &Path,
    truth: &Path,
    cases: Option<&[String]>,
    spec: Option<&LabelSpec>,
) -> Result<EvalReport> {
    let dataset = detect(truth).ok();
    let spec = match (&dataset, spec) {
        (Some(d), _) => d.label_spec.clone(),
        (None, Some(s)) => s.clone(),
        (None, None) => {
            return Err(Error::config(
                "truth",
                format!("{} is not a dataset folder; name the label convention with --labels (brats2021, brats2023) or --model RUN", truth.display()),
            ))
        }
    };
    let truth_of = |id: &str| -> Result<PathBuf> {
        match &dataset {
            Some(d) => d
                .cases
                .iter()
                .find(|c| c.id == id)
                .and_then(|c| c.label.clone())
                .ok_or_else(|| {
                    Error::data(id, format!("no reference label in {}", truth.display()))
                }),
            None => {
                let p = truth.join(format!("{id}.nii.gz"));
                if p.exists() {
                    Ok(p)
                } else {
                    Err(Error::data(
                        id,
                        format!("no reference label {}", p.display()),
                    ))
                }
            }
        }
    };
    let mut ids: Vec<String> = std::fs::read_dir(pred)
        .map_err(|e| Error::io(format!("listing {}", pred.display()), e))?
        .filter_map(|e| e.ok().and_then(|e| case_id(&e.path())))
        .collect();
    ids.sort();
    if let Some(wanted) = cases {
        for w in wanted {
            if !ids.contains(w) {
                return Err(Error::data(
                    w.as_str(),
                    format!("no prediction {}/{w}.nii.gz", pred.display()),
                ));
            }
        }
        ids.retain(|id| wanted.contains(id));
    }
    if ids.is_empty() {
        return Err(Error::data(
            pred.display().to_string(),
            "no predictions (CASE.nii.gz) to evaluate",
        ));
    }
    let regions = regions_of(&spec);
    let scores: Vec<CaseScores> = ids
        .iter()
        .map(|id| {
            let pred_path = pred.join(format!("{id}.nii.gz"));
            let truth_path = truth_of(id)?;
            let (p, pdims, _) = read_labels(&pred_path)?;
            let (t, tdims, spacing) = read_labels(&truth_path)?;
            if pdims != tdims {
                return Err(Error::file(
                    &pred_path,
                    format!(
                        "size {pdims:?} differs from the reference's {tdims:?} ({})",
                        truth_path.display()
                    ),
                ));
            }
            score_case(id, &p, &t, tdims, spacing, &regions)
        })
        .collect::<Result<_>>()?;
    Ok(EvalReport::new(scores))
}
