//! BraTS folders: one folder per case, named like the case, holding one file per modality
//! and the segmentation. 2021: `CASE/CASE_{t1,t1ce,t2,flair,seg}.nii.gz`, labels 0,1,2,4.
//! 2023 and later: `CASE/CASE-{t1n,t1c,t2w,t2f,seg}.nii.gz`, enhancing = 3.
use super::{
    list_dir, CaseFiles, Dataset, ImageFile, LayoutKind, Listing, ListingProblem, MissingFile,
    Provides,
};
use crate::data::labels::LabelSpec;
use crate::error::{few, Error, Result};
use std::path::{Path, PathBuf};

struct Convention {
    kind: LayoutKind,
    separator: char,
    modalities: [&'static str; 4],
}

const BRATS2021: Convention = Convention {
    kind: LayoutKind::Brats2021,
    separator: '_',
    modalities: ["t1", "t1ce", "t2", "flair"],
};

const BRATS2023: Convention = Convention {
    kind: LayoutKind::Brats2023,
    separator: '-',
    modalities: ["t1n", "t1c", "t2w", "t2f"],
};

impl Convention {
    /// The case's files for `suffix` that exist: the .nii.gz, the .nii, or both.
    fn find(&self, dir: &Path, id: &str, suffix: &str) -> Vec<PathBuf> {
        ["nii.gz", "nii"]
            .iter()
            .map(|ext| dir.join(format!("{id}{}{suffix}.{ext}", self.separator)))
            .filter(|p| p.is_file())
            .collect()
    }

    /// The case's file for `suffix`, if one exists. Both a .nii.gz and a .nii may be two
    /// versions of the image: which one is meant cannot be told, so that is a problem (the
    /// .nii.gz is listed, to check the rest of the case).
    fn one(
        &self,
        dir: &Path,
        id: &str,
        suffix: &str,
        problems: &mut Vec<ListingProblem>,
    ) -> Option<PathBuf> {
        let mut found = self.find(dir, id, suffix);
        if let [gz, nii] = found.as_slice() {
            problems.push(ListingProblem {
                case: Some(id.to_string()),
                path: nii.clone(),
                msg: format!(
                    "case {id}: both this file and {} exist; remove the one that is not meant",
                    gz.display()
                ),
            });
        }
        found.truncate(1);
        found.pop()
    }

    fn expected(&self, dir: &Path, id: &str, suffix: &str) -> PathBuf {
        dir.join(format!("{id}{}{suffix}.nii.gz", self.separator))
    }

    /// Whether the case folder holds a file of this convention: an image, or only the
    /// segmentation (a reference folder for evaluate, which scores labels alone).
    fn matches(&self, dir: &Path, id: &str) -> bool {
        self.modalities
            .iter()
            .chain(&["seg"])
            .any(|m| !self.find(dir, id, m).is_empty())
    }
}

/// Lists the cases of a BraTS folder; every sub-folder (junk names aside) is a case and
/// must hold every modality (a missing one is listed in `Listing::missing`). Labels: all
/// cases or none (a validation/test folder); where only some cases lack one, theirs are
/// missing too.
pub fn detect(root: &Path) -> Result<Listing> {
    let entries = list_dir(root)?;
    let case_dirs: Vec<(String, PathBuf)> = entries
        .iter()
        .filter(|(_, p)| p.is_dir())
        .cloned()
        .collect();
    if case_dirs.is_empty() {
        return Err(Error::file(
            root,
            if entries.is_empty() {
                "empty dataset folder: no case folders and no dataset.json".to_string()
            } else {
                format!(
                    "unknown layout: no case folders and no dataset.json (found {})",
                    preview(&entries)
                )
            },
        ));
    }
    let convention = [&BRATS2021, &BRATS2023]
        .into_iter()
        .find(|c| case_dirs.iter().any(|(id, dir)| c.matches(dir, id)))
        .ok_or_else(|| {
            Error::file(
                root,
                format!(
                    "unknown layout: the folders ({}) hold no BraTS-named files \
                     (CASE/CASE_t1.nii.gz, CASE/CASE-t1n.nii.gz or CASE/CASE_seg.nii.gz), and \
                     there is no dataset.json",
                    preview(&case_dirs)
                ),
            )
        })?;

    let mut cases = Vec::with_capacity(case_dirs.len());
    let (mut missing, mut problems) = (Vec::new(), Vec::new());
    for (id, dir) in &case_dirs {
        let mut images = Vec::with_capacity(4);
        for (c, m) in convention.modalities.iter().enumerate() {
            let path = convention
                .one(dir, id, m, &mut problems)
                .unwrap_or_else(|| {
                    let expected = convention.expected(dir, id, m);
                    missing.push(MissingFile {
                        case: id.clone(),
                        path: expected.clone(),
                        what: format!("{m} image file"),
                        provides: Provides::Channel(c),
                    });
                    expected
                });
            images.push(ImageFile {
                modality: m.to_string(),
                path,
                channel: None,
            });
        }
        cases.push(CaseFiles {
            id: id.clone(),
            images,
            label: convention.one(dir, id, "seg", &mut problems),
        });
    }
    let labelled = cases.iter().filter(|c| c.label.is_some()).count();
    if labelled > 0 && labelled < cases.len() {
        for ((id, dir), case) in case_dirs.iter().zip(cases.iter_mut()) {
            if case.label.is_none() {
                let expected = convention.expected(dir, id, "seg");
                missing.push(MissingFile {
                    case: id.clone(),
                    path: expected.clone(),
                    what: format!(
                        "label file ({labelled} of {} cases have one)",
                        case_dirs.len()
                    ),
                    provides: Provides::Label,
                });
                case.label = Some(expected);
            }
        }
    }
    let dataset = Dataset {
        layout: convention.kind,
        root: root.to_path_buf(),
        modalities: convention
            .modalities
            .iter()
            .map(|m| m.to_string())
            .collect(),
        label_spec: match convention.kind {
            LayoutKind::Brats2021 => LabelSpec::brats2021(),
            _ => LabelSpec::brats2023(),
        },
        cases,
        test_cases: Vec::new(),
    };
    Ok(Listing {
        dataset,
        missing,
        problems,
    })
}

fn preview(entries: &[(String, PathBuf)]) -> String {
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    few(&names)
}
