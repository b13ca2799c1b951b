//! `model.json`: everything `predict` needs besides the weights: the architecture, the
//! modalities in input order, the label convention and target, the preprocessing (with
//! dataset statistics when used) and the patch the model was trained on.
use crate::data::labels::{LabelSpec, TargetSpec};
use crate::data::layout::LayoutKind;
use crate::data::preprocess::PreprocessSpec;
use crate::error::{Error, Result};
use crate::nn::ModelSpec;
use crate::train::plan::Plan;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelCard {
    pub format: String,
    pub model: ModelSpec,
    /// Modality names as the training dataset spells them, in input-channel order.
    pub modalities: Vec<String>,
    /// The layout the model was trained on: predictions are written in its label convention.
    pub layout: LayoutKind,
    pub label_spec: LabelSpec,
    pub target: TargetSpec,
    pub preprocess: PreprocessSpec,
    pub patch: [usize; 3],
    pub plan: Plan,
    /// Median voxel size (x, y, z) in mm of the training cases, as the network saw them;
    /// None in cards written before it was recorded.
    #[serde(default)]
    pub training_spacing: Option<[f64; 3]>,
}

pub const CARD_FORMAT: &str = "voxseg-model-1";

impl ModelCard {
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::file(path, format!("cannot encode: {e}")))?;
        crate::atomic::write_bytes(path, text.as_bytes())
    }
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let card: ModelCard = serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("not a voxseg model description: {e}")))?;
        if card.format != CARD_FORMAT {
            return Err(Error::file(
                path,
                format!("format '{}' is not {CARD_FORMAT}", card.format),
            ));
        }
        Ok(card)
    }
}

/// The checkpoint metadata key holding the [`CheckpointIdentity`] of the run that wrote it.
pub const CHECKPOINT_IDENTITY_KEY: &str = "voxseg_card";

/// What a checkpoint's weights mean, and which cases they never saw: the parts of the model
/// card that must agree for its outputs to be read correctly, and its run's test cases.
/// Training stores it (as JSON) in every checkpoint, so a checkpoint given to another run's
/// `model.json` is refused instead of producing plausible-looking nonsense (other modality
/// order, other label values, other normalisation) or scoring a test case it trained on.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointIdentity {
    pub modalities: Vec<String>,
    pub label_spec: LabelSpec,
    pub target: TargetSpec,
    pub model: ModelSpec,
    /// The preprocessing of its inputs, dataset statistics included; None in checkpoints
    /// written before it was recorded.
    #[serde(default)]
    pub preprocess: Option<PreprocessSpec>,
    /// The test cases its run held out; None in checkpoints written before they were
    /// recorded.
    #[serde(default)]
    pub held_out: Option<Vec<String>>,
}

impl ModelCard {
    /// The identity of the checkpoints of a run training with this card and holding out
    /// `held_out` (None: unknown, as for comparing cards alone).
    pub fn identity(&self, held_out: Option<&[String]>) -> CheckpointIdentity {
        CheckpointIdentity {
            modalities: self.modalities.clone(),
            label_spec: self.label_spec.clone(),
            target: self.target.clone(),
            model: self.model.clone(),
            preprocess: Some(self.preprocess.clone()),
            held_out: held_out.map(<[String]>::to_vec),
        }
    }
}

/// A label convention in a line: `NCR=1, ED=2, ET=4`.
pub fn describe_labels(spec: &LabelSpec) -> String {
    spec.classes()
        .iter()
        .skip(1)
        .map(|c| format!("{}={}", c.name, c.file_value))
        .collect::<Vec<_>>()
        .join(", ")
}

impl CheckpointIdentity {
    /// Each field that differs as (what, this side's value, the other side's value);
    /// empty when the two agree.
    pub fn differences(&self, other: &CheckpointIdentity) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        if self.modalities != other.modalities {
            out.push((
                "modalities".into(),
                format!("[{}]", self.modalities.join(", ")),
                format!("[{}]", other.modalities.join(", ")),
            ));
        }
        if self.label_spec != other.label_spec {
            out.push((
                "labels".into(),
                format!("[{}]", describe_labels(&self.label_spec)),
                format!("[{}]", describe_labels(&other.label_spec)),
            ));
        }
        if self.target != other.target {
            out.push((
                "target".into(),
                self.target.to_string(),
                other.target.to_string(),
            ));
        }
        if self.model != other.model {
            out.push(("network".into(), json(&self.model), json(&other.model)));
        }
        if let (Some(mine), Some(theirs)) = (&self.preprocess, &other.preprocess) {
            if mine != theirs {
                let (mine, theirs) = differing_keys(&json_value(mine), &json_value(theirs));
                out.push(("preprocessing".into(), mine, theirs));
            }
        }
        out
    }

    /// Of `test` (a run's test cases), those this checkpoint's run did not hold out, so it
    /// may have trained on them; empty where it held them all out or did not record which.
    pub fn not_held_out<'a>(&self, test: &'a [String]) -> Vec<&'a str> {
        let Some(held_out) = &self.held_out else {
            return Vec::new();
        };
        let held_out: std::collections::HashSet<&str> =
            held_out.iter().map(String::as_str).collect();
        test.iter()
            .map(String::as_str)
            .filter(|id| !held_out.contains(id))
            .collect()
    }
}

/// Compact JSON of a spec, for messages (these types always serialise).
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn json_value<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// The keys in which two JSON objects differ, each side as `{key: value, ...}` with long
/// values cut short: dataset statistics run to kilobytes.
fn differing_keys(a: &serde_json::Value, b: &serde_json::Value) -> (String, String) {
    const LONGEST: usize = 60;
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return (a.to_string(), b.to_string());
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let side = |o: &serde_json::Map<String, serde_json::Value>| {
        let fields: Vec<String> = keys
            .iter()
            .filter(|k| a.get(**k) != b.get(**k))
            .map(|k| {
                let v = o.get(*k).map_or("none".to_string(), |v| v.to_string());
                match v.char_indices().nth(LONGEST) {
                    Some((cut, _)) => format!("{k}: {}…", &v[..cut]),
                    None => format!("{k}: {v}"),
                }
            })
            .collect();
        format!("{{{}}}", fields.join(", "))
    };
    (side(a), side(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::fcn::FcnConfig;

    fn identity() -> CheckpointIdentity {
        CheckpointIdentity {
            modalities: vec!["t1".into(), "flair".into()],
            label_spec: LabelSpec::brats2021(),
            target: TargetSpec::Regions,
            model: ModelSpec::Fcn(FcnConfig::of_sizes([2, 3], 4, 1, 1)),
            preprocess: Some(PreprocessSpec::default()),
            held_out: Some(vec!["a".into(), "b".into()]),
        }
    }

    #[test]
    fn identities_name_each_difference_and_survive_json() {
        let run = identity();
        let back: CheckpointIdentity =
            serde_json::from_str(&serde_json::to_string(&run).unwrap()).unwrap();
        assert!(run.differences(&back).is_empty());
        let mut other = identity();
        other.label_spec = LabelSpec::brats2023();
        other.target = TargetSpec::Classes;
        let found = run.differences(&other);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            found[0],
            (
                "labels".to_string(),
                "[NCR=1, ED=2, ET=4]".to_string(),
                "[NCR=1, ED=2, ET=3, RC=4]".to_string()
            )
        );
        assert_eq!(found[1].0, "target");
        assert_eq!(
            (found[1].1.as_str(), found[1].2.as_str()),
            ("regions", "classes")
        );
    }

    #[test]
    fn other_preprocessing_differs_and_an_unrecorded_one_does_not() {
        let run = identity();
        let mut other = identity();
        other.preprocess = Some(PreprocessSpec {
            crop_to_nonzero: false,
            ..PreprocessSpec::default()
        });
        let found = run.differences(&other);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0],
            (
                "preprocessing".to_string(),
                "{crop_to_nonzero: true}".to_string(),
                "{crop_to_nonzero: false}".to_string()
            )
        );
        other.preprocess = None;
        assert!(run.differences(&other).is_empty());
    }

    #[test]
    fn differing_keys_name_only_what_differs_and_cut_long_values() {
        let long: Vec<f64> = (0..40).map(f64::from).collect();
        let a = serde_json::json!({"same": 1, "stats": long, "only_a": true});
        let b = serde_json::json!({"same": 1, "stats": "per_case"});
        let (left, right) = differing_keys(&a, &b);
        assert_eq!(right, r#"{only_a: none, stats: "per_case"}"#);
        let cut = format!(
            "{{only_a: true, stats: {}…}}",
            &a["stats"].to_string()[..60]
        );
        assert_eq!(left, cut);
    }

    #[test]
    fn test_cases_a_checkpoint_did_not_hold_out_are_named() {
        let checkpoint = identity();
        let test = ["b".to_string(), "c".to_string(), "d".to_string()];
        assert_eq!(checkpoint.not_held_out(&test), ["c", "d"]);
        assert!(checkpoint.not_held_out(&test[..1]).is_empty());
        let unrecorded = CheckpointIdentity {
            held_out: None,
            ..identity()
        };
        assert!(unrecorded.not_held_out(&test).is_empty());
    }

    #[test]
    fn identities_of_older_checkpoints_read_without_preprocessing_or_test_cases() {
        let mut json: serde_json::Value = serde_json::to_value(identity()).unwrap();
        let fields = json.as_object_mut().unwrap();
        fields.remove("preprocess");
        fields.remove("held_out");
        let old: CheckpointIdentity = serde_json::from_value(json).unwrap();
        assert_eq!((old.preprocess, old.held_out), (None, None));
    }
}
