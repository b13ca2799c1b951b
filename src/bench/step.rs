//! One training step of an nnU-Net-style U-Net as a benchmark case, on any backend:
//! forward with deep supervision, Dice + BCE on the regions (the i-th output weighted
//! 1/2^i), backward, gradient clipping at 12 and SGD with Nesterov momentum — the step
//! scripts/bench_reference.py times through PyTorch.
use crate::autograd::{Tape, Var};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::loss::{dice_ce, Target};
use crate::nn::unet::UNetConfig;
use crate::nn::{Ctx, Model, ModelSpec, Module};
use crate::optim::{clip_grad_norm, OptimizerSpec};
use crate::tensor::Tensor;

/// The network and input of a step case.
#[derive(Clone, Debug)]
pub struct StepShape {
    pub batch: usize,
    pub patch: usize,
    pub in_channels: usize,
    pub regions: usize,
    pub base_features: usize,
    pub max_features: usize,
    pub depth: usize,
}

impl StepShape {
    /// The network: nnU-Net's recipe at this shape's widths.
    pub fn config(&self) -> UNetConfig {
        UNetConfig {
            base_features: self.base_features,
            max_features: self.max_features,
            depth: self.depth,
            ..UNetConfig::nnunet(self.in_channels, self.regions)
        }
    }

    /// "NxDxHxWxCin w0-w1-...", as the reference names its step.
    pub fn name(&self) -> String {
        let cfg = self.config();
        let widths: Vec<String> = (0..self.depth)
            .map(|s| cfg.features(s).to_string())
            .collect();
        let p = self.patch;
        format!(
            "{}x{p}x{p}x{p}x{} {}",
            self.batch,
            self.in_channels,
            widths.join("-")
        )
    }

    pub fn input_dims(&self) -> [usize; 5] {
        let p = self.patch;
        [self.batch, p, p, p, self.in_channels]
    }
}

/// A step of `shape`'s network on input `x` (of `shape.input_dims()`), to be called
/// repeatedly: each call trains the same model one more step and returns the loss (left on
/// the device, so that timing does not wait for it). `after_forward` runs once the forward
/// and the loss are built, before the backward (where the tape holds the most it saved).
pub fn step_runner<B: Backend>(
    backend: &B,
    shape: &StepShape,
    x: Tensor<B>,
    seed: u64,
    mut after_forward: impl FnMut(),
) -> Result<impl FnMut() -> Result<Tensor<B>>> {
    let spec = ModelSpec::Unet(shape.config());
    let mut model = Model::new(backend, &spec, seed)?;
    let mut opt = OptimizerSpec::nnunet_sgd().build::<B>()?;
    let backend = backend.clone();
    let mut step = 0u64;
    Ok(move || -> Result<Tensor<B>> {
        let tape = Tape::new();
        let outputs = model.forward(&Var::constant(x.clone()), &Ctx::train(tape.clone(), step))?;
        let mut loss: Option<Var<B>> = None;
        for (i, out) in outputs.iter().enumerate() {
            let fill = if i % 2 == 0 { 1.0 } else { 0.0 };
            let t = Tensor::full(&backend, out.shape().clone(), fill)?;
            let term = dice_ce(out, &Target::Regions(t))?.scale(0.5f64.powi(i as i32))?;
            loss = Some(match loss {
                Some(l) => l.add(&term)?,
                None => term,
            });
        }
        let loss = loss.ok_or_else(|| Error::shape("unet_step", "no output"))?;
        after_forward();
        let mut grads = tape.backward(&loss)?;
        clip_grad_norm(&mut grads, 12.0)?;
        let mut params = model.params_mut();
        opt.step(&mut params, &grads, 1e-2)?;
        step += 1;
        Ok(loss.value().clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::tensor::Shape;

    #[test]
    fn a_small_step_trains_and_is_named_like_the_reference() {
        let shape = StepShape {
            batch: 1,
            patch: 8,
            in_channels: 2,
            regions: 3,
            base_features: 4,
            max_features: 12,
            depth: 3,
        };
        assert_eq!(shape.name(), "1x8x8x8x2 4-8-12");
        let be = Cpu::new();
        let n: usize = shape.input_dims().iter().product();
        let data: Vec<f32> = (0..n)
            .map(|i| ((i * 37) % 17) as f32 / 17.0 - 0.5)
            .collect();
        let x = Tensor::from_storage(&be, Shape::new(&shape.input_dims()), data).unwrap();
        let forwards = std::rc::Rc::new(std::cell::Cell::new(0));
        let counted = forwards.clone();
        let mut run =
            step_runner(&be, &shape, x, 3, move || counted.set(counted.get() + 1)).unwrap();
        let losses: Vec<f32> = (0..6)
            .map(|_| run().unwrap().to_vec().unwrap()[0])
            .collect();
        assert_eq!(forwards.get(), 6, "after_forward once a step");
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
        assert!(
            losses[5] < losses[0] - 0.05,
            "six steps towards constant targets lower the loss: {losses:?}"
        );
    }
}
