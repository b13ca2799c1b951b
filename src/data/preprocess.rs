//! Preprocessing, applied identically in training and prediction and recorded with the model:
//! crop to the non-zero region, normalise intensities per channel inside the brain mask,
//! optionally resample to a target spacing and pad to a minimum size. `CropBox` records every
//! step so `paste_back_*` can put a prediction made on the preprocessed grid back into the
//! original volume.
//!
//! Positions, sizes and spacings here are (x, y, z) like `Volume`, except `min_size`, which
//! is (d, h, w) = (z, y, x) like patch sizes, because its usual value is the patch size.
use super::grid;
use super::volume::{CaseData, LabelVolume, Volume};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// How intensities are normalised (per channel, inside the brain mask).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Intensity {
    /// (v - mean) / std; the MRI default.
    ZScore,
    /// (v - min) / (max - min), in [0, 1].
    MinMax,
    /// Clip to the `lo` and `hi` percentiles (0..100), then normalise as `then` says.
    PercentileClip {
        #[serde(default = "clip_lo")]
        lo: f64,
        #[serde(default = "clip_hi")]
        hi: f64,
        #[serde(default = "clip_then")]
        then: AfterClip,
    },
    /// Each value replaced by its quantile (the empirical CDF), so the result is about
    /// uniform in [0, 1].
    HistogramEqualisation,
    None,
}

// nnU-Net's CT clip: the 0.5th and 99.5th percentiles, then a z-score.
fn clip_lo() -> f64 {
    0.5
}
fn clip_hi() -> f64 {
    99.5
}
fn clip_then() -> AfterClip {
    AfterClip::ZScore
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterClip {
    /// Z-score: per case, with the clipped values' mean and std; per dataset, with the
    /// dataset's mean and std of the unclipped values (as nnU-Net does for CT).
    ZScore,
    /// Min-max between the two clip values.
    MinMax,
}

/// Where the normalisation statistics come from.
// `remote = "Self"`: the derived code becomes inherent functions, which the impls below
// call; deserialising refuses a bare "per_dataset" in words a user can act on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case")]
pub enum Statistics {
    PerCase,
    /// Filled in by training from its training cases (`dataset_statistics`).
    PerDataset(DatasetStats),
}

impl Serialize for Statistics {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        Statistics::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for Statistics {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let value = <serde_json::Value as Deserialize>::deserialize(d)?;
        if value == "per_dataset" {
            return Err(serde::de::Error::custom(
                "\"statistics\": \"per_dataset\" is not set by hand: \"dataset_statistics\": \
                 true computes them over the training cases",
            ));
        }
        Statistics::deserialize(value).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PreprocessSpec {
    pub crop_to_nonzero: bool,
    pub intensity: Intensity,
    pub statistics: Statistics,
    /// Value of every voxel outside the brain mask after normalisation (and of padding).
    pub background_value: f32,
    /// Voxel size in mm along (x, y, z) to resample to: nnU-Net's grid size, but trilinear
    /// for images and nearest for labels (nnU-Net: cubic, and linear on one-hot labels).
    pub target_spacing: Option<[f64; 3]>,
    /// Smallest grid as (d, h, w) = (z, y, x); smaller grids are padded with background.
    pub min_size: Option<[usize; 3]>,
    /// The orientation (three RAS+ letters, e.g. "RAS") every case is reoriented to before
    /// the steps above, and each prediction back from; None keeps each case as stored
    /// (training then records the most common orientation of its cases).
    pub orientation: Option<String>,
}

impl Default for PreprocessSpec {
    /// The MRI default: crop to non-zero, z-score per case inside the mask, background 0.
    fn default() -> Self {
        Self {
            crop_to_nonzero: true,
            intensity: Intensity::ZScore,
            statistics: Statistics::PerCase,
            background_value: 0.0,
            target_spacing: None,
            min_size: None,
            orientation: None,
        }
    }
}

/// Most voxels a preprocessed grid may have (512 Mi, 2 GiB per float32 channel): a target
/// spacing or minimum size that asks for more is a mistake, refused before any allocation
/// (one of 1.5e13 voxels aborted the process).
pub const MAX_GRID_VOXELS: usize = 1 << 29;

/// Whether a grid of `dims` voxels holds more than [`MAX_GRID_VOXELS`] (or more than a
/// `usize` counts).
fn over_grid_limit(dims: [usize; 3]) -> bool {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .is_none_or(|n| n > MAX_GRID_VOXELS)
}

/// Number of steps of the quantile table: entry i is the (100 i / QUANTILE_STEPS)th percentile.
const QUANTILE_STEPS: usize = 1000;
/// Mask voxels per case and channel pooled for the dataset's quantiles (evenly strided).
const DATASET_SAMPLES_PER_CASE: usize = 2048;

/// Intensity statistics of one channel over the brain mask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelStats {
    pub mean: f64,
    pub std: f64,
    pub min: f32,
    pub max: f32,
    /// `QUANTILE_STEPS + 1` values, the 0th to the 100th percentile in steps of 0.1;
    /// empty where the normalisation needs none.
    pub quantiles: Vec<f32>,
}

impl ChannelStats {
    /// Statistics of `values`; sorts them when `with_quantiles`.
    fn of_values(values: &mut [f32], with_quantiles: bool) -> Self {
        if values.is_empty() {
            return Self {
                mean: 0.0,
                std: 1.0,
                min: 0.0,
                max: 0.0,
                quantiles: if with_quantiles {
                    vec![0.0; QUANTILE_STEPS + 1]
                } else {
                    Vec::new()
                },
            };
        }
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let (min, max) = min_max(values);
        let quantiles = if with_quantiles {
            values.sort_unstable_by(f32::total_cmp);
            quantile_table(values)
        } else {
            Vec::new()
        };
        Self {
            mean,
            std: var.sqrt(),
            min,
            max,
            quantiles,
        }
    }

    /// The `p`th percentile (0..100), interpolated in the quantile table.
    pub fn percentile(&self, p: f64) -> f32 {
        let pos = (p / 100.0).clamp(0.0, 1.0) * QUANTILE_STEPS as f64;
        let i = (pos.floor() as usize).min(QUANTILE_STEPS - 1);
        let w = (pos - i as f64) as f32;
        self.quantiles[i] + w * (self.quantiles[i + 1] - self.quantiles[i])
    }

    /// Empirical CDF at `v` in [0, 1]: monotone, the middle of a run of equal quantiles.
    fn cdf(&self, v: f32) -> f32 {
        let q = &self.quantiles;
        let lo = q.partition_point(|&x| x < v);
        let hi = q.partition_point(|&x| x <= v);
        let pos = if lo < hi {
            (lo + hi - 1) as f32 / 2.0
        } else if lo == 0 {
            0.0
        } else if lo > QUANTILE_STEPS {
            QUANTILE_STEPS as f32
        } else {
            let (a, b) = (q[lo - 1], q[lo]);
            (lo - 1) as f32 + (v - a) / (b - a)
        };
        pos / QUANTILE_STEPS as f32
    }
}

fn min_max(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// Quantile table of sorted values (linear interpolation between order statistics).
fn quantile_table(sorted: &[f32]) -> Vec<f32> {
    let last = (sorted.len() - 1) as f64;
    (0..=QUANTILE_STEPS)
        .map(|i| {
            let pos = i as f64 / QUANTILE_STEPS as f64 * last;
            let j = pos.floor() as usize;
            let k = (j + 1).min(sorted.len() - 1);
            let w = (pos - j as f64) as f32;
            sorted[j] + w * (sorted[k] - sorted[j])
        })
        .collect()
}

/// Per-channel statistics over the training cases (inside each case's brain mask).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetStats {
    pub channels: Vec<ChannelStats>,
}

/// Accumulates `DatasetStats` one case at a time, so a dataset larger than RAM can be
/// streamed: mean and std exactly (Chan's pairwise merge), min and max exactly, quantiles
/// from up to `DATASET_SAMPLES_PER_CASE` evenly strided mask voxels per case.
#[derive(Default)]
pub struct StatsAccumulator {
    channels: Vec<ChannelAccumulator>,
}

struct ChannelAccumulator {
    count: f64,
    mean: f64,
    m2: f64,
    min: f32,
    max: f32,
    samples: Vec<f32>,
}

impl StatsAccumulator {
    pub fn add_case(&mut self, case: &CaseData) -> Result<()> {
        check_case(case)?;
        if self.channels.is_empty() {
            self.channels = (0..case.channels.len())
                .map(|_| ChannelAccumulator {
                    count: 0.0,
                    mean: 0.0,
                    m2: 0.0,
                    min: f32::INFINITY,
                    max: f32::NEG_INFINITY,
                    samples: Vec::new(),
                })
                .collect();
        } else if self.channels.len() != case.channels.len() {
            return Err(Error::data(
                &case.id,
                format!(
                    "{} channels, earlier cases had {}",
                    case.channels.len(),
                    self.channels.len()
                ),
            ));
        }
        let mask = brain_mask(&case.channels);
        for (acc, ch) in self.channels.iter_mut().zip(&case.channels) {
            let values = inside_mask(&ch.data, &mask);
            if values.is_empty() {
                continue;
            }
            let n = values.len() as f64;
            let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
            let m2 = values
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>();
            let total = acc.count + n;
            let delta = mean - acc.mean;
            acc.m2 += m2 + delta * delta * acc.count * n / total;
            acc.mean += delta * n / total;
            acc.count = total;
            let (lo, hi) = min_max(&values);
            acc.min = acc.min.min(lo);
            acc.max = acc.max.max(hi);
            let stride = values.len().div_ceil(DATASET_SAMPLES_PER_CASE);
            acc.samples.extend(values.iter().step_by(stride));
        }
        Ok(())
    }

    pub fn finish(self) -> Result<DatasetStats> {
        if self.channels.is_empty() {
            return Err(Error::data("dataset statistics", "no cases"));
        }
        let channels = self
            .channels
            .into_iter()
            .map(|mut acc| {
                if acc.count == 0.0 {
                    return ChannelStats::of_values(&mut [], true);
                }
                acc.samples.sort_unstable_by(f32::total_cmp);
                ChannelStats {
                    mean: acc.mean,
                    std: (acc.m2 / acc.count).sqrt(),
                    min: acc.min,
                    max: acc.max,
                    quantiles: quantile_table(&acc.samples),
                }
            })
            .collect();
        Ok(DatasetStats { channels })
    }
}

/// Statistics over the given (training) cases.
pub fn dataset_stats<'a>(cases: impl IntoIterator<Item = &'a CaseData>) -> Result<DatasetStats> {
    let mut acc = StatsAccumulator::default();
    for case in cases {
        acc.add_case(case)?;
    }
    acc.finish()
}

/// Where the preprocessed grid sits in the original volume, and how it was made from it.
/// All (x, y, z). Original block `[start, end)` was resampled to `resampled_dims`, then
/// padded with `pad_before` voxels in front to `grid_dims`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CropBox {
    pub original_dims: [usize; 3],
    pub original_spacing: [f64; 3],
    pub start: [usize; 3],
    pub end: [usize; 3],
    pub resampled_dims: [usize; 3],
    pub pad_before: [usize; 3],
    pub grid_dims: [usize; 3],
}

impl CropBox {
    pub fn cropped_dims(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.end[a] - self.start[a])
    }
}

/// A case after preprocessing: channels on one grid, the label (if any) on the same grid.
#[derive(Clone, Debug)]
pub struct PreprocessedCase {
    pub id: String,
    pub channels: Vec<Volume>,
    pub label: Option<LabelVolume>,
    pub crop: CropBox,
    /// Voxel size of the preprocessed grid, (x, y, z).
    pub spacing: [f64; 3],
    /// Value of background and padding voxels (the spec's `background_value`).
    pub background_value: f32,
}

impl PreprocessedCase {
    pub fn dims(&self) -> [usize; 3] {
        self.crop.grid_dims
    }
}

fn check_case(case: &CaseData) -> Result<()> {
    let first = case
        .channels
        .first()
        .ok_or_else(|| Error::data(&case.id, "case has no channels"))?;
    for (c, ch) in case.channels.iter().enumerate() {
        if ch.dims != first.dims || ch.data.len() != grid::voxels(ch.dims) {
            return Err(Error::data(
                &case.id,
                format!(
                    "channel {c} has dims {:?} and {} values, channel 0 has dims {:?}",
                    ch.dims,
                    ch.data.len(),
                    first.dims
                ),
            ));
        }
    }
    if grid::voxels(first.dims) == 0 {
        return Err(Error::data(
            &case.id,
            format!("empty volume, dims {:?}", first.dims),
        ));
    }
    if let Some(label) = &case.label {
        if label.dims != first.dims || label.data.len() != grid::voxels(label.dims) {
            return Err(Error::data(
                &case.id,
                format!(
                    "label dims {:?} differ from image dims {:?}",
                    label.dims, first.dims
                ),
            ));
        }
    }
    Ok(())
}

/// Voxels that are non-zero in any channel, with holes filled (as nnU-Net's
/// `create_nonzero_mask` does): an exact zero inside the object, such as water at 0 HU in CT,
/// is tissue to normalise like its surroundings, not background.
pub fn brain_mask(channels: &[Volume]) -> Vec<bool> {
    let mut mask = vec![false; channels[0].len()];
    for ch in channels {
        for (m, &v) in mask.iter_mut().zip(&ch.data) {
            *m |= v != 0.0;
        }
    }
    fill_holes(&mut mask, channels[0].dims);
    mask
}

/// 3D binary hole filling: every false voxel that no 6-connected path of false voxels joins
/// to the border of the volume becomes true.
pub fn fill_holes(mask: &mut [bool], dims: [usize; 3]) {
    let [nx, ny, nz] = dims;
    let mut outside = vec![false; mask.len()];
    let mut stack: Vec<usize> = Vec::new();
    let visit = |i: usize, outside: &mut [bool], stack: &mut Vec<usize>| {
        if !mask[i] && !outside[i] {
            outside[i] = true;
            stack.push(i);
        }
    };
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let on_border =
                    x == 0 || y == 0 || z == 0 || x + 1 == nx || y + 1 == ny || z + 1 == nz;
                if on_border {
                    visit(x + nx * (y + ny * z), &mut outside, &mut stack);
                }
            }
        }
    }
    while let Some(i) = stack.pop() {
        let (x, y, z) = (i % nx, (i / nx) % ny, i / (nx * ny));
        if x > 0 {
            visit(i - 1, &mut outside, &mut stack);
        }
        if x + 1 < nx {
            visit(i + 1, &mut outside, &mut stack);
        }
        if y > 0 {
            visit(i - nx, &mut outside, &mut stack);
        }
        if y + 1 < ny {
            visit(i + nx, &mut outside, &mut stack);
        }
        if z > 0 {
            visit(i - nx * ny, &mut outside, &mut stack);
        }
        if z + 1 < nz {
            visit(i + nx * ny, &mut outside, &mut stack);
        }
    }
    for (m, o) in mask.iter_mut().zip(outside) {
        *m = !o;
    }
}

/// Bounding box `[start, end)` of the true voxels, or `None` when there are none.
fn mask_bounds(mask: &[bool], dims: [usize; 3]) -> Option<([usize; 3], [usize; 3])> {
    let mut start = dims;
    let mut end = [0; 3];
    for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
        let p = [
            i % dims[0],
            (i / dims[0]) % dims[1],
            i / (dims[0] * dims[1]),
        ];
        for a in 0..3 {
            start[a] = start[a].min(p[a]);
            end[a] = end[a].max(p[a] + 1);
        }
    }
    (end[0] > 0).then_some((start, end))
}

/// The values of `values` where `mask` is set, in order.
fn inside_mask(values: &[f32], mask: &[bool]) -> Vec<f32> {
    values
        .iter()
        .zip(mask)
        .filter(|(_, &m)| m)
        .map(|(&v, _)| v)
        .collect()
}

/// Normalises one channel's values in place; voxels outside `mask` become `background`.
fn normalise(
    values: &mut [f32],
    mask: &[bool],
    spec: &PreprocessSpec,
    dataset: Option<&ChannelStats>,
) {
    let needs_quantiles = matches!(
        spec.intensity,
        Intensity::PercentileClip { .. } | Intensity::HistogramEqualisation
    );
    let stats_of =
        |vals: &[f32], with_q: bool| ChannelStats::of_values(&mut inside_mask(vals, mask), with_q);
    let case_stats;
    let stats = match dataset {
        Some(s) => s,
        None => {
            case_stats = stats_of(values, needs_quantiles);
            &case_stats
        }
    };
    let zscore = |mean: f64, std: f64| {
        let inv = 1.0 / std.max(1e-8);
        move |v: f32| ((v as f64 - mean) * inv) as f32
    };
    let minmax = |lo: f32, hi: f32| {
        let range = hi - lo;
        move |v: f32| {
            if range > 0.0 {
                ((v - lo) / range).clamp(0.0, 1.0)
            } else {
                0.0
            }
        }
    };
    let apply = |values: &mut [f32], f: &dyn Fn(f32) -> f32| {
        for (v, &m) in values.iter_mut().zip(mask) {
            *v = if m { f(*v) } else { spec.background_value };
        }
    };
    match spec.intensity {
        Intensity::ZScore => apply(values, &zscore(stats.mean, stats.std)),
        Intensity::MinMax => apply(values, &minmax(stats.min, stats.max)),
        Intensity::None => apply(values, &|v| v),
        Intensity::HistogramEqualisation => apply(values, &|v| stats.cdf(v)),
        Intensity::PercentileClip { lo, hi, then } => {
            let (qlo, qhi) = (stats.percentile(lo), stats.percentile(hi));
            for v in values.iter_mut() {
                *v = v.clamp(qlo, qhi.max(qlo));
            }
            match then {
                AfterClip::MinMax => apply(values, &minmax(qlo, qhi)),
                AfterClip::ZScore => {
                    let (mean, std) = match dataset {
                        Some(s) => (s.mean, s.std),
                        None => {
                            let clipped = stats_of(values, false);
                            (clipped.mean, clipped.std)
                        }
                    };
                    apply(values, &zscore(mean, std))
                }
            }
        }
    }
}

impl PreprocessSpec {
    /// Fails on settings no case could be preprocessed with (those that do not depend on the
    /// case: the statistics' channel count is checked against each case).
    pub fn validate(&self) -> Result<()> {
        if let Intensity::PercentileClip { lo, hi, .. } = self.intensity {
            if !(0.0..=100.0).contains(&lo) || !(0.0..=100.0).contains(&hi) || lo >= hi {
                return Err(Error::config(
                    "percentile clip",
                    format!("need 0 <= lo < hi <= 100, got lo {lo}, hi {hi}"),
                ));
            }
        }
        if let Some(t) = self.target_spacing {
            if t.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
                return Err(Error::config(
                    "target spacing",
                    format!("{t:?} is not positive"),
                ));
            }
        }
        if let Some(size) = self.min_size {
            if over_grid_limit(size) {
                return Err(Error::config(
                    "preprocess.min_size",
                    format!(
                        "{size:?} is {} voxels, more than the {MAX_GRID_VOXELS} a grid may have",
                        size.iter().map(|&d| d as f64).product::<f64>()
                    ),
                ));
            }
        }
        if let Some(code) = &self.orientation {
            crate::data::orient::check_orientation(code)?;
        }
        if !self.background_value.is_finite() {
            return Err(Error::config(
                "background value",
                format!("{} is not a finite number", self.background_value),
            ));
        }
        Ok(())
    }
}

fn check_spec(spec: &PreprocessSpec, channels: usize) -> Result<()> {
    spec.validate()?;
    if let Statistics::PerDataset(ds) = &spec.statistics {
        if ds.channels.len() != channels {
            return Err(Error::config(
                "dataset statistics",
                format!(
                    "for {} channels, the case has {channels}",
                    ds.channels.len()
                ),
            ));
        }
        let needs_quantiles = matches!(
            spec.intensity,
            Intensity::PercentileClip { .. } | Intensity::HistogramEqualisation
        );
        if needs_quantiles
            && ds
                .channels
                .iter()
                .any(|c| c.quantiles.len() != QUANTILE_STEPS + 1)
        {
            return Err(Error::config(
                "dataset statistics",
                "quantile table missing or wrong length",
            ));
        }
    }
    Ok(())
}

/// Crops, normalises, resamples and pads one case as `spec` says.
pub fn preprocess(case: &CaseData, spec: &PreprocessSpec) -> Result<PreprocessedCase> {
    check_case(case)?;
    check_spec(spec, case.channels.len())?;
    let dims = case.dims();
    let spacing = case.spacing();
    let mask = brain_mask(&case.channels);
    // An empty mask (an all-zero image) keeps the whole grid, so prediction still has a grid.
    let (start, end) = match (spec.crop_to_nonzero, mask_bounds(&mask, dims)) {
        (true, Some(bounds)) => bounds,
        _ => ([0; 3], dims),
    };
    let cropped_dims = [0, 1, 2].map(|a| end[a] - start[a]);
    let mask = grid::crop(&mask, dims, start, end);
    let dataset = match &spec.statistics {
        Statistics::PerCase => None,
        Statistics::PerDataset(ds) => Some(ds),
    };
    let mut channels: Vec<Vec<f32>> = case
        .channels
        .iter()
        .enumerate()
        .map(|(c, ch)| {
            let mut values = grid::crop(&ch.data, dims, start, end);
            normalise(&mut values, &mask, spec, dataset.map(|d| &d.channels[c]));
            values
        })
        .collect();
    let mut label = case
        .label
        .as_ref()
        .map(|l| grid::crop(&l.data, dims, start, end));

    let (resampled_dims, grid_spacing) = match spec.target_spacing {
        Some(target) => {
            // nnU-Net's `compute_new_shape`: the same product, in its order, and Python's
            // rounding (half to even), so a size ending in .5 gives nnU-Net's grid too.
            let sizes = [0, 1, 2].map(|a| {
                (spacing[a] / target[a] * cropped_dims[a] as f64)
                    .round_ties_even()
                    .max(1.0)
            });
            let voxels: f64 = sizes.iter().product();
            if voxels > MAX_GRID_VOXELS as f64 {
                return Err(Error::config(
                    "preprocess.target_spacing",
                    format!(
                        "{target:?} mm resamples case {} ({} voxels of {:?} mm) to {} = {voxels} \
                         voxels, more than the {MAX_GRID_VOXELS} a grid may have",
                        case.id,
                        size_text(cropped_dims.map(|d| d as f64)),
                        spacing,
                        size_text(sizes),
                    ),
                ));
            }
            let new_dims = sizes.map(|s| s as usize);
            let new_mask = grid::resample_nearest(&mask, cropped_dims, new_dims);
            for ch in channels.iter_mut() {
                *ch = grid::resample_linear(ch, cropped_dims, 1, new_dims);
                for (v, &m) in ch.iter_mut().zip(&new_mask) {
                    if !m {
                        *v = spec.background_value;
                    }
                }
            }
            label = label.map(|l| grid::resample_nearest(&l, cropped_dims, new_dims));
            let actual =
                [0, 1, 2].map(|a| spacing[a] * cropped_dims[a] as f64 / new_dims[a] as f64);
            (new_dims, actual)
        }
        None => (cropped_dims, spacing),
    };

    let min_xyz = spec.min_size.map_or([1; 3], |[d, h, w]| [w, h, d]);
    let grid_dims = [0, 1, 2].map(|a| resampled_dims[a].max(min_xyz[a]));
    // Each bound alone may pass and their mix not (one axis from each).
    if over_grid_limit(grid_dims) {
        return Err(Error::config(
            "preprocess.min_size",
            format!(
                "{:?} pads case {} to {} voxels, more than the {MAX_GRID_VOXELS} a grid may have",
                spec.min_size.unwrap_or_default(),
                case.id,
                size_text(grid_dims.map(|d| d as f64)),
            ),
        ));
    }
    let pad_before = [0, 1, 2].map(|a| (grid_dims[a] - resampled_dims[a]) / 2);
    if grid_dims != resampled_dims {
        for ch in channels.iter_mut() {
            *ch = grid::pad(
                ch,
                resampled_dims,
                pad_before,
                grid_dims,
                spec.background_value,
            );
        }
        label = label.map(|l| grid::pad(&l, resampled_dims, pad_before, grid_dims, 0));
    }

    Ok(PreprocessedCase {
        id: case.id.clone(),
        channels: channels
            .into_iter()
            .map(|data| Volume::new(grid_dims, grid_spacing, data))
            .collect(),
        label: label.map(|data| LabelVolume::new(grid_dims, grid_spacing, data)),
        crop: CropBox {
            original_dims: dims,
            original_spacing: spacing,
            start,
            end,
            resampled_dims,
            pad_before,
            grid_dims,
        },
        spacing: grid_spacing,
        background_value: spec.background_value,
    })
}

/// A size as `AxBxC`.
fn size_text(dims: [f64; 3]) -> String {
    format!("{}x{}x{}", dims[0], dims[1], dims[2])
}

fn check_prediction_len(len: usize, per_voxel: usize, crop: &CropBox) -> Result<()> {
    let want = grid::voxels(crop.grid_dims) * per_voxel;
    if len != want {
        return Err(Error::shape(
            "paste_back",
            format!(
                "prediction has {len} values, the preprocessed grid {:?} x {per_voxel} needs {want}",
                crop.grid_dims
            ),
        ));
    }
    Ok(())
}

/// Per-voxel probabilities (`channels` per voxel, channels fastest, voxels x fastest) predicted
/// on the preprocessed grid, put back into the original volume: padding removed, resampled back
/// (trilinear), `fill` (one value per channel) outside the crop.
pub fn paste_back_probs(
    probs: &[f32],
    channels: usize,
    fill: &[f32],
    crop: &CropBox,
) -> Result<Vec<f32>> {
    check_prediction_len(probs.len(), channels, crop)?;
    if channels == 0 || fill.len() != channels {
        return Err(Error::shape(
            "paste_back",
            format!("{} fill values for {channels} channels", fill.len()),
        ));
    }
    let end = [0, 1, 2].map(|a| crop.pad_before[a] + crop.resampled_dims[a]);
    let unpadded = grid::crop_interleaved(probs, crop.grid_dims, channels, crop.pad_before, end);
    let cropped = grid::resample_linear(
        &unpadded,
        crop.resampled_dims,
        channels,
        crop.cropped_dims(),
    );
    let total = grid::voxels(crop.original_dims) * channels;
    let mut out: Vec<f32> = fill.iter().copied().cycle().take(total).collect();
    grid::place_interleaved(
        &cropped,
        crop.cropped_dims(),
        channels,
        &mut out,
        crop.original_dims,
        crop.start,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A label map on the preprocessed grid put back as prediction does it: one-hot
    /// probabilities pasted back (background outside the crop), then the likeliest class.
    fn paste_back_labels(labels: &[u8], classes: usize, crop: &CropBox) -> Result<Vec<u8>> {
        let one_hot: Vec<f32> = labels
            .iter()
            .flat_map(|&l| (0..classes).map(move |c| if c == l as usize { 1.0 } else { 0.0 }))
            .collect();
        let mut fill = vec![0.0; classes];
        fill[0] = 1.0;
        let probs = paste_back_probs(&one_hot, classes, &fill, crop)?;
        Ok(probs
            .chunks_exact(classes)
            .map(|p| (0..classes).fold(0, |best, c| if p[c] > p[best] { c } else { best }) as u8)
            .collect())
    }

    /// A 10x8x6 case: a "brain" box [2,8)x[1,7)x[1,5) with channel 0 = 1 + x + 2y + 3z and
    /// channel 1 = 5 (flat), a label blob inside it, zeros elsewhere.
    fn box_case() -> CaseData {
        let dims = [10, 8, 6];
        let mut c0 = Volume::zeros(dims, [1.0, 1.0, 2.0]);
        let mut c1 = Volume::zeros(dims, [1.0, 1.0, 2.0]);
        let mut label = LabelVolume::new(dims, [1.0, 1.0, 2.0], vec![0; 480]);
        for z in 1..5 {
            for y in 1..7 {
                for x in 2..8 {
                    let i = c0.index(x, y, z);
                    c0.data[i] = (1 + x + 2 * y + 3 * z) as f32;
                    c1.data[i] = 5.0;
                    if (4..6).contains(&x) && (3..5).contains(&y) {
                        label.data[i] = if z == 2 { 2 } else { 1 };
                    }
                }
            }
        }
        CaseData {
            id: "box".into(),
            channels: vec![c0, c1],
            label: Some(label),
        }
    }

    fn mean_std(vals: &[f32]) -> (f64, f64) {
        let n = vals.len() as f64;
        let m = vals.iter().map(|&v| v as f64).sum::<f64>() / n;
        (
            m,
            (vals.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n).sqrt(),
        )
    }

    #[test]
    fn grids_beyond_the_voxel_bound_are_refused_naming_the_key() {
        let case = box_case();
        let tiny = PreprocessSpec {
            target_spacing: Some([0.001; 3]),
            ..PreprocessSpec::default()
        };
        let err = preprocess(&case, &tiny).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid preprocess.target_spacing: [0.001, 0.001, 0.001] mm")
                && err.contains("case box (6x6x4 voxels of [1.0, 1.0, 2.0] mm) to 6000x6000x8000")
                && err.contains("288000000000 voxels, more than the 536870912"),
            "{err}"
        );
        let huge = PreprocessSpec {
            min_size: Some([100_000; 3]),
            ..PreprocessSpec::default()
        };
        let err = huge.validate().unwrap_err().to_string();
        assert!(
            err.starts_with(
                "invalid preprocess.min_size: [100000, 100000, 100000] is 1000000000000000 voxels"
            ),
            "{err}"
        );
        // Each passes alone; together (x and y from one, z from the other) they do not.
        let mixed = PreprocessSpec {
            target_spacing: Some([1.0, 1.0, 0.0001]),
            min_size: Some([1, 20_000, 20_000]),
            ..PreprocessSpec::default()
        };
        let err = preprocess(&case, &mixed).unwrap_err().to_string();
        assert!(
            err.contains("pads case box to 20000x20000x80000 voxels"),
            "{err}"
        );
        let fine = PreprocessSpec {
            target_spacing: Some([0.5, 0.5, 1.0]),
            min_size: Some([16, 16, 16]),
            ..PreprocessSpec::default()
        };
        assert_eq!(preprocess(&case, &fine).unwrap().dims(), [16, 16, 16]);
    }

    #[test]
    fn crop_box_of_a_known_volume_and_zscore_inside_the_mask() {
        let case = box_case();
        let p = preprocess(&case, &PreprocessSpec::default()).unwrap();
        assert_eq!(p.crop.start, [2, 1, 1]);
        assert_eq!(p.crop.end, [8, 7, 5]);
        assert_eq!(p.dims(), [6, 6, 4]);
        // The whole cropped block is brain here: mean 0, std 1; the flat channel is all 0.
        let (m, s) = mean_std(&p.channels[0].data);
        assert!(m.abs() < 1e-5 && (s - 1.0).abs() < 1e-5, "mean {m} std {s}");
        assert!(
            p.channels[1].data.iter().all(|&v| v == 0.0),
            "flat channel must be 0, not NaN"
        );
        // Without cropping, background stays at background_value outside the mask.
        let spec = PreprocessSpec {
            crop_to_nonzero: false,
            background_value: -3.0,
            ..PreprocessSpec::default()
        };
        let full = preprocess(&case, &spec).unwrap();
        let mask = brain_mask(&case.channels);
        let inside = inside_mask(&full.channels[0].data, &mask);
        let (m, s) = mean_std(&inside);
        assert!(m.abs() < 1e-5 && (s - 1.0).abs() < 1e-5, "mean {m} std {s}");
        assert!(full.channels[0]
            .data
            .iter()
            .zip(&mask)
            .filter(|(_, &m)| !m)
            .all(|(&v, _)| v == -3.0));
        assert_eq!(inside.len(), 6 * 6 * 4);
    }

    /// A 7x7x7 mask with a hollow 5x5x5 cube shell at [1, 6) whose 3x3x3 inside is false.
    fn hollow_cube() -> Vec<bool> {
        let mut mask = vec![false; 343];
        for z in 1..6 {
            for y in 1..6 {
                for x in 1..6 {
                    let inner = [x, y, z].iter().all(|&c| (2..5).contains(&c));
                    mask[x + 7 * (y + 7 * z)] = !inner;
                }
            }
        }
        mask
    }

    #[test]
    fn fill_holes_fills_an_enclosed_cavity() {
        let mut mask = hollow_cube();
        fill_holes(&mut mask, [7, 7, 7]);
        for z in 0..7 {
            for y in 0..7 {
                for x in 0..7 {
                    let inside = [x, y, z].iter().all(|&c| (1..6).contains(&c));
                    assert_eq!(mask[x + 7 * (y + 7 * z)], inside, "({x}, {y}, {z})");
                }
            }
        }
    }

    #[test]
    fn fill_holes_keeps_a_cavity_that_reaches_the_border() {
        // A channel from the cavity along -x through the shell to the border at x = 0.
        let mut mask = hollow_cube();
        mask[1 + 7 * (3 + 7 * 3)] = false;
        let before = mask.clone();
        fill_holes(&mut mask, [7, 7, 7]);
        assert_eq!(mask, before);
        // Touching the open channel only diagonally (not 6-connected) is still a hole.
        let mut diagonal = hollow_cube();
        diagonal[3 + 7 * (3 + 7 * 3)] = true;
        diagonal[2 + 7 * (2 + 7 * 2)] = false;
        diagonal[1 + 7 * (1 + 7)] = false;
        fill_holes(&mut diagonal, [7, 7, 7]);
        assert!(diagonal[2 + 7 * (2 + 7 * 2)]);
        assert!(!diagonal[1 + 7 * (1 + 7)]);
    }

    #[test]
    fn skull_stripped_brains_keep_the_plain_nonzero_mask() {
        // BraTS-like data is zero only outside the brain, so filling holes changes nothing.
        for index in 0..3 {
            let synth = crate::data::synth::generate_case([20, 24, 22], 7, index);
            let channels: Vec<Volume> = synth
                .images
                .iter()
                .map(|img| Volume::new(synth.dims, [1.0; 3], img.clone()))
                .collect();
            let nonzero: Vec<bool> = (0..synth.labels.len())
                .map(|i| synth.images.iter().any(|img| img[i] != 0.0))
                .collect();
            assert!(nonzero.iter().any(|&m| m) && nonzero.iter().any(|&m| !m));
            assert_eq!(brain_mask(&channels), nonzero, "case {index}");
        }
    }

    #[test]
    fn an_interior_zero_is_normalised_like_tissue() {
        // The brain box of box_case with one voxel at exactly 0 in every channel.
        let mut case = box_case();
        let hole = case.channels[0].index(4, 3, 2);
        for ch in case.channels.iter_mut() {
            ch.data[hole] = 0.0;
        }
        let mask = brain_mask(&case.channels);
        assert!(mask[hole]);
        assert_eq!(mask.iter().filter(|&&m| m).count(), 6 * 6 * 4);
        let p = preprocess(&case, &PreprocessSpec::default()).unwrap();
        let raw = inside_mask(&case.channels[0].data, &mask);
        let (m, s) = mean_std(&raw);
        let want = ((0.0 - m) / s) as f32;
        // The hole at (4, 3, 2) is (2, 2, 1) in the crop starting at (2, 1, 1).
        let got = p.channels[0].at(2, 2, 1);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert!(got < -1.5, "the hole is far below the tissue mean: {got}");
    }

    #[test]
    fn minmax_is_in_unit_range_and_reaches_both_ends() {
        let spec = PreprocessSpec {
            intensity: Intensity::MinMax,
            ..PreprocessSpec::default()
        };
        let p = preprocess(&box_case(), &spec).unwrap();
        let (lo, hi) = min_max(&p.channels[0].data);
        assert_eq!((lo, hi), (0.0, 1.0));
        // 1 + 2 + 2*1 + 3*1 = 8 is the smallest brain value, 1 + 7 + 12 + 12 = 32 the largest.
        let v = p.channels[0].at(1, 1, 1);
        assert!(
            (v - (1.0 + 3.0 + 4.0 + 6.0 - 8.0) / 24.0).abs() < 1e-6,
            "{v}"
        );
    }

    /// One channel of values 1..=1000 on a 10x10x10 grid, no zeros (all brain).
    fn ramp_case() -> CaseData {
        let data: Vec<f32> = (1..=1000).map(|v| v as f32).collect();
        CaseData {
            id: "ramp".into(),
            channels: vec![Volume::new([10, 10, 10], [1.0; 3], data)],
            label: None,
        }
    }

    #[test]
    fn percentile_clipping_clips_at_the_percentiles() {
        let spec = PreprocessSpec {
            intensity: Intensity::PercentileClip {
                lo: 10.0,
                hi: 90.0,
                then: AfterClip::MinMax,
            },
            ..PreprocessSpec::default()
        };
        let p = preprocess(&ramp_case(), &spec).unwrap();
        let d = &p.channels[0].data;
        // 10th percentile of 1..=1000 (linear) = 1 + 0.1 * 999 = 100.9, 90th = 900.1.
        let zeros = d.iter().filter(|&&v| v == 0.0).count();
        let ones = d.iter().filter(|&&v| v == 1.0).count();
        assert_eq!((zeros, ones), (100, 100));
        assert!(
            (d[499] - (500.0 - 100.9) / 799.2).abs() < 1e-5,
            "{}",
            d[499]
        );
        let zs = PreprocessSpec {
            intensity: Intensity::PercentileClip {
                lo: 10.0,
                hi: 90.0,
                then: AfterClip::ZScore,
            },
            ..PreprocessSpec::default()
        };
        let z = preprocess(&ramp_case(), &zs).unwrap();
        let (m, s) = mean_std(&z.channels[0].data);
        assert!(m.abs() < 1e-4 && (s - 1.0).abs() < 1e-4, "mean {m} std {s}");
        assert_eq!(
            z.channels[0].data[0], z.channels[0].data[50],
            "both clipped to the low value"
        );
    }

    #[test]
    fn histogram_equalisation_is_monotone_and_about_uniform() {
        // Skewed input: squares, so equal-width bins of the input are very unequal.
        let data: Vec<f32> = (1..=1000).map(|v| (v * v) as f32).collect();
        let case = CaseData {
            id: "sq".into(),
            channels: vec![Volume::new([10, 10, 10], [1.0; 3], data)],
            label: None,
        };
        let spec = PreprocessSpec {
            intensity: Intensity::HistogramEqualisation,
            ..PreprocessSpec::default()
        };
        let d = preprocess(&case, &spec).unwrap().channels[0].data.clone();
        assert!(d.windows(2).all(|w| w[0] <= w[1]), "monotone");
        let mut bins = [0usize; 10];
        for &v in &d {
            bins[((v * 10.0) as usize).min(9)] += 1;
        }
        assert!(bins.iter().all(|&b| (95..=105).contains(&b)), "{bins:?}");
        assert_eq!((d[0], d[999]), (0.0, 1.0));
    }

    #[test]
    fn per_dataset_statistics_pool_the_cases() {
        let a = ramp_case();
        let mut b = ramp_case();
        for v in b.channels[0].data.iter_mut() {
            *v += 1000.0;
        }
        let stats = dataset_stats([&a, &b]).unwrap();
        let c = &stats.channels[0];
        // Values 1..=2000: mean 1000.5, population std sqrt((2000^2 - 1) / 12).
        assert!((c.mean - 1000.5).abs() < 1e-9);
        assert!((c.std - ((2000.0f64 * 2000.0 - 1.0) / 12.0).sqrt()).abs() < 1e-6);
        assert_eq!((c.min, c.max), (1.0, 2000.0));
        assert!(
            (c.percentile(50.0) - 1000.5).abs() < 1.0,
            "{}",
            c.percentile(50.0)
        );
        // Normalising case a with the pooled stats: its mean is (500.5 - 1000.5) / std.
        let spec = PreprocessSpec {
            statistics: Statistics::PerDataset(stats.clone()),
            ..PreprocessSpec::default()
        };
        let p = preprocess(&a, &spec).unwrap();
        let (m, _) = mean_std(&p.channels[0].data);
        assert!((m - (-500.0 / c.std)).abs() < 1e-4, "{m}");
        // A stats record round-trips through JSON (it is stored with the model).
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<PreprocessSpec>(&json).unwrap(), spec);
        let wrong = dataset_stats([&box_case()]).unwrap();
        let bad = PreprocessSpec {
            statistics: Statistics::PerDataset(wrong),
            ..PreprocessSpec::default()
        };
        assert!(
            preprocess(&a, &bad).is_err(),
            "2-channel stats for a 1-channel case"
        );
    }

    #[test]
    fn resampling_gives_the_expected_shape_and_nearest_labels() {
        let case = box_case();
        let spec = PreprocessSpec {
            target_spacing: Some([0.5, 2.0, 1.0]),
            ..PreprocessSpec::default()
        };
        let p = preprocess(&case, &spec).unwrap();
        // Crop 6x6x4 at spacing (1,1,2) -> 12x3x8 at (0.5,2,1).
        assert_eq!(p.dims(), [12, 3, 8]);
        assert_eq!(p.spacing, [0.5, 2.0, 1.0]);
        let label = p.label.as_ref().unwrap();
        assert!(label.data.iter().all(|&v| v <= 2));
        assert!(label.data.contains(&1) && label.data.contains(&2));
        // x in the crop 2..4 (original 4..6) -> resampled 4..8; z = 2 original -> crop 1 -> 2..4.
        assert_eq!(label.at(5, 1, 2), 2);
        assert_eq!(label.at(5, 1, 5), 1);
        assert_eq!(label.at(0, 1, 5), 0);
        // Paste back with resampling restores the original label here (integer factors).
        let back = paste_back_labels(&label.data, 3, &p.crop).unwrap();
        assert_eq!(back, case.label.unwrap().data);
    }

    #[test]
    fn crop_pad_and_paste_back_restore_positions_exactly() {
        let case = box_case();
        let spec = PreprocessSpec {
            min_size: Some([8, 9, 7]),
            ..PreprocessSpec::default()
        };
        let p = preprocess(&case, &spec).unwrap();
        assert_eq!(p.dims(), [7, 9, 8]);
        assert_eq!(p.crop.pad_before, [0, 1, 2]);
        let label = p.label.as_ref().unwrap();
        let back = paste_back_labels(&label.data, 3, &p.crop).unwrap();
        assert_eq!(back, case.label.as_ref().unwrap().data);
        // Probabilities: two channels (p, 1 - p) with p = label / 2, fill (0, 1) outside.
        let probs: Vec<f32> = label
            .data
            .iter()
            .flat_map(|&l| [l as f32 / 2.0, 1.0 - l as f32 / 2.0])
            .collect();
        let full = paste_back_probs(&probs, 2, &[0.0, 1.0], &p.crop).unwrap();
        let orig = &case.label.as_ref().unwrap().data;
        for (i, &l) in orig.iter().enumerate() {
            assert_eq!(
                [full[2 * i], full[2 * i + 1]],
                [l as f32 / 2.0, 1.0 - l as f32 / 2.0]
            );
        }
        assert!(paste_back_labels(&label.data[1..], 3, &p.crop).is_err());
    }

    #[test]
    fn all_zero_case_keeps_its_grid_and_gives_no_nan() {
        let case = CaseData {
            id: "empty".into(),
            channels: vec![Volume::zeros([4, 3, 2], [1.0; 3])],
            label: None,
        };
        for intensity in [
            Intensity::ZScore,
            Intensity::MinMax,
            Intensity::HistogramEqualisation,
        ] {
            let spec = PreprocessSpec {
                intensity,
                ..PreprocessSpec::default()
            };
            let p = preprocess(&case, &spec).unwrap();
            assert_eq!(p.dims(), [4, 3, 2]);
            assert!(p.channels[0].data.iter().all(|&v| v == 0.0));
        }
        let flat = CaseData {
            id: "flat".into(),
            channels: vec![Volume::new([4, 3, 2], [1.0; 3], vec![7.0; 24])],
            label: None,
        };
        for intensity in [Intensity::ZScore, Intensity::MinMax] {
            let spec = PreprocessSpec {
                intensity,
                ..PreprocessSpec::default()
            };
            let p = preprocess(&flat, &spec).unwrap();
            assert!(p.channels[0].data.iter().all(|v| v.is_finite()));
        }
    }
}
