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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub data: PathBuf,
    pub out: PathBuf,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Convolution arithmetic on a CUDA device (fp32, tf32 or bf16 tensor cores, f32
    /// accumulation); `None`: `VOXSEG_CONV_PRECISION`, else fp32. The CPU computes in f32.
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
    /// Stop cleanly after this many minutes (after a last validation).
    pub time_limit_minutes: Option<f64>,
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
            val_overlap: 0.5,
        }
    }
}

impl TrainConfig {
    /// Reads a JSON config; unknown keys are refused so a typo does not go unnoticed.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("not a valid training config: {e}")))
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |name: &str, msg: String| Err(Error::config(name, msg));
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", format!("{} must be a positive number", self.lr));
        }
        if self.epochs == 0 || self.iters_per_epoch == 0 {
            return bad(
                "epochs",
                "epochs and iterations per epoch must be positive".into(),
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
        let fr = [self.split.train, self.split.val, self.split.test];
        if fr.iter().any(|f| !(0.0..=1.0).contains(f))
            || (fr.iter().sum::<f64>() - 1.0).abs() > 1e-6
        {
            return bad(
                "split",
                format!("{fr:?} must be three fractions summing to 1"),
            );
        }
        if self.val_overlap < 0.0 || self.val_overlap >= 1.0 {
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
        Ok(())
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
}
