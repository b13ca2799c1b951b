//! nnU-Net v2 raw datasets: `imagesTr/CASE_XXXX.nii.gz` (one file per channel, XXXX =
//! 0000, 0001, ...), `labelsTr/CASE.nii.gz`, optional `imagesTs/`, and `dataset.json` with
//! `channel_names`, `labels` (name -> value; a list of values makes a region) and
//! `file_ending`.
use super::{
    classes_from_values, list_dir, note_missing, numbered_names, CaseFiles, Dataset, ImageFile,
    LayoutKind, Listing, ListingProblem, MissingFile, Provides,
};
use crate::data::labels::LabelSpec;
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn load(json_path: &Path, json: &Value) -> Result<Listing> {
    let root = json_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let channels = numbered_names(json_path, json, "channel_names")?;
    if channels
        .iter()
        .enumerate()
        .any(|(i, (n, _))| *n != i as u64)
    {
        return Err(Error::file(
            json_path,
            "'channel_names' keys must be 0, 1, 2, ... without gaps",
        ));
    }
    let ending = json
        .get("file_ending")
        .and_then(|v| v.as_str())
        .unwrap_or(".nii.gz");
    if ending != ".nii.gz" && ending != ".nii" {
        return Err(Error::file(
            json_path,
            format!("file_ending '{ending}' is not supported (only .nii.gz and .nii)"),
        ));
    }
    let label_spec = label_spec(json_path, json)?;
    let modalities: Vec<String> = channels.iter().map(|(_, n)| n.clone()).collect();

    let (mut missing, mut problems) = (Vec::new(), Vec::new());
    let cases = list_cases(
        &root.join("imagesTr"),
        ending,
        &modalities,
        Some(&root.join("labelsTr")),
        &mut missing,
        &mut problems,
    )?;
    if let Some(n) = json.get("numTraining").and_then(|v| v.as_u64()) {
        if n != cases.len() as u64 {
            eprintln!(
                "warning: {}: numTraining is {n}, but imagesTr and labelsTr hold {} case(s); \
                 the cases found are used",
                json_path.display(),
                cases.len()
            );
        }
    }
    let ts = root.join("imagesTs");
    let test_cases = if ts.is_dir() {
        list_cases(&ts, ending, &modalities, None, &mut missing, &mut problems)?
    } else {
        Vec::new()
    };
    // Splits and prediction writes go by case id: a test case named as a training case
    // cannot be told apart from it.
    for case in &test_cases {
        if cases.iter().any(|c| c.id == case.id) {
            problems.push(ListingProblem {
                case: Some(case.id.clone()),
                path: case
                    .images
                    .first()
                    .map_or_else(|| ts.clone(), |i| i.path.clone()),
                msg: format!(
                    "case id '{}' is in both imagesTr and imagesTs; rename one of them",
                    case.id
                ),
            });
        }
    }
    let dataset = Dataset {
        layout: LayoutKind::NnUnet,
        root,
        modalities,
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

/// Groups `CASE_XXXX{ending}` files into cases; a channel (and, when `labels` is given,
/// a label file) that a case lacks goes into `missing`, and so do the images of a label
/// file whose case has none. A file named otherwise, or a channel `channel_names` does not
/// declare, goes into `problems`, and the others are listed all the same.
fn list_cases(
    dir: &Path,
    ending: &str,
    modalities: &[String],
    labels: Option<&Path>,
    missing: &mut Vec<MissingFile>,
    problems: &mut Vec<ListingProblem>,
) -> Result<Vec<CaseFiles>> {
    if !dir.is_dir() {
        return Err(Error::file(dir, "missing folder (nnU-Net layout)"));
    }
    let other_ending = if ending == ".nii" { ".nii.gz" } else { ".nii" };
    let mut other_files = 0;
    let mut by_case: BTreeMap<String, BTreeMap<usize, PathBuf>> = BTreeMap::new();
    for (name, path) in list_dir(dir)? {
        let Some(stem) = name.strip_suffix(ending) else {
            other_files += usize::from(name.ends_with(other_ending));
            continue;
        };
        let parsed = stem.rsplit_once('_').and_then(|(case, ch)| {
            Some((case, ch.parse::<usize>().ok().filter(|_| ch.len() == 4)?))
        });
        let Some((case, channel)) = parsed else {
            problems.push(ListingProblem {
                case: None,
                path,
                msg: "name is not CASE_XXXX with a 4-digit channel number".into(),
            });
            continue;
        };
        by_case
            .entry(case.to_string())
            .or_default()
            .insert(channel, path);
    }
    if by_case.is_empty() && other_files > 0 {
        return Err(Error::file(
            dir,
            format!(
                "holds {other_files} {other_ending} file(s) but dataset.json's file_ending is \
                 \"{ending}\"; set \"file_ending\": \"{other_ending}\""
            ),
        ));
    }
    if let Some(labels) = labels.filter(|l| l.is_dir()) {
        for (name, _) in list_dir(labels)? {
            if let Some(id) = name.strip_suffix(ending) {
                by_case.entry(id.to_string()).or_default();
            }
        }
    }
    let mut cases = Vec::with_capacity(by_case.len());
    for (id, mut files) in by_case {
        let mut images = Vec::with_capacity(modalities.len());
        // A case known only from its label file has none of its images.
        let label_only = if files.is_empty() {
            " (labelsTr holds a label for this case, imagesTr no image)"
        } else {
            ""
        };
        for (c, m) in modalities.iter().enumerate() {
            // A file under the other ending is not this dataset's (file_ending), but is
            // likely what was meant.
            let (path, elsewhere) = match files.remove(&c) {
                Some(path) => (path, String::new()),
                None => {
                    let other = dir.join(format!("{id}_{c:04}{other_ending}"));
                    let elsewhere = if other.is_file() {
                        format!(
                            " ({} exists, but dataset.json's file_ending is \"{ending}\")",
                            other.display()
                        )
                    } else {
                        String::new()
                    };
                    (dir.join(format!("{id}_{c:04}{ending}")), elsewhere)
                }
            };
            note_missing(
                missing,
                &id,
                &path,
                &format!(
                    "{m} (channel {c:04}) image file{}",
                    if elsewhere.is_empty() {
                        label_only
                    } else {
                        &elsewhere
                    }
                ),
                Provides::Channel(c),
            );
            images.push(ImageFile {
                modality: m.clone(),
                path,
                channel: None,
            });
        }
        for (c, path) in files {
            problems.push(ListingProblem {
                case: Some(id.clone()),
                path,
                msg: format!(
                    "case {id}: channel {c:04} is not in channel_names ({} channels)",
                    modalities.len()
                ),
            });
        }
        let label = match labels {
            Some(dir) => {
                let path = dir.join(format!("{id}{ending}"));
                note_missing(missing, &id, &path, "label file", Provides::Label);
                Some(path)
            }
            None => None,
        };
        cases.push(CaseFiles { id, images, label });
    }
    Ok(cases)
}

/// Classes from `labels`; list values (nnU-Net's region-based training) become regions,
/// listed from the largest to the most specific, the order predictions are painted in.
fn label_spec(json_path: &Path, json: &Value) -> Result<LabelSpec> {
    let obj = json
        .get("labels")
        .and_then(|l| l.as_object())
        .ok_or_else(|| {
            Error::file(
                json_path,
                "'labels' must be an object like {\"background\": 0}",
            )
        })?;
    let as_value = |name: &str, v: &Value| {
        v.as_u64().ok_or_else(|| {
            Error::file(
                json_path,
                format!("labels: '{name}' must be a non-negative integer or a list of them"),
            )
        })
    };
    // nnU-Net v2's "ignore" label marks unannotated voxels (sparse annotation), left out of
    // its loss; trained as a class it would teach the network to predict "unannotated".
    if let Some(v) = obj.get("ignore") {
        return Err(Error::file(
            json_path,
            format!(
                "labels: 'ignore' ({v}) marks unannotated voxels for nnU-Net's sparse-annotation \
                 training, which voxseg does not support; remove the label (and those voxels' \
                 value from the label maps) to train on fully annotated cases"
            ),
        ));
    }
    let mut named: Vec<(u64, String)> = Vec::new();
    let mut regions: Vec<(String, Vec<u64>)> = Vec::new();
    let mut region_based = false;
    for (name, v) in obj {
        match v {
            Value::Array(items) => {
                region_based = true;
                let values = items
                    .iter()
                    .map(|i| as_value(name, i))
                    .collect::<Result<Vec<_>>>()?;
                regions.push((name.clone(), values));
            }
            _ => {
                let value = as_value(name, v)?;
                named.push((value, name.clone()));
                if value != 0 {
                    regions.push((name.clone(), vec![value]));
                }
            }
        }
    }
    if !region_based {
        named.sort();
        return LabelSpec::with_tumour_regions_by_name(classes_from_values(json_path, &named)?)
            .map_err(|e| Error::file(json_path, e.to_string()));
    }
    let mut values: Vec<u64> = regions
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    values.push(0);
    values.sort_unstable();
    values.dedup();
    let pairs: Vec<(u64, String)> = values
        .iter()
        .map(|&v| {
            let name = named.iter().find(|(n, _)| *n == v).map(|(_, s)| s.clone());
            (v, name.unwrap_or_else(|| format!("label_{v}")))
        })
        .collect();
    let classes = classes_from_values(json_path, &pairs)?;
    regions.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    let regions = regions
        .into_iter()
        .map(|(name, vals)| {
            let idx = vals
                .iter()
                .map(|v| values.iter().position(|x| x == v).expect("collected") as u8)
                .collect();
            (name, idx)
        })
        .collect();
    let spec =
        LabelSpec::new(classes, regions).map_err(|e| Error::file(json_path, e.to_string()))?;
    check_regions_class_order(json_path, json, &spec)?;
    Ok(spec)
}

/// nnU-Net's `regions_class_order` gives the label value each region paints. voxseg paints
/// each region with the one label only it holds (nested regions, largest first), so the
/// file's values must be those, one per region. (serde_json keeps no key order, so the
/// values are compared as a set, not region by region.)
fn check_regions_class_order(json_path: &Path, json: &Value, spec: &LabelSpec) -> Result<()> {
    let Some(order) = json.get("regions_class_order") else {
        return Ok(());
    };
    let painted: Vec<u64> = spec
        .regions()
        .iter()
        .map(|r| u64::from(spec.classes()[r.paint as usize].file_value))
        .collect();
    let mut want = painted.clone();
    want.sort_unstable();
    let given = order
        .as_array()
        .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>());
    let paints_them = given.is_some_and(|mut got| {
        got.sort_unstable();
        got == want
    });
    if !paints_them {
        return Err(Error::file(
            json_path,
            format!(
                "regions_class_order {order} does not paint the {} regions with the labels \
                 only each holds, {painted:?} ({}), as voxseg writes predictions",
                spec.regions().len(),
                spec.regions()
                    .iter()
                    .zip(&painted)
                    .map(|(r, v)| format!("{} {v}", r.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(())
}
