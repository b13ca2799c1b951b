//! Which cases of a dataset `predict --split` means: the run's train/val/test ids from its
//! `split.json`, and the dataset's unlabelled cases (nnU-Net `imagesTs`, MSD `test`,
//! manifest `test_cases`), which are test data by definition.
use crate::data::layout::{CaseFiles, Dataset};
use crate::data::split::{Split, Subset};
use crate::error::few;
use crate::error::{Error, Result};
use crate::train::run::RunDir;
use std::collections::HashSet;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictSplit {
    /// The run's held-out test cases plus the dataset's unlabelled cases.
    Test,
    /// The run's validation cases.
    Val,
    /// The run's training cases.
    Train,
    /// Only the dataset's unlabelled cases.
    Unlabelled,
    /// Every case, labelled or not.
    All,
}

impl std::str::FromStr for PredictSplit {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "test" => Ok(PredictSplit::Test),
            "val" => Ok(PredictSplit::Val),
            "train" => Ok(PredictSplit::Train),
            "unlabelled" | "unlabeled" => Ok(PredictSplit::Unlabelled),
            "all" => Ok(PredictSplit::All),
            _ => Err(Error::config(
                "split",
                format!("'{s}': expected test, val, train, unlabelled or all"),
            )),
        }
    }
}

/// The cases of `dataset` that `split` selects, in the dataset's order. The run's
/// `split.json` is read only for test, val and train, and only when the dataset has
/// labelled cases.
pub fn select_cases(
    dataset: &Dataset,
    run: &RunDir,
    split: PredictSplit,
) -> Result<Vec<CaseFiles>> {
    let mut seen = HashSet::new();
    if let Some(twice) = dataset
        .cases
        .iter()
        .chain(&dataset.test_cases)
        .find(|c| !seen.insert(c.id.as_str()))
    {
        return Err(Error::data(
            format!("dataset {}", dataset.root.display()),
            format!(
                "case id {} appears twice (labelled and unlabelled cases would write the same \
                 prediction file)",
                twice.id
            ),
        ));
    }
    let from_split = |subset: Subset| -> Result<Vec<CaseFiles>> {
        if dataset.cases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = dataset.cases.iter().map(|c| c.id.clone()).collect();
        let split = Split::load(&run.split(), &ids)
            .map_err(|e| from_another_dataset(e, &run.split(), dataset, &ids))?;
        let wanted = split.subset(subset);
        Ok(dataset
            .cases
            .iter()
            .filter(|c| wanted.contains(&c.id))
            .cloned()
            .collect())
    };
    let unlabelled = dataset.test_cases.clone();
    let cases = match split {
        PredictSplit::Test => {
            let mut held_out = from_split(Subset::Test)?;
            held_out.extend(unlabelled);
            held_out
        }
        PredictSplit::Val => from_split(Subset::Val)?,
        PredictSplit::Train => from_split(Subset::Train)?,
        PredictSplit::Unlabelled => unlabelled,
        PredictSplit::All => dataset.cases.iter().cloned().chain(unlabelled).collect(),
    };
    if cases.is_empty() {
        let why = match split {
            PredictSplit::Unlabelled => "the dataset lists no unlabelled (test) cases".to_string(),
            _ => format!("{} selects none of its cases", run.split().display()),
        };
        return Err(Error::data(
            format!("predict --split {split:?}").to_ascii_lowercase(),
            format!("no cases to predict in {}: {why}", dataset.root.display()),
        ));
    }
    Ok(cases)
}

/// Turns a split file error into one that says what to do when the run's split names
/// cases the dataset lacks (the run was trained on another dataset); other errors pass.
fn from_another_dataset(e: Error, path: &Path, dataset: &Dataset, ids: &[String]) -> Error {
    let Some(split) = std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Split>(&bytes).ok())
    else {
        return e;
    };
    let listed: Vec<String> = Subset::ALL.map(|s| split.subset(s)).concat();
    let foreign: Vec<&str> = listed
        .iter()
        .filter(|id| !ids.contains(id))
        .map(|id| id.as_str())
        .collect();
    if foreign.is_empty() {
        return e;
    }
    Error::file(
        path,
        format!(
            "{} of the run's {} cases are not cases of {} ({}): the run was trained on \
             another dataset, so its test/val/train split does not apply; use --split all \
             (every case) or --split unlabelled (the dataset's unlabelled cases)",
            foreign.len(),
            listed.len(),
            dataset.root.display(),
            few(&foreign)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::labels::LabelSpec;
    use crate::data::layout::LayoutKind;
    use std::path::PathBuf;

    fn case(id: &str, labelled: bool) -> CaseFiles {
        CaseFiles {
            id: id.into(),
            images: Vec::new(),
            label: labelled.then(|| PathBuf::from(format!("{id}_seg.nii.gz"))),
        }
    }

    fn ids(cases: &[CaseFiles]) -> Vec<&str> {
        cases.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn splits_select_run_ids_and_unlabelled_cases() {
        let dir = std::env::temp_dir().join(format!("voxseg-select-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = RunDir { root: dir.clone() };
        let labelled: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        Split::from_lists(
            vec!["a".into(), "b".into()],
            vec!["c".into()],
            vec!["d".into()],
            &labelled,
        )
        .unwrap()
        .save(&run.split())
        .unwrap();
        let mut dataset = Dataset {
            layout: LayoutKind::Msd,
            root: PathBuf::from("/d"),
            modalities: vec!["t1".into()],
            label_spec: LabelSpec::brats2021(),
            cases: labelled.iter().map(|id| case(id, true)).collect(),
            test_cases: vec![case("u", false)],
        };
        let pick = |d: &Dataset, s: &str| select_cases(d, &run, s.parse().unwrap());
        assert_eq!(ids(&pick(&dataset, "test").unwrap()), ["d", "u"]);
        assert_eq!(ids(&pick(&dataset, "val").unwrap()), ["c"]);
        assert_eq!(ids(&pick(&dataset, "train").unwrap()), ["a", "b"]);
        assert_eq!(ids(&pick(&dataset, "unlabelled").unwrap()), ["u"]);
        assert_eq!(
            ids(&pick(&dataset, "ALL").unwrap()),
            ["a", "b", "c", "d", "u"]
        );
        let err = "fold0".parse::<PredictSplit>().unwrap_err().to_string();
        assert!(
            err.contains("'fold0'") && err.contains("unlabelled"),
            "{err}"
        );

        dataset.test_cases.push(case("a", false));
        let err = pick(&dataset, "all").unwrap_err().to_string();
        assert!(err.contains("case id a appears twice"), "{err}");
        dataset.test_cases.clear();
        let err = pick(&dataset, "unlabelled").unwrap_err().to_string();
        assert!(err.contains("no unlabelled"), "{err}");

        // Another dataset: the run's split names cases it lacks, and the fix is named.
        dataset.cases = vec![case("a", true), case("x", true)];
        let err = pick(&dataset, "test").unwrap_err().to_string();
        assert!(
            err.contains("3 of the run's 4 cases are not cases of /d (b, c, d)")
                && err.contains("--split all")
                && err.contains("--split unlabelled"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
