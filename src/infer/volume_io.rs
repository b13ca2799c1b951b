//! Between volumes and network tensors: interleaving channels (channels last) and turning
//! logits into probabilities the way the target was trained.
use crate::data::labels::TargetSpec;
use crate::data::Volume;
use crate::error::{Error, Result};

/// Channel volumes (each x fastest) as one `[D, H, W, C]` buffer.
pub fn interleave_channels(channels: &[Volume]) -> Result<Vec<f32>> {
    let first = channels
        .first()
        .ok_or_else(|| Error::data("predict", "no input channels"))?;
    let c = channels.len();
    if channels.iter().any(|v| v.dims != first.dims) {
        return Err(Error::data(
            "predict",
            "input channels have different sizes",
        ));
    }
    let mut out = vec![0.0f32; first.len() * c];
    for (k, v) in channels.iter().enumerate() {
        for (i, &x) in v.data.iter().enumerate() {
            out[i * c + k] = x;
        }
    }
    Ok(out)
}

/// Per-voxel probabilities from logits with `k` channels last: softmax for classes,
/// sigmoid for regions and single classes.
pub fn probabilities(target: &TargetSpec, logits: &[f32], k: usize) -> Vec<f32> {
    match target {
        TargetSpec::Classes => {
            let mut out = vec![0.0f32; logits.len()];
            for (row, dst) in logits.chunks_exact(k).zip(out.chunks_exact_mut(k)) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for (d, &l) in dst.iter_mut().zip(row) {
                    *d = (l - max).exp();
                    sum += *d;
                }
                for d in dst.iter_mut() {
                    *d /= sum;
                }
            }
            out
        }
        _ => logits
            .iter()
            .map(|&l| crate::tensor_ops::unary::sigmoid(l))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_and_activates() {
        let a = Volume::new([2, 1, 1], [1.0; 3], vec![1.0, 2.0]);
        let b = Volume::new([2, 1, 1], [1.0; 3], vec![10.0, 20.0]);
        assert_eq!(
            interleave_channels(&[a, b]).unwrap(),
            vec![1.0, 10.0, 2.0, 20.0]
        );
        let p = probabilities(&TargetSpec::Classes, &[0.0, 0.0, 1000.0, 0.0], 2);
        assert_eq!(p, vec![0.5, 0.5, 1.0, 0.0]);
        let s = probabilities(&TargetSpec::Regions, &[0.0, 100.0], 2);
        assert_eq!(s, vec![0.5, 1.0]);
    }
}
