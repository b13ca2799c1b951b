//! `NormKernel` for `Cuda` (kernels/norm.cu): statistics by a two-level f64 reduction,
//! the normalisation with its affine and fused activation in one pass over memory, the
//! backward in two passes with one small kernel in between (it recomputes the forward's
//! coefficients instead of reading the forward's output).
//! Where the convolutions run on the tensor cores, the normalisation also writes its output
//! (the next convolution's x) and its input's gradient (the previous convolution's dy)
//! packed for them, and keeps each pack beside its buffer (`storage`), so the convolutions
//! reading them pack nothing.
//! Shapes are checked as the CPU reference checks them (`NormParams::check_lens`).
use super::conv_plan::{ConvPack, ConvPrecision};
use super::device::{Cuda, CudaStorage};
use super::kernel_call::call_kernel;
use super::launch::elementwise;
use super::params_norm::{
    norm_grad_bits, norm_pack, NormKernelParams, NormMovingParams, NormPlan,
    NORM_BACKWARD_COEF_PLANES,
};
use crate::error::{Error, Result};
use crate::tensor_ops::norm::{check_moving_lens, NormGrads, NormKernel, NormParams};

impl Cuda {
    fn norm_plan(&self, p: &NormParams, has_gamma: bool, has_beta: bool) -> NormPlan {
        NormPlan::new(
            NormKernelParams::new(p, has_gamma, has_beta),
            self.target_blocks(),
            self.max_elementwise_blocks(),
        )
    }

    /// The pack a convolution would make of an activation this norm writes (its output, its
    /// input's gradient), for the norm to write alongside: where the convolutions run on
    /// the tensor cores and keep their packs (see `storage`).
    /// None while a graph capture is in progress (see `packed` in conv.rs).
    fn activation_pack(&self, p: &NormKernelParams) -> Result<Option<ConvPack>> {
        if !self.pack_cache()? || self.capturing() {
            return Ok(None);
        }
        Ok(norm_pack(p, self.conv_precision()?, self.target_blocks()))
    }

    /// The forward's coefficients `a, b` of `y = act(x a + b)`, per (outer slice, channel),
    /// in two planes; an absent gamma or beta is not read (its flag is 0).
    fn norm_affine(
        &self,
        plan: &NormPlan,
        mean: &CudaStorage,
        var: &CudaStorage,
        gamma: Option<&CudaStorage>,
        beta: Option<&CudaStorage>,
    ) -> Result<CudaStorage> {
        let mut coef = self.alloc(2 * plan.params.pairs())?;
        // `mean` stands in for an absent gamma or beta.
        call_kernel!(
            self,
            "norm",
            "norm_affine",
            &plan.pairs_dims,
            [
                &plan.params,
                mean.block(),
                var.block(),
                gamma.unwrap_or(mean).block(),
                beta.unwrap_or(mean).block(),
                coef.block_mut()
            ]
        )?;
        Ok(coef)
    }

    /// `activation_pack` with a buffer for it; None, leaving the convolution to pack for
    /// itself, when there is no pack or no memory for one.
    fn activation_pack_buffer(
        &self,
        p: &NormKernelParams,
    ) -> Result<Option<(ConvPack, CudaStorage)>> {
        Ok(self
            .activation_pack(p)?
            .and_then(|pack| Some((pack, self.alloc_pack(&pack).ok()?))))
    }
}

impl NormKernel for Cuda {
    fn norm_stats(&self, x: &CudaStorage, p: &NormParams) -> Result<(CudaStorage, CudaStorage)> {
        p.validate()?;
        p.check_len("x", x.len(), p.numel())?;
        let plan = self.norm_plan(p, false, false);
        let mut partial = self.alloc_f64(plan.partial_len())?;
        call_kernel!(
            self,
            "norm",
            "norm_stats_partial",
            &plan.reduce_dims,
            [&plan.reduce, &plan.params, x.block(), partial.block_mut()]
        )?;
        let mut mean = self.alloc(p.stats_len())?;
        let mut var = self.alloc(p.stats_len())?;
        call_kernel!(
            self,
            "norm",
            "norm_stats_finish",
            &plan.stats_dims,
            [
                &plan.reduce,
                &plan.params,
                partial.block(),
                x.block(),
                mean.block_mut(),
                var.block_mut()
            ]
        )?;
        Ok((mean, var))
    }

    fn norm_forward(
        &self,
        x: &CudaStorage,
        mean: &CudaStorage,
        var: &CudaStorage,
        gamma: Option<&CudaStorage>,
        beta: Option<&CudaStorage>,
        p: &NormParams,
    ) -> Result<CudaStorage> {
        let affine = [gamma.map(|g| g.len()), beta.map(|b| b.len())];
        p.check_lens(&[("x", x.len())], mean.len(), var.len(), affine)?;
        let plan = self.norm_plan(p, gamma.is_some(), beta.is_some());
        let coef = self.norm_affine(&plan, mean, var, gamma, beta)?;
        let mut y = self.alloc(x.len())?;
        match self.activation_pack_buffer(&plan.params)? {
            None => call_kernel!(
                self,
                "norm",
                "norm_apply",
                &plan.element_dims,
                [&plan.params, x.block(), coef.block(), y.block_mut()]
            )?,
            Some((pack, mut packed)) => {
                let name = match pack.precision {
                    ConvPrecision::Tf32 => "norm_apply_tf32_pack",
                    _ => "norm_apply_bf16_pack",
                };
                call_kernel!(
                    self,
                    "norm",
                    name,
                    &plan.element_dims,
                    [
                        &plan.params,
                        x.block(),
                        coef.block(),
                        y.block_mut(),
                        packed.block_mut()
                    ]
                )?;
                y.packs()
                    .get_or_try_insert(pack, || Ok::<_, Error>(packed))?;
            }
        }
        Ok(y)
    }

    fn norm_backward(
        &self,
        x: &CudaStorage,
        dy: &CudaStorage,
        mean: &CudaStorage,
        var: &CudaStorage,
        gamma: Option<&CudaStorage>,
        beta: Option<&CudaStorage>,
        p: &NormParams,
        needs: [bool; 3],
    ) -> Result<NormGrads<CudaStorage>> {
        let elements = [("x", x.len()), ("dy", dy.len())];
        let affine = [gamma.map(|g| g.len()), beta.map(|b| b.len())];
        p.check_lens(&elements, mean.len(), var.len(), affine)?;
        let plan = self.norm_plan(p, gamma.is_some(), beta.is_some());
        // An absent gamma or beta is not read (its flag is 0): `mean` stands in for it.
        let (gamma, beta) = (gamma.unwrap_or(mean), beta.unwrap_or(mean));
        // Pass 1, per column: sum dz and sum dz (x - mean).
        let partial = if !p.fixed_stats || needs[1] || needs[2] {
            let mut partial = self.alloc_f64(plan.partial_len())?;
            call_kernel!(
                self,
                "norm",
                "norm_backward_partial",
                &plan.reduce_dims,
                [
                    &plan.reduce,
                    &plan.params,
                    x.block(),
                    dy.block(),
                    mean.block(),
                    var.block(),
                    gamma.block(),
                    beta.block(),
                    partial.block_mut()
                ]
            )?;
            Some(partial)
        } else {
            None
        };

        // Between the passes, one launch: dx's coefficients, dgamma and dbeta, as asked.
        // Every output gets its buffer (a few values per channel); the kernel writes those
        // `grads` asks for.
        let mut coef = self.alloc(NORM_BACKWARD_COEF_PLANES * plan.params.pairs())?;
        let mut dgamma = self.alloc(p.c)?;
        let mut dbeta = self.alloc(p.c)?;
        let grads = norm_grad_bits(needs);
        call_kernel!(
            self,
            "norm",
            "norm_backward_finish",
            &plan.finish_dims,
            [
                &plan.reduce,
                &plan.params,
                &grads,
                partial.as_ref().unwrap_or(x).block(),
                mean.block(),
                var.block(),
                gamma.block(),
                beta.block(),
                coef.block_mut(),
                dgamma.block_mut(),
                dbeta.block_mut()
            ]
        )?;
        let (dgamma, dbeta) = (needs[1].then_some(dgamma), needs[2].then_some(dbeta));

        // Pass 2: dx = k1 dz + k2 (x - mean) + k3.
        let dx = if needs[0] {
            let mut dx = self.alloc(x.len())?;
            let params = &plan.params;
            let (x, dy, coef) = (x.block(), dy.block(), coef.block());
            match self.activation_pack_buffer(params)? {
                None => call_kernel!(
                    self,
                    "norm",
                    "norm_backward_dx",
                    &plan.element_dims,
                    [params, x, dy, coef, dx.block_mut()]
                )?,
                Some((pack, mut packed)) => {
                    let name = match pack.precision {
                        ConvPrecision::Tf32 => "norm_backward_dx_tf32_pack",
                        _ => "norm_backward_dx_bf16_pack",
                    };
                    call_kernel!(
                        self,
                        "norm",
                        name,
                        &plan.element_dims,
                        [params, x, dy, coef, dx.block_mut(), packed.block_mut()]
                    )?;
                    dx.packs()
                        .get_or_try_insert(pack, || Ok::<_, Error>(packed))?;
                }
            }
            Some(dx)
        } else {
            None
        };
        Ok(NormGrads { dx, dgamma, dbeta })
    }

    fn norm_update_moving(
        &self,
        moving: &mut CudaStorage,
        batch: &CudaStorage,
        momentum: f64,
        correction: f64,
    ) -> Result<()> {
        check_moving_lens(moving.len(), batch.len())?;
        let n = moving.len();
        if n == 0 {
            return Ok(());
        }
        let p = NormMovingParams {
            n: n as u64,
            momentum,
            correction,
        };
        call_kernel!(
            self,
            "norm",
            "norm_update_moving",
            &elementwise(n, self.max_elementwise_blocks()),
            [&p, moving.block_mut(), batch.block()]
        )
    }
}
