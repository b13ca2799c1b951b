//! Gradient clipping by the global L2 norm: one multi-tensor sum of squares (two launches
//! and one read back on a device) and, when the norm is over the limit, one multi-tensor
//! scale in place.
use crate::autograd::{Gradients, LeafId};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Scales every gradient by `max_norm / norm` when the L2 norm of all of them together
/// exceeds `max_norm` (nnU-Net clips at 12); returns the norm before clipping. A NaN or
/// infinite norm is an error and leaves the gradients as they were.
pub fn clip_grad_norm<B: Backend>(grads: &mut Gradients<B>, max_norm: f64) -> Result<f64> {
    if !(max_norm > 0.0 && max_norm.is_finite()) {
        return Err(Error::config(
            "max gradient norm",
            format!("{max_norm} (must be positive)"),
        ));
    }
    // A fixed order, so the f64 sum does not depend on hash order.
    let mut entries: Vec<_> = grads.iter().collect();
    entries.sort_by_key(|(id, _)| **id);
    let Some(backend) = entries.first().map(|(_, g)| g.backend().clone()) else {
        return Ok(0.0);
    };
    let storages: Vec<&B::Storage> = entries.iter().map(|(_, g)| g.storage()).collect();
    let norm = backend.sum_squares_multi(&storages)?.sqrt();
    let ids: Vec<LeafId> = entries.into_iter().map(|(id, _)| *id).collect();
    if !norm.is_finite() {
        return Err(Error::NonFinite {
            what: "gradient norm".into(),
            detail: format!("{norm} over {} gradients", ids.len()),
        });
    }
    if norm > max_norm {
        let mut taken: Vec<(LeafId, Tensor<B>)> = ids
            .into_iter()
            .filter_map(|id| Some((id, grads.remove(id)?)))
            .collect();
        let result = scale_all(&backend, &mut taken, max_norm / norm);
        for (id, g) in taken {
            grads.insert(id, g);
        }
        result?;
    }
    Ok(norm)
}

/// Every tensor of `taken` times `factor`, in place, in one `scale_multi`.
fn scale_all<B: Backend>(
    backend: &B,
    taken: &mut [(LeafId, Tensor<B>)],
    factor: f64,
) -> Result<()> {
    let mut storages = Vec::with_capacity(taken.len());
    for (_, g) in taken.iter_mut() {
        storages.push(g.storage_mut()?);
    }
    backend.scale_multi(&mut storages, factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu64;
    use crate::optim::test_util::gradients;

    fn grads(values: &[&[f64]]) -> (Gradients<Cpu64>, Vec<LeafId>) {
        let ids: Vec<LeafId> = values.iter().map(|_| LeafId::fresh()).collect();
        let entries: Vec<(LeafId, &[f64])> =
            ids.iter().copied().zip(values.iter().copied()).collect();
        (gradients(&Cpu64::new(), &entries), ids)
    }

    #[test]
    fn scales_to_the_max_norm_and_returns_the_norm_before() {
        // Norm sqrt(9 + 16 + 144) = 13.
        let (mut g, ids) = grads(&[&[3.0, 4.0], &[12.0]]);
        let norm = clip_grad_norm(&mut g, 6.5).unwrap();
        assert!((norm - 13.0).abs() < 1e-12);
        assert_eq!(g.get(ids[0]).unwrap().to_vec().unwrap(), vec![1.5, 2.0]);
        assert_eq!(g.get(ids[1]).unwrap().to_vec().unwrap(), vec![6.0]);
        assert!((clip_grad_norm(&mut g, 100.0).unwrap() - 6.5).abs() < 1e-12);
        assert_eq!(
            g.get(ids[1]).unwrap().to_vec().unwrap(),
            vec![6.0],
            "below the max: unchanged"
        );
    }

    #[test]
    fn a_non_finite_norm_is_an_error() {
        let (mut g, ids) = grads(&[&[1.0, f64::NAN]]);
        let err = clip_grad_norm(&mut g, 1.0).unwrap_err();
        assert!(matches!(err, Error::NonFinite { .. }), "{err}");
        assert!(g.get(ids[0]).unwrap().to_vec().unwrap()[0] == 1.0);
        assert!(clip_grad_norm(&mut g, 0.0).is_err());
    }
}
