//! Small in-memory phantom cases (an ellipsoid "brain" with a layered "tumour" blob) for the
//! sampler, loader and cache tests and the loader benchmark; they look like a preprocessed
//! case, so no files or preprocessing are needed.
use super::grid;
use super::preprocess::{CropBox, PreprocessedCase};
use super::volume::{LabelVolume, Volume};
use crate::rng::{uniform_at, Rng};

/// A preprocessed-looking case of size `dims` (x, y, z) with `channels` channels: inside the
/// brain ellipsoid, smooth per-channel patterns plus noise and a brighter tumour; background
/// 0 outside. Label: 3 in the tumour core, 1 around it, 2 in the outer shell.
pub fn phantom_case(id: &str, dims: [usize; 3], channels: usize, seed: u64) -> PreprocessedCase {
    let mut rng = Rng::new(seed);
    let half = dims.map(|d| d as f64 / 2.0);
    let centre = [0, 1, 2].map(|a| half[a] * rng.uniform_range(0.7, 1.3));
    let radius = [0, 1, 2].map(|a| (dims[a] as f64 * rng.uniform_range(0.1, 0.2)).max(1.5));
    let n = grid::voxels(dims);
    let mut images = vec![vec![0.0f32; n]; channels];
    let mut label = vec![0u8; n];
    let mut i = 0;
    for z in 0..dims[2] {
        for y in 0..dims[1] {
            for x in 0..dims[0] {
                let p = [x as f64, y as f64, z as f64];
                let brain: f64 = (0..3)
                    .map(|a| ((p[a] - half[a]) / (half[a] * 0.95)).powi(2))
                    .sum();
                if brain <= 1.0 {
                    let t: f64 = (0..3)
                        .map(|a| ((p[a] - centre[a]) / radius[a]).powi(2))
                        .sum();
                    label[i] = match t {
                        t if t <= 0.3 => 3,
                        t if t <= 0.6 => 1,
                        t if t <= 1.0 => 2,
                        _ => 0,
                    };
                    for (c, img) in images.iter_mut().enumerate() {
                        let pattern = ((p[0] * 0.11 + c as f64).sin() * (p[1] * 0.07).cos()) as f32;
                        let noise = uniform_at(seed, c as u32, i as u64) - 0.5;
                        img[i] = pattern + 0.3 * noise + 0.8 * label[i] as f32;
                    }
                }
                i += 1;
            }
        }
    }
    PreprocessedCase {
        id: id.to_string(),
        channels: images
            .into_iter()
            .map(|d| Volume::new(dims, [1.0; 3], d))
            .collect(),
        label: Some(LabelVolume::new(dims, [1.0; 3], label)),
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
        background_value: 0.0,
    }
}
