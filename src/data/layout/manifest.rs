//! The voxseg manifest: a JSON file describing one's own data, for folders that follow no
//! standard layout. Paths are relative to the manifest's folder (or absolute). See
//! docs/DATA.md and docs/manifest-example.json.
use super::{
    duplicate_ids, note_missing, CaseFiles, Dataset, ImageFile, LayoutKind, Listing,
    ListingProblem, Provides,
};
use crate::data::labels::{LabelClass, LabelSpec};
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The value of the manifest's `format` key, by which it is recognised.
pub const FORMAT: &str = "voxseg-manifest";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format: String,
    version: u32,
    modalities: Vec<String>,
    labels: Vec<ManifestLabel>,
    #[serde(default)]
    regions: Vec<ManifestRegion>,
    cases: Vec<ManifestCase>,
    #[serde(default)]
    test_cases: Vec<ManifestCase>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestLabel {
    name: String,
    value: u8,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestRegion {
    name: String,
    labels: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestCase {
    id: String,
    images: BTreeMap<String, ManifestImage>,
    #[serde(default)]
    label: Option<String>,
}

/// An image is a path, or a path and the channel of a 4D file.
enum ManifestImage {
    Path(String),
    Channel { path: String, channel: usize },
}

// By hand rather than `#[serde(untagged)]`, whose error for a wrong value says only that
// no variant matched.
impl<'de> serde::Deserialize<'de> for ManifestImage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        use serde_json::Value;
        let value = Value::deserialize(d)?;
        let expected = || {
            D::Error::custom(format!(
                "an image is a path (\"t1.nii.gz\") or a 4D file's channel \
                 ({{\"path\": \"img.nii.gz\", \"channel\": 0}}), not {value}"
            ))
        };
        match &value {
            Value::String(path) => Ok(ManifestImage::Path(path.clone())),
            Value::Object(fields) if fields.len() == 2 => {
                let path = fields.get("path").and_then(Value::as_str);
                let channel = fields.get("channel").and_then(Value::as_u64);
                match (path, channel.and_then(|c| usize::try_from(c).ok())) {
                    (Some(path), Some(channel)) => Ok(ManifestImage::Channel {
                        path: path.to_string(),
                        channel,
                    }),
                    _ => Err(expected()),
                }
            }
            _ => Err(expected()),
        }
    }
}

/// Why a case id cannot name the files written for it (`<out>/<id>.nii.gz` and the like),
/// if it cannot: a path of its own would write outside the output folder, and a leading dot
/// hides the file.
fn unusable_case_id(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("is empty")
    } else if id.contains(['/', '\\']) {
        Some("contains a path separator: an id names files in the output folder")
    } else if id.starts_with('.') {
        Some("starts with '.': its output files would be hidden")
    } else if id.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    }
}

pub fn load(json_path: &Path, json: &Value) -> Result<Listing> {
    let m: Manifest = serde_json::from_value(json.clone())
        .map_err(|e| Error::file(json_path, format!("invalid voxseg manifest: {e}")))?;
    if m.format != FORMAT {
        return Err(Error::file(
            json_path,
            format!("'format' is '{}', expected '{FORMAT}'", m.format),
        ));
    }
    if m.version != 1 {
        return Err(Error::file(
            json_path,
            format!("manifest version {} is not supported (1 is)", m.version),
        ));
    }
    if m.modalities.is_empty() {
        return Err(Error::file(json_path, "'modalities' is empty"));
    }
    for (i, modality) in m.modalities.iter().enumerate() {
        if m.modalities[..i].contains(modality) {
            return Err(Error::file(
                json_path,
                format!("modality '{modality}' is listed twice in 'modalities'"),
            ));
        }
    }
    let root = json_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut labels = m.labels;
    labels.sort_by_key(|l| l.value);
    if labels.first().map(|l| l.value) != Some(0) {
        return Err(Error::file(
            json_path,
            "'labels' must include the background as value 0",
        ));
    }
    let classes: Vec<LabelClass> = labels
        .iter()
        .map(|l| LabelClass {
            name: l.name.clone(),
            file_value: l.value,
        })
        .collect();
    let mut regions = Vec::with_capacity(m.regions.len());
    for r in &m.regions {
        let members = r
            .labels
            .iter()
            .map(|name| {
                classes
                    .iter()
                    .position(|c| &c.name == name)
                    .map(|i| i as u8)
                    .ok_or_else(|| {
                        Error::file(
                            json_path,
                            format!("region '{}': unknown label '{name}'", r.name),
                        )
                    })
            })
            .collect::<Result<Vec<u8>>>()?;
        regions.push((r.name.clone(), members));
    }
    let label_spec =
        LabelSpec::new(classes, regions).map_err(|e| Error::file(json_path, e.to_string()))?;

    let mut missing = Vec::new();
    // Why an entry cannot be a case, in words; the others are listed all the same.
    let mut case_files =
        |c: &ManifestCase, allow_label: bool| -> std::result::Result<CaseFiles, String> {
            if let Some(why) = unusable_case_id(&c.id) {
                return Err(format!("case id {:?} {why}", c.id));
            }
            if let Some(extra) = c.images.keys().find(|k| !m.modalities.contains(k)) {
                return Err(format!(
                    "case {}: image '{extra}' is not one of the modalities {:?}",
                    c.id, m.modalities
                ));
            }
            let mut images = Vec::with_capacity(m.modalities.len());
            for (index, modality) in m.modalities.iter().enumerate() {
                let (rel, channel) = match c.images.get(modality) {
                    Some(ManifestImage::Path(p)) => (p, None),
                    Some(ManifestImage::Channel { path, channel }) => (path, Some(*channel)),
                    None => return Err(format!("case {}: no '{modality}' image", c.id)),
                };
                let path = resolve(&root, rel);
                note_missing(
                    &mut missing,
                    &c.id,
                    &path,
                    &format!("{modality} image file"),
                    Provides::Channel(index),
                );
                images.push(ImageFile {
                    modality: modality.clone(),
                    path,
                    channel,
                });
            }
            let label = match (&c.label, allow_label) {
                (Some(_), false) => {
                    return Err(format!("test case {}: test cases carry no label", c.id))
                }
                (Some(rel), true) => {
                    let path = resolve(&root, rel);
                    note_missing(&mut missing, &c.id, &path, "label file", Provides::Label);
                    Some(path)
                }
                (None, _) => None,
            };
            // One file (or 4D channel) for two modalities, or the label as an image, is a
            // mistake in the manifest: the network would see the same data twice, or the
            // answer.
            for (i, a) in images.iter().enumerate() {
                if let Some(b) = images[..i]
                    .iter()
                    .find(|b| b.path == a.path && b.channel.unwrap_or(0) == a.channel.unwrap_or(0))
                {
                    return Err(format!(
                        "case {}: images '{}' and '{}' are the same file{}",
                        c.id,
                        b.modality,
                        a.modality,
                        a.channel
                            .map_or(String::new(), |ch| format!(" and channel {ch}"))
                    ));
                }
                if label.as_ref() == Some(&a.path) {
                    return Err(format!(
                        "case {}: the label file is also its '{}' image",
                        c.id, a.modality
                    ));
                }
            }
            Ok(CaseFiles {
                id: c.id.clone(),
                images,
                label,
            })
        };
    let mut problems = Vec::new();
    let mut listed = |entries: &[ManifestCase], labels: bool| {
        let mut out = Vec::with_capacity(entries.len());
        for c in entries {
            match case_files(c, labels) {
                Ok(files) => out.push(files),
                Err(msg) => problems.push(ListingProblem {
                    case: None,
                    path: json_path.to_path_buf(),
                    msg,
                }),
            }
        }
        out
    };
    let cases = listed(&m.cases, true);
    let test_cases = listed(&m.test_cases, false);
    let all: Vec<&CaseFiles> = cases.iter().chain(&test_cases).collect();
    problems.extend(duplicate_ids(json_path, &all));
    let labelled = cases.iter().filter(|c| c.label.is_some()).count();
    if labelled > 0 && labelled < cases.len() {
        let missing = cases
            .iter()
            .find(|c| c.label.is_none())
            .expect("an unlabelled case");
        return Err(Error::file(
            json_path,
            format!(
                "case {}: missing label ({labelled} of {} cases have one; list unlabelled cases under test_cases)",
                missing.id,
                cases.len()
            ),
        ));
    }
    let dataset = Dataset {
        layout: LayoutKind::Manifest,
        root,
        modalities: m.modalities,
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

fn resolve(root: &Path, rel: &str) -> PathBuf {
    let p = Path::new(rel);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}
