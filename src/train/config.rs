//! The whole resolved configuration of a training run: defaults, then a JSON config file,
//! then command-line flags (flags win). Written to `config.json` in the run directory.
use crate::backend::cuda::conv_plan::ConvPrecision;
use crate::data::augment::AugmentSpec;
use crate::data::labels::TargetSpec;
use crate::data::preprocess::PreprocessSpec;
use crate::data::split::SplitFractions;
use crate::error::{Error, Result};
use crate::loss::LossSpec;
use crate::nn::layers::NormKind;
use crate::optim::{LrSchedule, OptimizerSpec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Unet,
    Fcn,
}

/// Which fold of k-fold cross-validation a run trains. An unknown key is refused by
/// `TrainConfig::parse`, which names its path (`folds.<key>`), as for the other nested keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Folds {
    pub count: usize,
    /// From 0.
    pub index: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub data: PathBuf,
    pub out: PathBuf,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Convolution arithmetic on a CUDA device (fp32, tf32 or bf16 tensor cores, f32
    /// accumulation); `None`: `VOXSEG_CONV_PRECISION`, else fp32. On the CPU fp32, or bf16
    /// operands with f32 sums where it has AVX512-BF16 (tf32 there runs in fp32).
    pub precision: Option<ConvPrecision>,
    /// Modalities in input-channel order; empty = all the dataset has, in its order.
    pub modalities: Vec<String>,
    pub target: TargetSpec,
    pub model: ModelKind,
    /// Width of the first stage; `None` = planned.
    pub features: Option<usize>,
    pub max_features: Option<usize>,
    /// U-Net stages; `None` = planned.
    pub depth: Option<usize>,
    pub norm: NormKind,
    pub deep_supervision: bool,
    pub dropout: f64,
    pub loss: LossSpec,
    pub optimizer: OptimizerSpec,
    pub lr: f64,
    pub schedule: LrSchedule,
    pub l1: f64,
    pub l2: f64,
    /// Gradient-norm clipping (nnU-Net: 12); 0 disables.
    pub grad_clip: f64,
    pub epochs: usize,
    pub iters_per_epoch: usize,
    /// `None` = planned.
    pub batch: Option<usize>,
    /// Patch (D, H, W); `None` = planned.
    pub patch: Option<[usize; 3]>,
    pub val_every: usize,
    /// Stop cleanly after this many minutes of this invocation (saving `last`; an epoch cut
    /// short is validated when resumed);
    /// positive and at most [`MAX_TIME_LIMIT_MINUTES`].
    pub time_limit_minutes: Option<f64>,
    /// Stop once this many validations in a row bring no new best mean validation Dice
    /// (Keras' `EarlyStopping` patience, counted in validations); `None`: train every epoch.
    pub early_stop_patience: Option<usize>,
    pub seed: u64,
    pub workers: usize,
    pub queue_depth: usize,
    pub foreground_fraction: f64,
    pub preprocess: PreprocessSpec,
    pub augment: AugmentSpec,
    /// Normalise with statistics over the training cases instead of per case.
    pub dataset_statistics: bool,
    /// Replace NaN/Inf voxels with 0 (with a warning) instead of refusing the case.
    pub replace_nan: bool,
    /// A preprocessed, memory-mapped cache (`voxseg preprocess`) to stream cases from.
    pub cache: Option<PathBuf>,
    pub split: SplitFractions,
    /// Cross-validation: train one fold (`Split::fold`: the test set of `split`, the other
    /// cases dealt into `count` folds); `None`: one split by the fractions.
    pub folds: Option<Folds>,
    /// A split file (`{"train": [..], "val": [..], "test": [..]}` of case ids, as a run's
    /// `split.json`) to use instead of making a split; or, with `folds`, nnU-Net's
    /// `splits_final.json` (a list of `{"train", "val"}`), whose entry `folds.index` is used.
    pub split_file: Option<PathBuf>,
    /// Sliding-window overlap for validation.
    pub val_overlap: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            data: PathBuf::new(),
            out: PathBuf::new(),
            device: "auto".into(),
            precision: None,
            modalities: Vec::new(),
            target: TargetSpec::Regions,
            model: ModelKind::Unet,
            features: None,
            max_features: None,
            depth: None,
            norm: NormKind::Instance,
            deep_supervision: true,
            dropout: 0.0,
            loss: LossSpec::DiceCe,
            optimizer: OptimizerSpec::nnunet_sgd(),
            lr: 1e-2,
            schedule: LrSchedule::Poly { exponent: 0.9 },
            l1: 0.0,
            l2: 0.0,
            grad_clip: 12.0,
            epochs: 50,
            iters_per_epoch: 250,
            batch: None,
            patch: None,
            val_every: 1,
            time_limit_minutes: None,
            early_stop_patience: None,
            seed: 42,
            workers: 2,
            queue_depth: 4,
            foreground_fraction: 0.33,
            preprocess: PreprocessSpec::default(),
            augment: AugmentSpec::default(),
            dataset_statistics: false,
            replace_nan: false,
            cache: None,
            split: SplitFractions::default(),
            folds: None,
            split_file: None,
            val_overlap: 0.5,
        }
    }
}

/// The longest `--time-limit`: about 190 years, far below what a `Duration` or an `Instant`
/// can hold, so no later conversion can overflow.
pub const MAX_TIME_LIMIT_MINUTES: f64 = 1e8;

/// The most data-loading threads: far more than the cores of any machine keep busy, and
/// few enough that spawning them cannot exhaust the process's threads (100000 aborted).
pub const MAX_WORKERS: usize = 256;

/// The settings a resumed run may change: they decide how long and where the rest of the run
/// goes, not what it computes. Every other setting is fixed by the run's `config.json`.
pub const RESUMABLE_SETTINGS: [&str; 8] = [
    "epochs",
    "time_limit_minutes",
    "early_stop_patience",
    "workers",
    "queue_depth",
    "val_every",
    "device",
    "precision",
];

impl TrainConfig {
    /// Reads a JSON config; unknown keys are refused so a typo does not go unnoticed.
    /// Relative `data`, `out` and `cache` paths are taken from the file's folder, as a
    /// manifest's paths are.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_file_with_keys(path).map(|(c, _)| c)
    }

    /// [`Self::from_file`], and the names of the settings the file sets.
    pub fn from_file_with_keys(path: &Path) -> Result<(Self, Vec<String>)> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let (mut cfg, keys) = Self::parse(&text)
            .map_err(|msg| Error::file(path, format!("not a valid training config: {msg}")))?;
        let folder = path.parent().unwrap_or(Path::new(""));
        for p in [&mut cfg.data, &mut cfg.out]
            .into_iter()
            .chain(cfg.cache.as_mut())
            .chain(cfg.split_file.as_mut())
        {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = folder.join(&*p);
            }
        }
        Ok((cfg, keys))
    }

    /// A config file's text, read as `--config` reads it (without the path resolution).
    pub fn from_json(text: &str) -> Result<Self> {
        Self::parse(text)
            .map(|(cfg, _)| cfg)
            .map_err(|msg| Error::config("config", msg))
    }

    /// A config file's text, and the settings it names; the error says what is wrong.
    fn parse(text: &str) -> std::result::Result<(Self, Vec<String>), String> {
        crate::json_keys::refuse_repeated_keys(text.as_bytes()).map_err(|e| e.to_string())?;
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let keys: Vec<String> = value
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        for (key, parts) in [
            ("split", &["train", "val", "test"][..]),
            ("folds", &["count", "index"]),
        ] {
            // These parts decide together (fractions summing to 1, a fold of a count), so
            // one given alone cannot keep the others' defaults.
            if let Some(serde_json::Value::Object(given)) = value.get(key) {
                if let Some(missing) = parts.iter().find(|p| !given.contains_key(**p)) {
                    return Err(format!(
                        "`{key}` lacks `{missing}`: give {} together",
                        parts.join(", ")
                    ));
                }
            }
        }
        // The file over the defaults, so a nested object given in part keeps the defaults
        // of the keys it leaves out.
        if !value.is_object() {
            return Err("expected a JSON object of settings".into());
        }
        let defaults = serde_json::to_value(TrainConfig::default()).map_err(|e| e.to_string())?;
        let mut merged = defaults.clone();
        overlay(&mut merged, value.clone());
        let array_message =
            |key: String| format!("`{key}` is an array: give an object of named settings");
        let mut cfg: TrainConfig = serde_json::from_value(merged).map_err(|e| {
            // An array serde could not read by position either: say what is wrong with it.
            array_for_object(&value, &defaults, "").map_or_else(|| e.to_string(), array_message)
        })?;
        // Serde skips unknown keys inside nested objects; what it skipped is missing from
        // the configuration written back out.
        let resolved = serde_json::to_value(&cfg).map_err(|e| e.to_string())?;
        if let Some(key) = array_for_object(&value, &resolved, "") {
            return Err(array_message(key));
        }
        if let Some((key, known)) = ignored_key(&value, &resolved, "") {
            return Err(format!(
                "unknown key `{key}` (expected one of {})",
                known.join(", ")
            ));
        }
        // Without "lr", the optimiser's own default, as with --optimizer.
        if !keys.iter().any(|k| k == "lr") {
            cfg.lr = cfg.optimizer.default_lr();
        }
        Ok((cfg, keys))
    }

    /// Reads a run's own `config.json` as written, without resolving paths: a run records
    /// them absolute (older runs: relative to where they were started).
    pub fn from_run_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("not a valid training config: {e}")))
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |name: &str, msg: String| Err(Error::config(name, msg));
        if let Some(f) = self.folds {
            // With a split file, the file's list of folds decides which indices exist.
            if self.split_file.is_none() && (f.count < 2 || f.index >= f.count) {
                return bad(
                    "fold",
                    format!(
                        "fold {} of {}: need at least 2 folds and a fold from 0 to {}",
                        f.index,
                        f.count,
                        f.count.max(1) - 1
                    ),
                );
            }
        }
        // Without a precision the device takes the environment's: a bad one is refused here,
        // before the run folder is made.
        if self.precision.is_none() {
            ConvPrecision::from_env()?;
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", format!("{} must be a positive number", self.lr));
        }
        if self.epochs == 0 || self.iters_per_epoch == 0 {
            return bad(
                "epochs",
                "epochs and iterations per epoch must be positive".into(),
            );
        }
        // The run counts its steps in total; a count that overflows would wrap.
        if self.epochs.checked_mul(self.iters_per_epoch).is_none() {
            return bad(
                "epochs",
                format!(
                    "{} epochs of {} iterations is more steps than can be counted",
                    self.epochs, self.iters_per_epoch
                ),
            );
        }
        if self.val_every == 0 {
            return bad("val-every", "must be at least 1".into());
        }
        if matches!(self.batch, Some(0)) {
            return bad("batch", "must be at least 1".into());
        }
        if let Some(p) = self.patch {
            if p.contains(&0) {
                return bad("patch", format!("{p:?} has a zero size"));
            }
        }
        if self.early_stop_patience == Some(0) {
            return bad(
                "early-stop",
                "0: the patience is a count of validations without a new best, at least 1; \
                 null trains every epoch"
                    .into(),
            );
        }
        if let Some(t) = self.time_limit_minutes {
            if !(t > 0.0 && t <= MAX_TIME_LIMIT_MINUTES) {
                // 1e300 written out would be 301 digits.
                let t = if t.abs() > MAX_TIME_LIMIT_MINUTES {
                    format!("{t:e}")
                } else {
                    t.to_string()
                };
                return bad(
                    "time-limit",
                    format!(
                        "{t}: must be a positive finite number of minutes \
                         (at most {MAX_TIME_LIMIT_MINUTES:e}); leave it out for no limit"
                    ),
                );
            }
        }
        for (name, v) in [
            ("l1", self.l1),
            ("l2", self.l2),
            ("grad-clip", self.grad_clip),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(
                    name,
                    format!("{v}: must be a finite number >= 0 (0 turns it off)"),
                );
            }
        }
        if let LossSpec::Wbce { pos_weight } = self.loss {
            if !(pos_weight > 0.0 && pos_weight.is_finite()) {
                return bad(
                    "loss",
                    format!("wbce:{pos_weight}: the positive weight must be a positive number"),
                );
            }
        }
        self.validate_loss_target()?;
        self.schedule.validate()?;
        if let LrSchedule::Cosine { warmup_epochs } = self.schedule {
            if warmup_epochs >= self.epochs {
                return bad(
                    "schedule",
                    format!(
                        "cosine warm-up of {warmup_epochs} epochs leaves none of the {} epochs \
                         to decay over",
                        self.epochs
                    ),
                );
            }
        }
        self.augment.validate()?;
        self.preprocess.validate()?;
        if self.features == Some(0) || self.max_features == Some(0) {
            return bad(
                "features",
                "--features and --max-features must be at least 1".into(),
            );
        }
        if let (Some(f), Some(m)) = (self.features, self.max_features) {
            if m < f {
                return bad(
                    "max-features",
                    format!("{m} is below --features {f}: the widest stage cannot be narrower than the first"),
                );
            }
        }
        if let Some(d) = self.depth {
            if !(1..=8).contains(&d) {
                return bad("depth", format!("{d}: must be between 1 and 8"));
            }
            let fcn_most = crate::nn::fcn::MAX_LEVELS + 1;
            if self.model == ModelKind::Fcn && d > fcn_most {
                return bad(
                    "depth",
                    format!(
                        "{d}: the FCN takes at most {fcn_most} (levels + 1, at most {} \
                         downsamplings)",
                        fcn_most - 1
                    ),
                );
            }
        }
        let fr = [self.split.train, self.split.val, self.split.test];
        if fr.iter().any(|f| !(0.0..=1.0).contains(f))
            || (fr.iter().sum::<f64>() - 1.0).abs() > 1e-6
        {
            return bad(
                "split",
                format!("{fr:?} must be three fractions summing to 1"),
            );
        }
        if !(0.0..1.0).contains(&self.val_overlap) {
            return bad(
                "val-overlap",
                format!("{} is not in [0, 1)", self.val_overlap),
            );
        }
        if !(0.0..=1.0).contains(&self.foreground_fraction) {
            return bad(
                "foreground-fraction",
                format!("{} is not in [0, 1]", self.foreground_fraction),
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", format!("{} is not in [0, 1)", self.dropout));
        }
        if self.workers == 0 || self.queue_depth == 0 {
            return bad(
                "workers",
                "workers and queue depth must be at least 1".into(),
            );
        }
        if self.workers > MAX_WORKERS {
            return bad(
                "workers",
                format!(
                    "{}: at most {MAX_WORKERS} data-loading threads (a few per core keep \
                     a GPU fed)",
                    self.workers
                ),
            );
        }
        Ok(())
    }

    /// CE scores one class per voxel; the BCE family, MSE, MAE and SSIM score channels.
    fn validate_loss_target(&self) -> Result<()> {
        let classes = self.target == TargetSpec::Classes;
        if let LossSpec::Ssim(opts) = &self.loss {
            opts.validate()?;
        }
        match &self.loss {
            LossSpec::Ce if !classes => Err(Error::config(
                "loss",
                "ce scores one class per voxel and needs class targets: use --target classes \
                 (or --loss dice_ce, which works with region targets)",
            )),
            LossSpec::Bce
            | LossSpec::Wbce { .. }
            | LossSpec::Mse
            | LossSpec::Mae
            | LossSpec::Ssim(_)
                if classes =>
            {
                Err(Error::config(
                    "loss",
                    format!(
                        "{} scores channels and needs region targets: use --target regions \
                         or class:NAME (or --loss ce / dice_ce with --target classes)",
                        self.loss.name()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// `given` laid over `base`: objects key by key, anything else replaced. An object naming
/// another `kind` (loss, optimiser, schedule, intensity) replaces the default whole: the
/// default's keys belong to its own kind.
fn overlay(base: &mut serde_json::Value, given: serde_json::Value) {
    use serde_json::Value::Object;
    match (base, given) {
        (Object(base), Object(given))
            if given.get("kind").is_none() || given.get("kind") == base.get("kind") =>
        {
            for (key, value) in given {
                match base.get_mut(&key) {
                    Some(slot) => overlay(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, given) => *base = given,
    }
}

/// The first key of `given` that `resolved` lacks, as a dotted path, with the keys
/// `resolved` has there. Only objects on both sides are compared: a bare name (`"dice"`)
/// stands for an object of its own.
fn ignored_key(
    given: &serde_json::Value,
    resolved: &serde_json::Value,
    path: &str,
) -> Option<(String, Vec<String>)> {
    let (serde_json::Value::Object(given), serde_json::Value::Object(resolved)) = (given, resolved)
    else {
        return None;
    };
    given.iter().find_map(|(key, value)| {
        let at = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match resolved.get(key) {
            None => Some((at, resolved.keys().map(|k| format!("`{k}`")).collect())),
            Some(r) => ignored_key(value, r, &at),
        }
    })
}

/// The first key of `given` holding an array where `resolved` holds an object, as a dotted
/// path: serde reads a struct from an array by position, which skips the key checks.
fn array_for_object(
    given: &serde_json::Value,
    resolved: &serde_json::Value,
    path: &str,
) -> Option<String> {
    use serde_json::Value::{Array, Object};
    match (given, resolved) {
        (Array(_), Object(_)) => Some(path.to_string()),
        (Object(given), Object(resolved)) => given.iter().find_map(|(key, value)| {
            let at = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            array_for_object(value, resolved.get(key)?, &at)
        }),
        _ => None,
    }
}

/// Parses `D,H,W` (or a single `N` for a cube).
pub fn parse_triple(name: &str, s: &str) -> Result<[usize; 3]> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let nums: Vec<usize> = parts
        .iter()
        .map(|p| {
            p.parse::<usize>()
                .map_err(|_| Error::config(name, format!("'{s}' is not D,H,W (positive integers)")))
        })
        .collect::<Result<_>>()?;
    match nums.as_slice() {
        [n] if *n > 0 => Ok([*n; 3]),
        [d, h, w] if *d > 0 && *h > 0 && *w > 0 => Ok([*d, *h, *w]),
        _ => Err(Error::config(
            name,
            format!("'{s}' is not D,H,W (positive integers)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_is_optional_and_named_as_the_flags_name_it() {
        let default: TrainConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(default.precision, None);
        let bf16: TrainConfig = serde_json::from_str(r#"{"precision": "bf16"}"#).unwrap();
        assert_eq!(bf16.precision, Some(ConvPrecision::Bf16));
        let f32: TrainConfig = serde_json::from_str(r#"{"precision": "f32"}"#).unwrap();
        assert_eq!(f32.precision, Some(ConvPrecision::F32));
        let json = serde_json::to_string(&bf16).unwrap();
        assert!(json.contains(r#""precision":"bf16""#), "{json}");
        let err = serde_json::from_str::<TrainConfig>(r#"{"precision": "fp16"}"#).unwrap_err();
        assert!(err.to_string().contains("fp16"), "{err}");
    }

    /// A configuration file sets augmentation, schedule and preprocessing fields directly:
    /// values their code cannot use are refused before training starts, naming the field.
    #[test]
    fn file_settings_the_flags_cannot_reach_are_validated_too() {
        let refused = |json: &str, names: &[&str]| {
            let cfg: TrainConfig = serde_json::from_str(json).unwrap();
            let err = cfg.validate().expect_err(json).to_string();
            for name in names {
                assert!(err.contains(name), "{json}: {err}");
            }
        };
        refused(
            r#"{"augment": {"noise": {"p": 1, "max_variance": -5}}}"#,
            &["augment.noise.max_variance", "-5"],
        );
        refused(
            r#"{"augment": {"gamma": {"p": 0.3, "p_inverted": 0.1, "range": [-1, 1.5]}}}"#,
            &["augment.gamma.range"],
        );
        refused(r#"{"augment": {"mirror_p": 3}}"#, &["augment.mirror_p"]);
        refused(
            r#"{"schedule": {"kind": "poly", "exponent": -3}}"#,
            &["learning-rate schedule", "-3"],
        );
        refused(
            r#"{"epochs": 4, "schedule": {"kind": "cosine", "warmup_epochs": 5}}"#,
            &["cosine warm-up of 5 epochs", "4 epochs"],
        );
        refused(
            r#"{"preprocess": {"orientation": "XYZ"}}"#,
            &["orientation", "XYZ"],
        );
        let default: TrainConfig = serde_json::from_str("{}").unwrap();
        default.validate().unwrap();
    }

    /// A typo anywhere in the file is refused with its path, not skipped.
    #[test]
    fn unknown_nested_keys_are_refused_with_their_path() {
        for (json, key, known) in [
            (
                r#"{"optimizer": {"kind": "sgd", "momentun": 0.5}}"#,
                "optimizer.momentun",
                "`momentum`",
            ),
            (
                r#"{"augment": {"mirror_P": 0}}"#,
                "augment.mirror_P",
                "`mirror_p`",
            ),
            (
                r#"{"preprocess": {"bogus": 1}}"#,
                "preprocess.bogus",
                "`intensity`",
            ),
            (
                r#"{"loss": {"kind": "dice", "smooth": 1}}"#,
                "loss.smooth",
                "`kind`",
            ),
            (
                r#"{"schedule": {"kind": "poly", "exp": 2}}"#,
                "schedule.exp",
                "`exponent`",
            ),
            (
                r#"{"preprocess": {"intensity": {"kind": "min_max", "lo": 3}}}"#,
                "preprocess.intensity.lo",
                "`kind`",
            ),
            (
                r#"{"split": {"train": 0.7, "val": 0.15, "test": 0.15, "x": 1}}"#,
                "split.x",
                "`test`",
            ),
        ] {
            let err = TrainConfig::parse(json).expect_err(json);
            assert!(
                err.starts_with(&format!("unknown key `{key}` ")),
                "{json}: {err}"
            );
            assert!(err.contains(known), "{json}: {err}");
        }
        let (cfg, keys) = TrainConfig::parse(
            r#"{"loss": "dice", "optimizer": {"kind": "adam", "eps": 1e-8}, "epochs": 3}"#,
        )
        .unwrap();
        assert_eq!(cfg.loss, LossSpec::Dice);
        assert_eq!(cfg.epochs, 3);
        assert_eq!(cfg.lr, 1e-3);
        assert_eq!(keys, ["epochs", "loss", "optimizer"]);
    }

    /// Mistakes serde words cryptically are told in the config's terms.
    #[test]
    fn cryptic_mistakes_are_told_plainly() {
        for (json, words) in [
            (
                r#"{"target": {"class": -1}}"#,
                "a class is a name or an index from 1 (0 is the background), not -1",
            ),
            (
                r#"{"preprocess": {"statistics": "per_dataset"}}"#,
                "\"dataset_statistics\": true computes them",
            ),
            (
                r#"{"epochs": 1, "epochs": 2}"#,
                "key `epochs` given twice at line 1",
            ),
            (
                r#"{"augment": {"noise": {"p": 0, "p": 1}}}"#,
                "key `p` given twice",
            ),
        ] {
            let err = TrainConfig::parse(json).expect_err(json);
            assert!(err.contains(words), "{json}: {err}");
        }
        let (cfg, _) = TrainConfig::parse(r#"{"target": {"class": 2}}"#).unwrap();
        assert_eq!(
            cfg.target,
            TargetSpec::Class(crate::data::labels::ClassRef::Index(2))
        );
        let (cfg, _) = TrainConfig::parse(r#"{"target": {"class": "ET"}}"#).unwrap();
        assert_eq!(
            cfg.target,
            TargetSpec::Class(crate::data::labels::ClassRef::Name("ET".into()))
        );
    }

    /// A nested object given in part keeps the documented defaults of what it leaves out.
    #[test]
    fn omitted_nested_keys_keep_their_defaults() {
        let parse = |json: &str| {
            TrainConfig::parse(json)
                .unwrap_or_else(|e| panic!("{json}: {e}"))
                .0
        };
        let default = TrainConfig::default();
        let mirror = parse(r#"{"augment": {"mirror_p": 0.0}}"#);
        assert_eq!(
            mirror.augment,
            AugmentSpec {
                mirror_p: 0.0,
                ..AugmentSpec::default()
            }
        );
        assert_eq!(
            mirror
                .augment
                .in_plane_rotation
                .map(|r| (r.p, r.max_degrees)),
            Some((0.2, 180.0))
        );
        let rotation = parse(r#"{"augment": {"rotation": {"p": 0.0}}}"#).augment;
        assert_eq!(
            (rotation.rotation.p, rotation.rotation.max_degrees),
            (0.0, 30.0)
        );
        let in_plane = parse(r#"{"augment": {"in_plane_rotation": {"p": 0.5}}}"#).augment;
        assert_eq!(
            in_plane.in_plane_rotation.map(|r| (r.p, r.max_degrees)),
            Some((0.5, 180.0))
        );
        let off = parse(r#"{"augment": {"in_plane_rotation": null}}"#).augment;
        assert_eq!(off.in_plane_rotation, None);
        let clip = parse(r#"{"preprocess": {"intensity": {"kind": "percentile_clip"}}}"#);
        assert_eq!(
            clip.preprocess,
            PreprocessSpec {
                intensity: crate::data::preprocess::Intensity::PercentileClip {
                    lo: 0.5,
                    hi: 99.5,
                    then: crate::data::preprocess::AfterClip::ZScore,
                },
                ..PreprocessSpec::default()
            }
        );
        let sgd = parse(r#"{"optimizer": {"momentum": 0.9}}"#).optimizer;
        assert_eq!(
            sgd,
            OptimizerSpec::Sgd {
                momentum: 0.9,
                nesterov: true,
                weight_decay: 3e-5
            }
        );
        // Another kind replaces the default whole, with its own defaults.
        let step = parse(r#"{"schedule": {"kind": "step", "every": 3, "gamma": 0.5}}"#);
        assert_eq!(
            step.schedule,
            LrSchedule::Step {
                every: 3,
                gamma: 0.5
            }
        );
        assert_eq!(step.split, default.split);
        for (json, words) in [
            (
                r#"{"split": {"train": 0.7, "val": 0.3}}"#,
                "`split` lacks `test`: give train, val, test together",
            ),
            (
                r#"{"folds": {"count": 3}}"#,
                "`folds` lacks `index`: give count, index together",
            ),
        ] {
            let err = TrainConfig::parse(json).expect_err(json);
            assert_eq!(err, words, "{json}");
        }
        let split = parse(r#"{"split": {"train": 0.5, "val": 0.5, "test": 0}}"#).split;
        assert_eq!((split.train, split.val, split.test), (0.5, 0.5, 0.0));
        for (json, path) in [
            (
                r#"{"augment": {"rotation": {"p": 0.1, "max_degree": 9}}}"#,
                "augment.rotation.max_degree",
            ),
            (
                r#"{"folds": {"count": 5, "index": 0, "fold": 1}}"#,
                "folds.fold",
            ),
        ] {
            let err = TrainConfig::parse(json).unwrap_err();
            assert!(err.starts_with(&format!("unknown key `{path}` ")), "{err}");
        }
    }

    /// serde reads a struct from an array by position, past every key check: an array
    /// where the config has an object is refused, at the top level and nested.
    #[test]
    fn arrays_in_place_of_objects_are_refused() {
        for json in ["[]", r#"["data", "out", "cpu"]"#, "7", r#""dice""#] {
            let err = TrainConfig::parse(json).unwrap_err();
            assert_eq!(err, "expected a JSON object of settings", "{json}");
        }
        for (json, path) in [
            (r#"{"split": [0.5, 0.25, 0.25]}"#, "split"),
            (r#"{"augment": [0.0]}"#, "augment"),
            (r#"{"augment": {"rotation": [0.1, 9]}}"#, "augment.rotation"),
            (r#"{"folds": [5, 0]}"#, "folds"),
            (r#"{"preprocess": [false]}"#, "preprocess"),
        ] {
            let err = TrainConfig::parse(json).unwrap_err();
            assert_eq!(
                err,
                format!("`{path}` is an array: give an object of named settings"),
                "{json}"
            );
        }
    }
}
