//! The train / validation / test split: made once from a seed (or given as lists), saved to
//! `split.json`, and on resume read back from it (the file wins over the options).
//!
//! Test cases are kept away from training by type: training and validation code takes a
//! `TrainVal`, which holds only train and validation ids; the test ids come out of a `Split`
//! only through `Split::test_ids`, which evaluation calls.
use crate::error::{few, Error, Result};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// Fractions of the cases for train, validation and test; they must sum to 1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitFractions {
    pub train: f64,
    pub val: f64,
    pub test: f64,
}

impl Default for SplitFractions {
    fn default() -> Self {
        Self {
            train: 0.7,
            val: 0.15,
            test: 0.15,
        }
    }
}

/// A split of a dataset's case ids into three disjoint lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    train: Vec<String>,
    val: Vec<String>,
    test: Vec<String>,
}

/// One of a split's three lists; "train", "val" or "test" in flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subset {
    Train,
    Val,
    Test,
}

impl Subset {
    pub const ALL: [Subset; 3] = [Subset::Train, Subset::Val, Subset::Test];
}

impl std::str::FromStr for Subset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "train" => Ok(Subset::Train),
            "val" => Ok(Subset::Val),
            "test" => Ok(Subset::Test),
            _ => Err(Error::config(
                "subset",
                format!("'{s}': expected test, val or train"),
            )),
        }
    }
}

/// One fold of nnU-Net's `splits_final.json`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FoldLists {
    train: Vec<String>,
    val: Vec<String>,
}

/// The part of a split that training and validation may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainVal {
    train: Vec<String>,
    val: Vec<String>,
}

impl TrainVal {
    pub fn train(&self) -> &[String] {
        &self.train
    }
    pub fn val(&self) -> &[String] {
        &self.val
    }
}

fn check_unique(ids: &[String], what: &str) -> Result<HashSet<String>> {
    let mut seen = HashSet::with_capacity(ids.len());
    for id in ids {
        if !seen.insert(id.clone()) {
            return Err(Error::data(what, format!("case '{id}' appears twice")));
        }
    }
    Ok(seen)
}

impl Split {
    /// A seeded random split of `ids` by `fractions`. The result depends only on the set of
    /// ids and the seed, not on their order. Every part whose fraction is positive gets at
    /// least one case when there are enough cases; training always gets at least one.
    pub fn by_fractions(ids: &[String], fractions: SplitFractions, seed: u64) -> Result<Split> {
        let f = [fractions.train, fractions.val, fractions.test];
        if f.iter().any(|&x| !(0.0..=1.0).contains(&x))
            || (f.iter().sum::<f64>() - 1.0).abs() > 1e-6
            || f[0] == 0.0
        {
            return Err(Error::config(
                "split fractions",
                format!("need values in [0, 1] summing to 1 with train > 0, got {f:?}"),
            ));
        }
        check_unique(ids, "split")?;
        if ids.is_empty() {
            return Err(Error::data("split", "the dataset has no cases"));
        }
        let n = ids.len();
        let mut sorted = ids.to_vec();
        sorted.sort();
        Rng::new(seed).fork(0x5_9117).shuffle(&mut sorted);
        // Validation and test sizes rounded, raised to 1 where their fraction is positive,
        // then lowered (test first) while training would be left empty.
        let mut sizes = [1, 2].map(|p| {
            let k = (f[p] * n as f64).round() as usize;
            if f[p] > 0.0 {
                k.max(1)
            } else {
                0
            }
        });
        while sizes[0] + sizes[1] >= n {
            let p = if sizes[1] > 0 { 1 } else { 0 };
            sizes[p] -= 1;
        }
        let test = sorted.split_off(n - sizes[1]);
        let val = sorted.split_off(n - sizes[1] - sizes[0]);
        Ok(Split {
            train: sorted,
            val,
            test,
        })
    }

    /// Fold `fold` of `folds`-fold cross-validation: the test cases are those of
    /// `by_fractions(ids, fractions, seed)`, the same for every fold; the other cases are
    /// shuffled once by the seed and dealt into `folds` parts, and fold k validates on part k
    /// and trains on the rest (nnU-Net's 5-fold scheme, with a test set kept apart).
    pub fn fold(
        ids: &[String],
        fractions: SplitFractions,
        seed: u64,
        folds: usize,
        fold: usize,
    ) -> Result<Split> {
        if folds < 2 || fold >= folds {
            return Err(Error::config(
                "fold",
                format!("fold {fold} of {folds}: need at least 2 folds and 0 <= fold < folds"),
            ));
        }
        let held_out = Split::by_fractions(ids, fractions, seed)?;
        let mut rest: Vec<String> = held_out.train.into_iter().chain(held_out.val).collect();
        if rest.len() < folds {
            return Err(Error::data(
                "split",
                format!(
                    "{} cases outside the test set cannot make {folds} folds",
                    rest.len()
                ),
            ));
        }
        rest.sort();
        Rng::new(seed).fork(0xF01D).shuffle(&mut rest);
        let (train, val) = rest
            .into_iter()
            .enumerate()
            .partition::<Vec<_>, _>(|(i, _)| i % folds != fold);
        let ids_of = |v: Vec<(usize, String)>| v.into_iter().map(|(_, id)| id).collect();
        Ok(Split {
            train: ids_of(train),
            val: ids_of(val),
            test: held_out.test,
        })
    }

    /// A split from explicit lists, checked against the dataset's ids: disjoint, no unknown
    /// case, training not empty. Cases of the dataset in no list are left out.
    pub fn from_lists(
        train: Vec<String>,
        val: Vec<String>,
        test: Vec<String>,
        dataset: &[String],
    ) -> Result<Split> {
        let split = Split { train, val, test };
        split.check(dataset)?;
        Ok(split)
    }

    fn check(&self, dataset: &[String]) -> Result<()> {
        let known = check_unique(dataset, "dataset")?;
        let all = self.check_each_case_once()?;
        if let Some(unknown) = all.iter().find(|id| !known.contains(*id)) {
            return Err(Error::data(
                "split",
                format!("case '{unknown}' is not in the dataset"),
            ));
        }
        if self.train.is_empty() {
            return Err(Error::data("split", "no training cases"));
        }
        Ok(())
    }

    /// The split's cases, each of which must appear once (in one subset, once there).
    pub fn check_each_case_once(&self) -> Result<Vec<String>> {
        let all: Vec<String> = [&self.train, &self.val, &self.test]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        check_unique(&all, "split")?;
        Ok(all)
    }

    /// What training and validation may see.
    pub fn train_val(&self) -> TrainVal {
        TrainVal {
            train: self.train.clone(),
            val: self.val.clone(),
        }
    }

    /// The held-out test cases, for final evaluation only.
    pub fn test_ids(&self) -> &[String] {
        &self.test
    }

    /// The ids of one subset, for prediction and evaluation once training is done.
    pub fn subset(&self, subset: Subset) -> &[String] {
        match subset {
            Subset::Train => &self.train,
            Subset::Val => &self.val,
            Subset::Test => &self.test,
        }
    }

    /// Writes the split as JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::file(path, e.to_string()))?;
        crate::atomic::write_bytes(path, &json)
    }

    /// Reads a split written by `save` and checks it against the dataset's ids.
    pub fn load(path: &Path, dataset: &[String]) -> Result<Split> {
        let split = Self::read(path)?;
        split
            .check(dataset)
            .map_err(|e| Error::file(path, e.to_string()))?;
        Ok(split)
    }

    /// Reads a split written by `save`, without a dataset to check it against.
    pub fn read(path: &Path) -> Result<Split> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::from_json(&bytes).map_err(|e| Error::file(path, e))
    }

    /// A split's JSON: an object of the three lists. serde alone would also read a list of
    /// three lists, by position.
    pub fn from_json(bytes: &[u8]) -> std::result::Result<Split, String> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if !value.is_object() {
            return Err(
                "expected an object of lists: {\"train\": [..], \"val\": [..], \"test\": [..]}"
                    .into(),
            );
        }
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    /// The split a `--split-file` gives: our `{"train", "val", "test"}` lists, or with
    /// `fold` entry `fold` of nnU-Net's `splits_final.json` (a list of `{"train", "val"}`),
    /// whose test set is empty. `unlabelled` is how many unlabelled cases the dataset has
    /// (they are what `predict --split test` predicts then). Also returns notes for the
    /// user: labelled cases no list names (unused), and what a fold's test set is.
    pub fn from_split_file(
        path: &Path,
        dataset: &[String],
        fold: Option<usize>,
        unlabelled: usize,
    ) -> Result<(Split, Vec<String>)> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::file(path, e.to_string()))?;
        crate::json_keys::refuse_repeated_keys(&bytes)
            .map_err(|e| Error::file(path, e.to_string()))?;
        let mut notes = Vec::new();
        let split = match (value, fold) {
            (serde_json::Value::Array(folds), _) if folds.is_empty() => {
                return Err(Error::file(
                    path,
                    "is an empty list: nnU-Net's splits_final.json holds one {\"train\", \"val\"} \
                     entry per fold"
                        .to_string(),
                ))
            }
            (serde_json::Value::Array(folds), None) => {
                return Err(Error::file(
                    path,
                    format!(
                        "holds {} folds (nnU-Net's splits_final.json): choose one with --fold K \
                         (0 to {})",
                        folds.len(),
                        folds.len() - 1
                    ),
                ))
            }
            (serde_json::Value::Array(mut folds), Some(k)) => {
                if k >= folds.len() {
                    return Err(Error::file(
                        path,
                        format!(
                            "--fold {k}: the file holds {} fold(s), 0 to {}",
                            folds.len(),
                            folds.len() - 1
                        ),
                    ));
                }
                let entry = folds.swap_remove(k);
                if !entry.is_object() {
                    return Err(Error::file(
                        path,
                        format!("fold {k}: expected an object {{\"train\": [..], \"val\": [..]}}"),
                    ));
                }
                let lists: FoldLists = serde_json::from_value(entry)
                    .map_err(|e| Error::file(path, format!("fold {k}: {e}")))?;
                let test = if unlabelled > 0 {
                    format!(
                        "the test set holds no labelled case; `predict --split test` predicts \
                         the dataset's {unlabelled} unlabelled case(s)"
                    )
                } else {
                    "the test set is empty (nnU-Net's folds hold train and validation cases \
                     only)"
                        .to_string()
                };
                notes.push(format!(
                    "{}: fold {k}: {} train / {} val cases; {test}",
                    path.display(),
                    lists.train.len(),
                    lists.val.len()
                ));
                Split {
                    train: lists.train,
                    val: lists.val,
                    test: Vec::new(),
                }
            }
            (value @ serde_json::Value::Object(_), None) => {
                serde_json::from_value(value).map_err(|e| Error::file(path, e.to_string()))?
            }
            (serde_json::Value::Object(_), Some(_)) => {
                return Err(Error::file(
                    path,
                    "holds one split (train, val and test lists), so there is no fold to \
                     choose: give --fold or --split-file, not both (--fold picks an entry of \
                     nnU-Net's splits_final.json, a list of {\"train\", \"val\"})",
                ))
            }
            (_, _) => {
                return Err(Error::file(
                    path,
                    "expected {\"train\": [..], \"val\": [..], \"test\": [..]} or nnU-Net's \
                     splits_final.json (a list of {\"train\", \"val\"})",
                ))
            }
        };
        split
            .check(dataset)
            .map_err(|e| Error::file(path, e.to_string()))?;
        let listed: HashSet<&String> = [&split.train, &split.val, &split.test]
            .into_iter()
            .flatten()
            .collect();
        let unused: Vec<&str> = dataset
            .iter()
            .filter(|id| !listed.contains(id))
            .map(String::as_str)
            .collect();
        if !unused.is_empty() {
            notes.push(format!(
                "{}: {} labelled case(s) are in none of its lists and go unused: {}",
                path.display(),
                unused.len(),
                few(&unused)
            ));
        }
        Ok((split, notes))
    }

    /// On resume the existing file wins; otherwise `make` builds the split, which is saved.
    pub fn load_or_create(
        path: &Path,
        dataset: &[String],
        make: impl FnOnce() -> Result<Split>,
    ) -> Result<Split> {
        if path.exists() {
            return Split::load(path, dataset);
        }
        let split = make()?;
        split.check(dataset)?;
        split.save(path)?;
        Ok(split)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("case_{i:03}")).collect()
    }

    #[test]
    fn subsets_are_named_and_give_their_lists() {
        let split = Split::by_fractions(&ids(20), SplitFractions::default(), 3).unwrap();
        assert_eq!(split.subset("TEST".parse().unwrap()), split.test_ids());
        assert_eq!(
            split.subset("val".parse().unwrap()),
            split.train_val().val()
        );
        assert_eq!(
            split.subset("train".parse().unwrap()),
            split.train_val().train()
        );
        let err = "dev".parse::<Subset>().unwrap_err().to_string();
        assert!(
            err.contains("'dev'") && err.contains("test, val or train"),
            "{err}"
        );
    }

    /// A list of three lists would be read by position: only an object is a split.
    #[test]
    fn a_split_is_an_object_of_three_lists() {
        let split = Split::from_json(br#"{"train": ["a"], "val": ["b"], "test": ["c"]}"#).unwrap();
        assert_eq!(
            (split.train, split.val, split.test),
            (
                vec!["a".to_string()],
                vec!["b".to_string()],
                vec!["c".to_string()]
            )
        );
        for json in [r#"[["a"], ["b"], ["c"]]"#, "[]", r#""train""#] {
            let err = Split::from_json(json.as_bytes()).unwrap_err();
            assert!(
                err.starts_with("expected an object of lists"),
                "{json}: {err}"
            );
        }
        let dir = std::env::temp_dir().join(format!("voxseg-split-fold-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("splits_final.json");
        std::fs::write(&path, r#"[[["a"], ["b"]]]"#).unwrap();
        let ids = ["a".to_string(), "b".to_string()];
        let err = Split::from_split_file(&path, &ids, Some(0), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fold 0: expected an object"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn split_is_deterministic_disjoint_and_complete() {
        let all = ids(40);
        let a = Split::by_fractions(&all, SplitFractions::default(), 11).unwrap();
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(
            a,
            Split::by_fractions(&reversed, SplitFractions::default(), 11).unwrap()
        );
        assert_ne!(
            a,
            Split::by_fractions(&all, SplitFractions::default(), 12).unwrap()
        );
        assert_eq!((a.train.len(), a.val.len(), a.test.len()), (28, 6, 6));
        let mut union: Vec<String> = [&a.train, &a.val, &a.test]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        union.sort();
        assert_eq!(union, all, "disjoint and complete");
        let tv = a.train_val();
        assert!(tv
            .train()
            .iter()
            .chain(tv.val())
            .all(|id| !a.test_ids().contains(id)));
    }

    #[test]
    fn folds_share_the_test_set_and_validate_on_each_case_once() {
        let all = ids(23);
        let f = SplitFractions::default();
        let folds: Vec<Split> = (0..5)
            .map(|k| Split::fold(&all, f, 7, 5, k).unwrap())
            .collect();
        let held_out = Split::by_fractions(&all, f, 7).unwrap();
        let mut validated: Vec<String> = Vec::new();
        for s in &folds {
            assert_eq!(s.test, held_out.test);
            assert_eq!(s.train.len() + s.val.len() + s.test.len(), 23);
            assert!(s.val.len() == 4 || s.val.len() == 3, "{}", s.val.len());
            assert!(s
                .val
                .iter()
                .all(|id| !s.train.contains(id) && !s.test.contains(id)));
            validated.extend(s.val.iter().cloned());
        }
        validated.sort();
        let mut outside_test: Vec<String> = held_out
            .train
            .iter()
            .chain(&held_out.val)
            .cloned()
            .collect();
        outside_test.sort();
        assert_eq!(
            validated, outside_test,
            "each non-test case validated exactly once"
        );
        assert_eq!(folds[2], Split::fold(&all, f, 7, 5, 2).unwrap());
        assert!(Split::fold(&all, f, 7, 5, 5).is_err());
        assert!(Split::fold(&all, f, 7, 1, 0).is_err());
        assert!(Split::fold(&ids(4), f, 7, 5, 0).is_err());
    }

    #[test]
    fn small_datasets_get_one_case_per_part_and_no_test_when_asked() {
        let s = Split::by_fractions(&ids(3), SplitFractions::default(), 1).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (1, 1, 1));
        let s = Split::by_fractions(&ids(2), SplitFractions::default(), 1).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (1, 1, 0));
        let s = Split::by_fractions(&ids(1), SplitFractions::default(), 1).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (1, 0, 0));
        let f = SplitFractions {
            train: 0.8,
            val: 0.2,
            test: 0.0,
        };
        let s = Split::by_fractions(&ids(10), f, 1).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (8, 2, 0));
        let bad = SplitFractions {
            train: 0.5,
            val: 0.2,
            test: 0.2,
        };
        assert!(Split::by_fractions(&ids(10), bad, 1).is_err());
    }

    #[test]
    fn split_files_name_unused_cases_and_read_nnunet_folds() {
        let dir = std::env::temp_dir().join(format!("voxseg-split-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let all = ids(8);
        let write = |name: &str, json: serde_json::Value| {
            let path = dir.join(name);
            std::fs::write(&path, json.to_string()).unwrap();
            path
        };
        let partial = write(
            "partial.json",
            serde_json::json!({"train": &all[..4], "val": [&all[4]], "test": [&all[5]]}),
        );
        let (split, notes) = Split::from_split_file(&partial, &all, None, 0).unwrap();
        assert_eq!(
            (split.train.len(), split.val.len(), split.test.len()),
            (4, 1, 1)
        );
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].ends_with(
                "2 labelled case(s) are in none of its lists and go unused: case_006, case_007"
            ),
            "{}",
            notes[0]
        );
        let err = Split::from_split_file(&partial, &all, Some(0), 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not both") && err.contains("splits_final.json"),
            "{err}"
        );

        let folds = write(
            "splits_final.json",
            serde_json::json!([
                {"train": &all[..6], "val": &all[6..]},
                {"train": &all[2..], "val": &all[..2]},
            ]),
        );
        let err = Split::from_split_file(&folds, &all, None, 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("holds 2 folds") && err.contains("--fold K (0 to 1)"),
            "{err}"
        );
        let empty = write("empty_splits.json", serde_json::json!([]));
        for fold in [None, Some(0)] {
            let err = Split::from_split_file(&empty, &all, fold, 0)
                .unwrap_err()
                .to_string();
            assert!(err.contains("is an empty list"), "{err}");
        }
        let (split, notes) = Split::from_split_file(&folds, &all, Some(1), 0).unwrap();
        assert_eq!(split.train, all[2..].to_vec());
        assert_eq!(split.val, all[..2].to_vec());
        assert!(split.test.is_empty());
        assert_eq!(notes.len(), 1, "every case is listed: {notes:?}");
        assert!(notes[0].contains("fold 1: 6 train / 2 val cases; the test set is empty"));
        let (_, notes) = Split::from_split_file(&folds, &all, Some(0), 3).unwrap();
        assert!(
            notes[0].contains("the dataset's 3 unlabelled case(s)"),
            "{notes:?}"
        );
        let err = Split::from_split_file(&folds, &all, Some(2), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--fold 2: the file holds 2 fold(s)"), "{err}");
        let typo = write(
            "typo.json",
            serde_json::json!([{"train": &all[..2], "valid": []}]),
        );
        let err = Split::from_split_file(&typo, &all, Some(0), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fold 0: unknown field `valid`"), "{err}");
        // serde_json would keep the second `val` silently.
        let twice = dir.join("twice.json");
        std::fs::write(
            &twice,
            r#"{"train": ["case_000"], "val": [], "val": ["case_001"]}"#,
        )
        .unwrap();
        let err = Split::from_split_file(&twice, &all, None, 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("twice.json") && err.contains("key `val` given twice"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn split_file_round_trips_wins_on_resume_and_rejects_unknown_cases() {
        let dir = std::env::temp_dir().join(format!("voxseg-split-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("split.json");
        let all = ids(10);
        let first = Split::load_or_create(&path, &all, || {
            Split::by_fractions(&all, SplitFractions::default(), 5)
        })
        .unwrap();
        assert_eq!(Split::load(&path, &all).unwrap(), first);
        // Resume with another seed: the file wins.
        let again = Split::load_or_create(&path, &all, || {
            Split::by_fractions(&all, SplitFractions::default(), 6)
        })
        .unwrap();
        assert_eq!(again, first);
        // A listed case missing from the dataset is an error naming it.
        let fewer: Vec<String> = all
            .iter()
            .filter(|id| *id != &first.val[0])
            .cloned()
            .collect();
        let err = Split::load(&path, &fewer).unwrap_err().to_string();
        assert!(
            err.contains(&first.val[0]) && err.contains("split.json"),
            "{err}"
        );
        // Explicit lists are checked too.
        let overlap = Split::from_lists(ids(3), vec!["case_002".into()], vec![], &all);
        assert!(overlap.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
