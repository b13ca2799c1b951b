//! Dataset layouts: find the cases, their image files per modality and their label files,
//! and the label convention, from a folder in one of the layouts people use (BraTS 2021,
//! BraTS 2023+, MSD Task01, nnU-Net v2 raw) or from a voxseg JSON manifest.
use crate::data::labels::{LabelClass, LabelSpec};
use crate::error::{few, Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub mod brats;
pub mod manifest;
pub mod msd;
pub mod nnunet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    Brats2021,
    Brats2023,
    Msd,
    NnUnet,
    Manifest,
}

impl std::fmt::Display for LayoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LayoutKind::Brats2021 => "BraTS 2021",
            LayoutKind::Brats2023 => "BraTS 2023+",
            LayoutKind::Msd => "MSD",
            LayoutKind::NnUnet => "nnU-Net v2",
            LayoutKind::Manifest => "voxseg manifest",
        })
    }
}

/// One image of a case: which modality, which file, and which channel of a 4D file
/// (None for a 3D file).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageFile {
    pub modality: String,
    pub path: PathBuf,
    pub channel: Option<usize>,
}

/// The files of one case: one image per modality of the dataset, in the dataset's
/// modality order, and the label file if there is one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CaseFiles {
    pub id: String,
    pub images: Vec<ImageFile>,
    pub label: Option<PathBuf>,
}

/// A dataset found on disk.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dataset {
    pub layout: LayoutKind,
    pub root: PathBuf,
    /// Modality names as the layout spells them, in channel order.
    pub modalities: Vec<String>,
    pub label_spec: LabelSpec,
    /// The cases to train and validate on (in BraTS folders: every case folder).
    pub cases: Vec<CaseFiles>,
    /// Cases the layout lists as test cases, without labels (MSD `test`, nnU-Net
    /// `imagesTs`); empty for the other layouts.
    pub test_cases: Vec<CaseFiles>,
}

/// What a file the layout names provides to its case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provides {
    /// The image of one modality (an index into `Dataset::modalities`).
    Channel(usize),
    /// Every modality (a 4D image holding them all).
    AllChannels,
    Label,
}

/// A file the layout names that does not exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingFile {
    pub case: String,
    pub path: PathBuf,
    /// What the file is, e.g. "t2 image file" or "label file".
    pub what: String,
    pub provides: Provides,
}

impl MissingFile {
    /// Whether reading the modalities `channels` (and the labels, with `labels`) needs this
    /// file.
    pub fn needed_for(&self, channels: &[usize], labels: bool) -> bool {
        match self.provides {
            Provides::Channel(c) => channels.contains(&c),
            Provides::AllChannels => true,
            Provides::Label => labels,
        }
    }

    pub fn to_error(&self) -> Error {
        Error::file(
            &self.path,
            format!("case {}: missing {}", self.case, self.what),
        )
    }
}

/// What the layout found wrong while listing, beyond missing files: a file it cannot place
/// (a channel the dataset does not declare, two files for one image), a case listed twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingProblem {
    /// The case it belongs to; None for the dataset as a whole.
    pub case: Option<String>,
    pub path: PathBuf,
    pub msg: String,
}

impl ListingProblem {
    pub fn to_error(&self) -> Error {
        Error::file(&self.path, self.msg.clone())
    }
}

/// A dataset as its layout lists it, with the files it names that do not exist and the
/// other problems met while listing, so a command can report all of them (and the cases
/// that are fine) and need only the files of the modalities it reads.
#[derive(Clone, Debug)]
pub struct Listing {
    pub dataset: Dataset,
    pub missing: Vec<MissingFile>,
    pub problems: Vec<ListingProblem>,
}

impl Listing {
    /// An error naming the listing's problems (the first few), if it has any: no command
    /// may read a dataset whose layout it cannot trust.
    pub fn refuse_problems(&self) -> Result<()> {
        match self.problems.as_slice() {
            [] => Ok(()),
            [one] => Err(one.to_error()),
            many => {
                let named: Vec<String> = many.iter().map(|p| p.to_error().to_string()).collect();
                Err(self.for_check(format!("{} problems: {}", many.len(), few(&named))))
            }
        }
    }

    /// An error of the dataset saying `what`, and that `voxseg check` lists everything.
    fn for_check(&self, what: String) -> Error {
        let root = self.dataset.root.display();
        Error::data(
            format!("{} dataset {root}", self.dataset.layout),
            format!("{what}; `voxseg check --data {root}` lists them all"),
        )
    }

    /// The missing files of case `id` that reading `channels` needs.
    pub fn missing_for<'a>(
        &'a self,
        id: &'a str,
        channels: &'a [usize],
    ) -> impl Iterator<Item = &'a MissingFile> + 'a {
        self.missing
            .iter()
            .filter(move |m| m.case == id && m.needed_for(channels, true))
    }

    /// The dataset, when every file needed to read `channels` and the labels exists; else
    /// an error naming the missing files (all of them counted, the first few named).
    pub fn require(self, channels: &[usize]) -> Result<Dataset> {
        self.require_files(|m| m.needed_for(channels, true))
    }

    /// As [`Listing::require`], for a reader of labels only (evaluation): missing images
    /// are no obstacle.
    pub fn require_labels(self) -> Result<Dataset> {
        self.require_files(|m| matches!(m.provides, Provides::Label))
    }

    fn require_files(self, needed: impl Fn(&MissingFile) -> bool) -> Result<Dataset> {
        self.refuse_problems()?;
        let needed: Vec<&MissingFile> = self.missing.iter().filter(|m| needed(m)).collect();
        match needed.as_slice() {
            [] => Ok(self.dataset),
            [one] => Err(one.to_error()),
            many => {
                const SHOWN: usize = 4;
                let named: Vec<String> = many
                    .iter()
                    .take(SHOWN)
                    .map(|m| format!("{} (case {}, {})", m.path.display(), m.case, m.what))
                    .collect();
                let more = match many.len().saturating_sub(SHOWN) {
                    0 => String::new(),
                    n => format!(" and {n} more"),
                };
                Err(self.for_check(format!(
                    "{} files are missing: {}{more}",
                    many.len(),
                    named.join(", ")
                )))
            }
        }
    }

    /// `require` with every modality of the dataset.
    pub fn require_all(self) -> Result<Dataset> {
        let all = self.dataset.all_modalities();
        self.require(&all)
    }
}

/// Records `path` as missing unless it is a file.
pub(crate) fn note_missing(
    missing: &mut Vec<MissingFile>,
    case: &str,
    path: &Path,
    what: &str,
    provides: Provides,
) {
    if !path.is_file() {
        missing.push(MissingFile {
            case: case.to_string(),
            path: path.to_path_buf(),
            what: what.to_string(),
            provides,
        });
    }
}

/// A problem for each case id that `cases` hold more than once (found in `json_path`).
pub(crate) fn duplicate_ids(json_path: &Path, cases: &[&CaseFiles]) -> Vec<ListingProblem> {
    let mut ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    let mut repeated: Vec<&str> = ids
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    repeated.dedup();
    repeated
        .into_iter()
        .map(|id| ListingProblem {
            case: None,
            path: json_path.to_path_buf(),
            msg: format!("case id '{id}' appears twice"),
        })
        .collect()
}

/// Finds the layout of `path` and lists its cases, every file they need checked to exist.
/// `path` is a dataset folder or a manifest file; nothing is read beyond JSON.
pub fn detect(path: &Path) -> Result<Dataset> {
    list(path)?.require_all()
}

/// Finds the layout of `path` and lists its cases, with the files it names that do not
/// exist (see `Listing::require`).
pub fn list(path: &Path) -> Result<Listing> {
    if !path.exists() {
        return Err(Error::file(path, "does not exist"));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase());
    if path.is_file() && name.is_some_and(|n| n.ends_with(".nii") || n.ends_with(".nii.gz")) {
        return Err(Error::file(
            path,
            "is a NIfTI file, not a dataset folder or a JSON manifest: --data takes a BraTS, \
             MSD or nnU-Net folder, or a voxseg manifest",
        ));
    }
    let listing = if path.is_file() {
        from_json_file(path)?
    } else if path.join("dataset.json").is_file() {
        from_json_file(&path.join("dataset.json"))?
    } else {
        brats::detect(path)?
    };
    let dataset = &listing.dataset;
    if dataset.cases.is_empty() && dataset.test_cases.is_empty() {
        // Every case may have been set aside for a problem: those say why.
        listing.refuse_problems()?;
        return Err(Error::data(
            format!("{} dataset {}", dataset.layout, path.display()),
            "contains no cases",
        ));
    }
    Ok(listing)
}

fn from_json_file(path: &Path) -> Result<Listing> {
    let json = read_json(path)?;
    if json.get("format").and_then(|f| f.as_str()) == Some(manifest::FORMAT) {
        manifest::load(path, &json)
    } else if json.get("channel_names").is_some() {
        nnunet::load(path, &json)
    } else if json.get("modality").is_some() && json.get("training").is_some() {
        msd::load(path, &json)
    } else {
        Err(Error::file(
            path,
            format!(
                "unknown layout: expected an nnU-Net v2 dataset.json (channel_names), an MSD \
                 dataset.json (modality, training) or a voxseg manifest (\"format\": \"{}\")",
                manifest::FORMAT
            ),
        ))
    }
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let value =
        serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid JSON: {e}")))?;
    crate::json_keys::refuse_repeated_keys(text.as_bytes())
        .map_err(|e| Error::file(path, e.to_string()))?;
    Ok(value)
}

/// Names macOS and archivers leave behind (`._x.nii.gz`, `.DS_Store`, `__MACOSX`).
pub(crate) fn is_junk_name(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

/// The entries of a folder, sorted by name, without junk names.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::file(dir, format!("cannot list: {e}")))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::file(dir, format!("cannot list: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_junk_name(&name) {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

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

/// Alternative spellings of the four BraTS modalities across layouts (lower case).
pub(crate) const MODALITY_ALIASES: [&[&str]; 4] = [
    &["t1", "t1n", "t1w", "native t1"],
    &["t1ce", "t1c", "t1gd", "t1-gd", "t1post", "t1-ce"],
    &["t2", "t2w"],
    &["flair", "t2f", "t2-flair", "t2flair"],
];

/// Whether two modality names name the same modality: equal but for case, or aliases of
/// one BraTS modality (`T1` and `t1n`, `t1ce` and `T1c`, ...), as `select_modalities`
/// matches them.
pub fn same_modality(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim().to_ascii_lowercase(), b.trim().to_ascii_lowercase());
    a == b
        || MODALITY_ALIASES
            .iter()
            .any(|g| g.contains(&a.as_str()) && g.contains(&b.as_str()))
}

impl Dataset {
    /// Resolves requested modality names to indices into `modalities`, in the requested
    /// order. Names match case-insensitively, either exactly or as an alias of one of the
    /// BraTS modalities (t1/t1n/T1w, t1ce/t1c/t1gd, t2/t2w/T2w, flair/t2f/FLAIR).
    pub fn select_modalities<S: AsRef<str>>(&self, requested: &[S]) -> Result<Vec<usize>> {
        let mut out: Vec<usize> = Vec::with_capacity(requested.len());
        for name in requested {
            let want = name.as_ref().trim().to_ascii_lowercase();
            let exact = self
                .modalities
                .iter()
                .position(|m| m.to_ascii_lowercase() == want);
            let aliased = || self.modalities.iter().position(|m| same_modality(m, &want));
            let index = exact.or_else(aliased).ok_or_else(|| {
                Error::config(
                    "modalities",
                    format!(
                        "'{}' is not in this {} dataset; it has: {}",
                        name.as_ref(),
                        self.layout,
                        self.modalities.join(", ")
                    ),
                )
            })?;
            if out.contains(&index) {
                return Err(Error::config(
                    "modalities",
                    format!(
                        "'{}' selects {} a second time",
                        name.as_ref(),
                        self.modalities[index]
                    ),
                ));
            }
            out.push(index);
        }
        if out.is_empty() {
            return Err(Error::config("modalities", "no modality selected"));
        }
        Ok(out)
    }

    /// All modalities, in the dataset's order.
    pub fn all_modalities(&self) -> Vec<usize> {
        (0..self.modalities.len()).collect()
    }

    /// The requested modalities (`select_modalities`), or all of them when none is named.
    pub fn modalities_or_all<S: AsRef<str>>(&self, requested: &[S]) -> Result<Vec<usize>> {
        if requested.is_empty() {
            Ok(self.all_modalities())
        } else {
            self.select_modalities(requested)
        }
    }

    /// An error listing the cases without a label file, if any (training needs labels).
    pub fn require_labels(&self) -> Result<()> {
        let missing: Vec<&str> = self
            .cases
            .iter()
            .filter(|c| c.label.is_none())
            .map(|c| c.id.as_str())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::data(
                format!("dataset {}", self.root.display()),
                format!(
                    "{} case(s) have no label file: {}",
                    missing.len(),
                    missing.join(", ")
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(modalities: &[&str]) -> Dataset {
        Dataset {
            layout: LayoutKind::Msd,
            root: PathBuf::from("/d"),
            modalities: modalities.iter().map(|m| m.to_string()).collect(),
            label_spec: LabelSpec::brats2021(),
            cases: vec![],
            test_cases: vec![],
        }
    }

    /// An invalid label convention is the dataset.json's fault: the error names the file.
    #[test]
    fn label_spec_errors_name_the_dataset_json() {
        let dir = std::env::temp_dir().join(format!("voxseg-bad-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("dataset.json");
        std::fs::write(
            &json,
            r#"{"modality": {"0": "FLAIR"}, "training": [], "test": [],
                "labels": {"0": "background", "1": "edema", "2": "edema"}}"#,
        )
        .unwrap();
        let err = list(&dir).err().unwrap().to_string();
        assert!(
            err.contains(&json.display().to_string()) && err.contains("'edema' is used twice"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn modality_names_match_across_case_and_aliases() {
        assert!(same_modality("T1", "t1"));
        assert!(same_modality("FLAIR", "t2f"));
        assert!(same_modality("t1ce", "T1c"));
        assert!(same_modality("ADC", "adc"));
        assert!(!same_modality("t1", "t1ce"));
        assert!(!same_modality("t2", "flair"));
    }

    #[test]
    fn modality_selection_accepts_aliases_in_any_order() {
        let msd = dataset(&["FLAIR", "T1w", "t1gd", "T2w"]);
        assert_eq!(
            msd.select_modalities(&["t1", "t1ce", "t2", "flair"])
                .unwrap(),
            vec![1, 2, 3, 0]
        );
        assert_eq!(msd.select_modalities(&["T1GD"]).unwrap(), vec![2]);
        let b23 = dataset(&["t1n", "t1c", "t2w", "t2f"]);
        assert_eq!(
            b23.select_modalities(&["FLAIR", "T1ce"]).unwrap(),
            vec![3, 1]
        );
        let err = b23.select_modalities(&["dwi"]).unwrap_err().to_string();
        assert!(
            err.contains("dwi") && err.contains("t1n, t1c, t2w, t2f"),
            "{err}"
        );
        assert!(b23.select_modalities(&["t1", "t1n"]).is_err());
        assert!(b23.select_modalities::<&str>(&[]).is_err());
        assert_eq!(
            b23.modalities_or_all::<&str>(&[]).unwrap(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(b23.modalities_or_all(&["t2"]).unwrap(), vec![2]);
        assert!(b23.modalities_or_all(&["dwi"]).is_err());
    }
}
