//! Medical Segmentation Decathlon: `dataset.json` with `modality` ({"0": "FLAIR", ...}),
//! `labels` ({"0": "background", ...}), `training` ([{"image", "label"}]) and `test`
//! (paths); images are 4D with one channel per modality, labels 3D.
use super::{is_junk_name, require_file, CaseFiles, Dataset, ImageFile, LayoutKind};
use crate::data::labels::{LabelClass, LabelSpec};
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A `{"0": "a", "1": "b"}` object as (number, name) pairs sorted by number.
pub(crate) fn numbered_names(json_path: &Path, v: &Value, key: &str) -> Result<Vec<(u64, String)>> {
    let obj = v.get(key).and_then(|m| m.as_object()).ok_or_else(|| {
        Error::file(
            json_path,
            format!("'{key}' must be an object like {{\"0\": \"name\"}}"),
        )
    })?;
    let mut out = Vec::with_capacity(obj.len());
    for (k, name) in obj {
        let n: u64 = k
            .trim()
            .parse()
            .map_err(|_| Error::file(json_path, format!("'{key}': key '{k}' is not a number")))?;
        let name = name.as_str().ok_or_else(|| {
            Error::file(
                json_path,
                format!("'{key}': value of '{k}' is not a string"),
            )
        })?;
        out.push((n, name.to_string()));
    }
    out.sort();
    Ok(out)
}

/// Label classes from (file value, name) pairs; the background must be value 0.
pub(crate) fn classes_from_values(
    json_path: &Path,
    values: &[(u64, String)],
) -> Result<Vec<LabelClass>> {
    if values.first().map(|(v, _)| *v) != Some(0) {
        return Err(Error::file(
            json_path,
            "labels must include the background as value 0",
        ));
    }
    values
        .iter()
        .map(|(v, name)| {
            let file_value = u8::try_from(*v).map_err(|_| {
                Error::file(
                    json_path,
                    format!("label value {v} does not fit in 0..=255"),
                )
            })?;
            Ok(LabelClass {
                name: name.clone(),
                file_value,
            })
        })
        .collect()
}

/// The case id of an image path: its file name without .nii.gz / .nii.
pub(crate) fn case_id(path: &Path) -> String {
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

pub fn load(json_path: &Path, json: &Value) -> Result<Dataset> {
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
    let label_spec = LabelSpec::with_tumour_regions_by_name(classes)?;
    let images_of = |id: &str, image: PathBuf| -> Result<Vec<ImageFile>> {
        require_file(id, &image, "image")?;
        Ok(modalities
            .iter()
            .map(|(i, name)| ImageFile {
                modality: name.clone(),
                path: image.clone(),
                channel: Some(*i as usize),
            })
            .collect())
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
        if is_junk(&image) {
            continue;
        }
        let id = case_id(&image);
        let label = resolve(&root, field("label")?);
        require_file(&id, &label, "label")?;
        cases.push(CaseFiles {
            images: images_of(&id, image)?,
            id,
            label: Some(label),
        });
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
        if is_junk(&image) {
            continue;
        }
        let id = case_id(&image);
        test_cases.push(CaseFiles {
            images: images_of(&id, image)?,
            id,
            label: None,
        });
    }
    Ok(Dataset {
        layout: LayoutKind::Msd,
        root,
        modalities: modalities.into_iter().map(|(_, n)| n).collect(),
        label_spec,
        cases,
        test_cases,
    })
}

fn is_junk(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| is_junk_name(&n.to_string_lossy()))
}
