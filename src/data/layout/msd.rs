//! Medical Segmentation Decathlon: `dataset.json` with `modality` ({"0": "FLAIR", ...}),
//! `labels` ({"0": "background", ...}), `training` ([{"image", "label"}]) and `test`
//! (paths); images are 4D with one channel per modality, labels 3D.
use super::{
    classes_from_values, duplicate_ids, note_missing, numbered_names, CaseFiles, Dataset,
    ImageFile, LayoutKind, Listing, Provides,
};
use crate::data::labels::LabelSpec;
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The case id of an image path: its file name without .nii.gz / .nii.
fn case_id(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
        .unwrap_or(&name)
        .to_string()
}

fn resolve(root: &Path, rel: &str) -> PathBuf {
    root.join(rel.trim_start_matches("./"))
}

pub fn load(json_path: &Path, json: &Value) -> Result<Listing> {
    let root = json_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let modalities = numbered_names(json_path, json, "modality")?;
    if modalities
        .iter()
        .enumerate()
        .any(|(i, (n, _))| *n != i as u64)
    {
        return Err(Error::file(
            json_path,
            "'modality' keys must be 0, 1, 2, ... without gaps",
        ));
    }
    let classes = classes_from_values(json_path, &numbered_names(json_path, json, "labels")?)?;
    let label_spec = LabelSpec::with_tumour_regions_by_name(classes)
        .map_err(|e| Error::file(json_path, e.to_string()))?;
    let mut missing = Vec::new();
    let images_of = |id: &str, image: PathBuf, missing: &mut Vec<_>| -> Vec<ImageFile> {
        note_missing(missing, id, &image, "image file", Provides::AllChannels);
        modalities
            .iter()
            .map(|(i, name)| ImageFile {
                modality: name.clone(),
                path: image.clone(),
                channel: Some(*i as usize),
            })
            .collect()
    };
    let list = |key: &str| -> Result<Vec<Value>> {
        match json.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(_) => Err(Error::file(json_path, format!("'{key}' must be a list"))),
        }
    };

    let mut cases = Vec::new();
    for entry in list("training")? {
        let field = |k: &str| {
            entry.get(k).and_then(|v| v.as_str()).ok_or_else(|| {
                Error::file(
                    json_path,
                    format!("a 'training' entry lacks '{k}': {entry}"),
                )
            })
        };
        let image = resolve(&root, field("image")?);
        if is_metadata(&image) {
            continue;
        }
        let id = case_id(&image);
        let label = resolve(&root, field("label")?);
        note_missing(&mut missing, &id, &label, "label file", Provides::Label);
        cases.push(CaseFiles {
            images: images_of(&id, image, &mut missing),
            id,
            label: Some(label),
        });
    }
    if let Some(n) = json.get("numTraining").and_then(|v| v.as_u64()) {
        if n != cases.len() as u64 {
            eprintln!(
                "warning: {}: numTraining is {n}, but 'training' lists {} case(s); the cases \
                 listed are used",
                json_path.display(),
                cases.len()
            );
        }
    }
    let mut test_cases = Vec::new();
    for entry in list("test")? {
        let rel = entry
            .as_str()
            .or_else(|| entry.get("image").and_then(|v| v.as_str()))
            .ok_or_else(|| {
                Error::file(json_path, format!("a 'test' entry is not a path: {entry}"))
            })?;
        let image = resolve(&root, rel);
        if is_metadata(&image) {
            continue;
        }
        let id = case_id(&image);
        test_cases.push(CaseFiles {
            images: images_of(&id, image, &mut missing),
            id,
            label: None,
        });
    }
    // Training splits and prediction writes by case id: an id twice (a repeated `training`
    // entry, a training image under `test` too) cannot be told apart.
    let all: Vec<&CaseFiles> = cases.iter().chain(&test_cases).collect();
    let problems = duplicate_ids(json_path, &all);
    let dataset = Dataset {
        layout: LayoutKind::Msd,
        root,
        modalities: modalities.into_iter().map(|(_, n)| n).collect(),
        label_spec,
        cases,
        test_cases,
    };
    Ok(Listing {
        dataset,
        missing,
        problems,
    })
}

/// Whether a listed image is a macOS metadata file (`._NAME`), which MSD's archives hold
/// beside every image: a `dataset.json` that lists one means no case. Other names, `_` or
/// `.` first included, are what the file lists, and are cases.
fn is_metadata(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("._"))
}
