//! Random training patches from preprocessed cases: where to centre a patch (uniformly, or on a
//! random foreground voxel for a set fraction of patches, as nnU-Net oversamples foreground),
//! then extraction through the augmentation plan. Patch sizes are (d, h, w) = (z, y, x) as in
//! tensors; positions inside cases are (x, y, z) as in `Volume`.
use super::augment::{self, AugmentSpec, GridView};
use super::grid;
use super::preprocess::PreprocessedCase;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// At most this many voxel positions are kept per foreground class (evenly strided).
pub const FOREGROUND_CAP: usize = 10_000;

/// A case that patches can be read from: in memory or memory-mapped from the cache.
pub trait PatchSource: Send + Sync {
    fn id(&self) -> &str;
    /// Grid size (x, y, z).
    fn dims(&self) -> [usize; 3];
    /// Image value of background and of everything outside the grid.
    fn background_value(&self) -> f32;
    /// One slice per channel, x fastest.
    fn channels(&self) -> Vec<&[f32]>;
    fn label(&self) -> Option<&[u8]>;
    /// Voxel indices of each foreground class: entry k lists class k + 1.
    fn foreground(&self) -> Vec<&[u32]>;
}

/// Positions of each foreground class, for oversampling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForegroundIndex {
    /// Entry k: buffer indices of voxels of class k + 1, at most `FOREGROUND_CAP`.
    pub classes: Vec<Vec<u32>>,
}

impl ForegroundIndex {
    pub fn from_labels(labels: &[u8]) -> Result<Self> {
        if labels.len() > u32::MAX as usize {
            return Err(Error::data(
                "foreground index",
                format!("{} voxels do not fit 32-bit positions", labels.len()),
            ));
        }
        let top = labels.iter().copied().max().unwrap_or(0) as usize;
        let mut all = vec![Vec::new(); top];
        for (i, &l) in labels.iter().enumerate() {
            if l > 0 {
                all[l as usize - 1].push(i as u32);
            }
        }
        let classes = all
            .into_iter()
            .map(|v| {
                let stride = v.len().div_ceil(FOREGROUND_CAP).max(1);
                v.into_iter().step_by(stride).collect()
            })
            .collect();
        Ok(Self { classes })
    }
}

/// A preprocessed case held in memory, with its foreground index.
pub struct InMemoryCase {
    case: PreprocessedCase,
    foreground: ForegroundIndex,
}

impl InMemoryCase {
    pub fn new(case: PreprocessedCase) -> Result<Self> {
        let dims = case.dims();
        let n = grid::voxels(dims);
        if case.channels.is_empty() {
            return Err(Error::data(&case.id, "case has no channels"));
        }
        if let Some(c) = case
            .channels
            .iter()
            .position(|c| c.dims != dims || c.data.len() != n)
        {
            return Err(Error::data(
                &case.id,
                format!("channel {c} does not match the grid {dims:?}"),
            ));
        }
        let foreground = match &case.label {
            Some(l) if l.dims != dims || l.data.len() != n => {
                return Err(Error::data(
                    &case.id,
                    format!("label does not match the grid {dims:?}"),
                ))
            }
            Some(l) => ForegroundIndex::from_labels(&l.data)?,
            None => ForegroundIndex {
                classes: Vec::new(),
            },
        };
        Ok(Self { case, foreground })
    }
    pub fn case(&self) -> &PreprocessedCase {
        &self.case
    }
    pub fn foreground_index(&self) -> &ForegroundIndex {
        &self.foreground
    }
}

impl PatchSource for InMemoryCase {
    fn id(&self) -> &str {
        &self.case.id
    }
    fn dims(&self) -> [usize; 3] {
        self.case.dims()
    }
    fn background_value(&self) -> f32 {
        self.case.background_value
    }
    fn channels(&self) -> Vec<&[f32]> {
        self.case
            .channels
            .iter()
            .map(|c| c.data.as_slice())
            .collect()
    }
    fn label(&self) -> Option<&[u8]> {
        self.case.label.as_ref().map(|l| l.data.as_slice())
    }
    fn foreground(&self) -> Vec<&[u32]> {
        self.foreground.classes.iter().map(Vec::as_slice).collect()
    }
}

/// Patch size (d, h, w) as (x, y, z).
pub fn patch_xyz(patch: [usize; 3]) -> [usize; 3] {
    [patch[2], patch[1], patch[0]]
}

/// Chooses the patch centre (x, y, z, in voxels of the case grid). With probability
/// `foreground_fraction` (and if the case has foreground) the patch is centred on a voxel of a
/// uniformly chosen present class, shifted to stay inside the grid; otherwise its start is
/// uniform. Along an axis where the case is smaller than the patch, the patch overhangs the
/// case by a random amount on each side (filled with background). Returns whether the
/// foreground was forced.
pub fn choose_centre(
    src: &dyn PatchSource,
    patch: [usize; 3],
    foreground_fraction: f64,
    rng: &mut Rng,
) -> ([f64; 3], bool) {
    let dims = src.dims();
    let p = patch_xyz(patch);
    let lowest = |a: usize| (dims[a] as isize - p[a] as isize).min(0);
    let highest = |a: usize| (dims[a] as isize - p[a] as isize).max(0);
    let force = rng.bernoulli(foreground_fraction);
    let foreground = src.foreground();
    let present: Vec<&[u32]> = foreground.into_iter().filter(|c| !c.is_empty()).collect();
    let start: [isize; 3] = if force && !present.is_empty() {
        let class = present[rng.below(present.len())];
        let v = class[rng.below(class.len())] as usize;
        let at = [
            v % dims[0],
            (v / dims[0]) % dims[1],
            v / (dims[0] * dims[1]),
        ];
        [0, 1, 2].map(|a| (at[a] as isize - p[a] as isize / 2).clamp(lowest(a), highest(a)))
    } else {
        [0, 1, 2].map(|a| lowest(a) + rng.below((highest(a) - lowest(a)) as usize + 1) as isize)
    };
    let centre = [0, 1, 2].map(|a| start[a] as f64 + (p[a] as f64 - 1.0) / 2.0);
    (centre, force && !present.is_empty())
}

/// Reusable buffers for sampling, so a worker allocates them once.
#[derive(Default)]
pub struct SampleScratch {
    blur: Vec<f32>,
    /// A channel-major patch, for callers that interleave channels afterwards.
    pub patch: Vec<f32>,
    /// Image and label buffers of a consumed batch, to fill again instead of allocating
    /// (fresh large allocations cost a page fault per 4 KiB on first touch).
    pub spare: Option<(Vec<f32>, Vec<u8>)>,
}

/// Draws one augmented training patch from `src` into `images` (channel-major: one (d, h, w)
/// block per channel, w fastest) and `label` ((d, h, w), internal classes).
#[allow(clippy::too_many_arguments)]
pub fn sample_patch(
    src: &dyn PatchSource,
    patch: [usize; 3],
    foreground_fraction: f64,
    augment: &AugmentSpec,
    rng: &mut Rng,
    images: &mut [f32],
    label: &mut [u8],
    scratch: &mut SampleScratch,
) -> Result<()> {
    let channels = src.channels();
    let plane = patch.iter().product::<usize>();
    if images.len() != plane * channels.len() || label.len() != plane {
        return Err(Error::shape(
            "sample_patch",
            format!(
                "buffers of {} and {} values for patch {patch:?} x {} channels",
                images.len(),
                label.len(),
                channels.len()
            ),
        ));
    }
    let case_label = src
        .label()
        .ok_or_else(|| Error::data(src.id(), "a training case needs a label"))?;
    let grid_voxels = grid::voxels(src.dims());
    if case_label.len() != grid_voxels || channels.iter().any(|c| c.len() != grid_voxels) {
        return Err(Error::data(
            src.id(),
            format!(
                "label has {} values, channels {:?}, the grid {:?} needs {grid_voxels}",
                case_label.len(),
                channels.iter().map(|c| c.len()).collect::<Vec<_>>(),
                src.dims()
            ),
        ));
    }
    let (centre, _) = choose_centre(src, patch, foreground_fraction, rng);
    let p = patch_xyz(patch);
    let plan = augment.draw(p, channels.len(), rng);
    let view = GridView {
        dims: src.dims(),
        channels,
        label: case_label,
        background: src.background_value(),
    };
    augment::extract(&view, centre, &plan.spatial, p, images, label);
    // Classes past the case's foreground lists can only come from a damaged cache file
    // (a loaded label map is checked against its convention): say which case, here.
    let classes = src.foreground().len();
    if let Some(&bad) = label.iter().find(|&&l| l as usize > classes) {
        return Err(Error::data(
            src.id(),
            format!(
                "a patch holds label class {bad}, but the case has classes 0..={classes} \
                 (is its cache file damaged? `voxseg preprocess --force` rebuilds it)"
            ),
        ));
    }
    augment::apply_intensity(&plan.intensity, images, p, &mut scratch.blur);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::preprocess::CropBox;
    use crate::data::{LabelVolume, Volume};

    /// A 20x16x12 case: channel value = buffer index, one foreground voxel of class 2 at
    /// (15, 3, 9) and a 2x2x2 block of class 1 at (2..4, 10..12, 1..3).
    fn case() -> InMemoryCase {
        let dims = [20, 16, 12];
        let n = grid::voxels(dims);
        let img = Volume::new(dims, [1.0; 3], (0..n).map(|i| i as f32).collect());
        let mut label = LabelVolume::new(dims, [1.0; 3], vec![0; n]);
        let i = label.index(15, 3, 9);
        label.data[i] = 2;
        for z in 1..3 {
            for y in 10..12 {
                for x in 2..4 {
                    let i = label.index(x, y, z);
                    label.data[i] = 1;
                }
            }
        }
        InMemoryCase::new(PreprocessedCase {
            id: "c".into(),
            channels: vec![img],
            label: Some(label),
            crop: CropBox {
                original_dims: dims,
                original_spacing: [1.0; 3],
                start: [0; 3],
                end: dims,
                resampled_dims: dims,
                pad_before: [0; 3],
                grid_dims: dims,
            },
            spacing: [1.0; 3],
            background_value: -1.0,
        })
        .unwrap()
    }

    #[test]
    fn foreground_oversampling_hits_the_requested_fraction() {
        let c = case();
        let mut rng = Rng::new(4);
        let patch = [4, 4, 4];
        let draws = 4000;
        let label = c.label().unwrap();
        let mut on_foreground = 0;
        for _ in 0..draws {
            let (centre, _) = choose_centre(&c, patch, 0.33, &mut rng);
            // Even patch sizes put the centre between voxels; the voxel chosen sits at start + 2.
            let v = centre.map(|x| (x + 0.5) as usize);
            on_foreground += (label[(v[2] * 16 + v[1]) * 20 + v[0]] > 0) as usize;
        }
        // Random centres hit the 9 foreground voxels with chance about 9 / (17 * 13 * 9).
        let rate = on_foreground as f64 / draws as f64;
        assert!((rate - 0.33).abs() < 0.03, "{rate}");
        // Both classes are chosen about equally often although class 1 has 8x the voxels.
        let mut class2 = 0;
        let mut forced = 0;
        for _ in 0..2000 {
            let (centre, f) = choose_centre(&c, patch, 1.0, &mut rng);
            let v = centre.map(|x| (x + 0.5) as usize);
            forced += f as usize;
            class2 += (label[(v[2] * 16 + v[1]) * 20 + v[0]] == 2) as usize;
        }
        assert_eq!(forced, 2000);
        assert!((class2 as f64 / 2000.0 - 0.5).abs() < 0.05, "{class2}");
    }

    #[test]
    fn identity_augmentation_returns_the_exact_crop_and_small_cases_are_padded() {
        let c = case();
        let patch = [3, 4, 5];
        let mut images = vec![0.0; 60];
        let mut label = vec![0; 60];
        let mut scratch = SampleScratch::default();
        let mut rng = Rng::new(8);
        sample_patch(
            &c,
            patch,
            0.0,
            &AugmentSpec::none(),
            &mut rng,
            &mut images,
            &mut label,
            &mut scratch,
        )
        .unwrap();
        // The value is the buffer index, so the first value gives the start; the rest must
        // be the crop at that start.
        let first = images[0] as usize;
        let start = [first % 20, (first / 20) % 16, first / 320];
        let end = [start[0] + 5, start[1] + 4, start[2] + 3];
        let img = &c.case().channels[0].data;
        assert_eq!(images, grid::crop(img, [20, 16, 12], start, end));
        assert_eq!(
            label,
            grid::crop(c.label().unwrap(), [20, 16, 12], start, end)
        );
        // A patch larger than the case along z: background image and label 0 beyond it.
        let big = [16, 4, 4];
        let mut images = vec![0.0; 256];
        let mut label = vec![9; 256];
        sample_patch(
            &c,
            big,
            0.0,
            &AugmentSpec::none(),
            &mut rng,
            &mut images,
            &mut label,
            &mut scratch,
        )
        .unwrap();
        let per_z: Vec<bool> = (0..16).map(|k| images[k * 16] >= 0.0).collect();
        assert_eq!(per_z.iter().filter(|&&inside| inside).count(), 12);
        assert!(label.iter().all(|&l| l <= 2));
        assert!((0..16)
            .filter(|&k| !per_z[k])
            .all(|k| label[k * 16..(k + 1) * 16].iter().all(|&l| l == 0)));
        // Wrong buffer sizes are an error, not a panic.
        let err = sample_patch(
            &c,
            big,
            0.0,
            &AugmentSpec::none(),
            &mut rng,
            &mut images[1..],
            &mut label,
            &mut scratch,
        );
        assert!(err.is_err());
    }

    #[test]
    fn augmented_labels_are_a_subset_and_same_seed_same_patch() {
        let c = case();
        let spec = AugmentSpec {
            rotation: augment::Rotation {
                p: 1.0,
                max_degrees: 45.0,
            },
            ..AugmentSpec::default()
        };
        let patch = [6, 6, 6];
        let mut scratch = SampleScratch::default();
        let mut run = |seed| {
            let mut images = vec![0.0; 216];
            let mut label = vec![0; 216];
            sample_patch(
                &c,
                patch,
                1.0,
                &spec,
                &mut Rng::new(seed),
                &mut images,
                &mut label,
                &mut scratch,
            )
            .unwrap();
            (images, label)
        };
        let mut with_foreground = 0;
        for seed in 0..20 {
            let (images, label) = run(seed);
            assert!(label.iter().all(|&l| l <= 2), "seed {seed}");
            assert!(images.iter().all(|v| v.is_finite()));
            with_foreground += label.iter().any(|&l| l > 0) as usize;
        }
        // Centred on foreground; but a label holds a sample point only where it has the
        // largest share of the point's eight neighbours (as nnU-Net samples labels), which
        // the single class-2 voxel has only next to its centre and the 2x2x2 class-1 block
        // only inside its one central cell: a rotated, scaled-up grid can step over both.
        assert!(with_foreground >= 10, "{with_foreground}");
        assert_eq!(run(3), run(3));
        assert_ne!(run(3).0, run(4).0);
    }
}
