//! Harness entry points of kernels/norm.cu. Every wrapper checks that the slices cover
//! what the parameters make the kernel index, that the reduction view is the
//! normalisation's and that optional inputs match their flags.
use super::conv::{aligned16, check_packed, Packed};
use super::{need, status, EmuResult};
use crate::backend::cuda::conv_plan::{ConvPack, ConvPrecision};
use crate::backend::cuda::params::{LaunchDims, ReduceParams};
use crate::backend::cuda::params_norm::{
    norm_grad_bits, norm_pack, NormKernelParams, NormMovingParams, NORM_BACKWARD_COEF_PLANES,
};
use std::ffi::c_int;

extern "C" {
    fn emu_norm_stats_partial(
        d: *const LaunchDims,
        r: ReduceParams,
        p: NormKernelParams,
        x: *const f32,
        partial: *mut f64,
    ) -> c_int;
    fn emu_norm_stats_finish(
        d: *const LaunchDims,
        r: ReduceParams,
        p: NormKernelParams,
        partial: *const f64,
        x: *const f32,
        mean: *mut f32,
        var: *mut f32,
    ) -> c_int;
    fn emu_norm_affine(
        d: *const LaunchDims,
        p: NormKernelParams,
        mean: *const f32,
        var: *const f32,
        gamma: *const f32,
        beta: *const f32,
        coef: *mut f32,
    ) -> c_int;
    fn emu_norm_apply(
        d: *const LaunchDims,
        p: NormKernelParams,
        x: *const f32,
        coef: *const f32,
        y: *mut f32,
    ) -> c_int;
    fn emu_norm_apply_bf16_pack(
        d: *const LaunchDims,
        p: NormKernelParams,
        x: *const f32,
        coef: *const f32,
        y: *mut f32,
        packed: *mut u16,
    ) -> c_int;
    fn emu_norm_apply_tf32_pack(
        d: *const LaunchDims,
        p: NormKernelParams,
        x: *const f32,
        coef: *const f32,
        y: *mut f32,
        packed: *mut u32,
    ) -> c_int;
    fn emu_norm_backward_dx_bf16_pack(
        d: *const LaunchDims,
        p: NormKernelParams,
        x: *const f32,
        dy: *const f32,
        coef: *const f32,
        dx: *mut f32,
        packed: *mut u16,
    ) -> c_int;
    fn emu_norm_backward_dx_tf32_pack(
        d: *const LaunchDims,
        p: NormKernelParams,
        x: *const f32,
        dy: *const f32,
        coef: *const f32,
        dx: *mut f32,
        packed: *mut u32,
    ) -> c_int;
    fn emu_norm_backward_partial(
        d: *const LaunchDims,
        r: ReduceParams,
        p: NormKernelParams,
        x: *const f32,
        dy: *const f32,
        mean: *const f32,
        var: *const f32,
        gamma: *const f32,
        beta: *const f32,
        partial: *mut f64,
    ) -> c_int;
    fn emu_norm_backward_finish(
        d: *const LaunchDims,
        r: ReduceParams,
        p: NormKernelParams,
        grads: u32,
        partial: *const f64,
        mean: *const f32,
        var: *const f32,
        gamma: *const f32,
        beta: *const f32,
        coef: *mut f32,
        dgamma: *mut f32,
        dbeta: *mut f32,
    ) -> c_int;
    fn emu_norm_backward_dx(
        d: *const LaunchDims,
        p: NormKernelParams,
        x: *const f32,
        dy: *const f32,
        coef: *const f32,
        dx: *mut f32,
    ) -> c_int;
    fn emu_norm_update_moving(
        d: *const LaunchDims,
        p: NormMovingParams,
        moving: *mut f32,
        batch: *const f32,
    ) -> c_int;
}

fn check_params(p: &NormKernelParams) -> EmuResult {
    if p.cpg == 0 || !p.c.is_multiple_of(p.cpg) {
        return Err(format!("{p:?}: channels are not whole groups"));
    }
    Ok(())
}

/// The partial planes `[outer, splits, c]` of `r`, which must view `p`'s input.
fn partial_len(d: &LaunchDims, r: &ReduceParams, p: &NormKernelParams) -> Result<u64, String> {
    check_params(p)?;
    if (r.outer, r.mid, r.inner) != (p.outer, p.mid, p.c) || d.grid[1] > r.splits.max(1) {
        return Err(format!(
            "reduce view {r:?} with grid {:?} is not {p:?}",
            d.grid
        ));
    }
    Ok(2 * r.outer * r.splits as u64 * r.inner)
}

fn optional(what: &str, v: Option<&[f32]>, flag: u32, len: u64) -> Result<*const f32, String> {
    match v {
        Some(v) if flag != 0 => {
            need(what, v.len(), len)?;
            Ok(v.as_ptr())
        }
        None if flag == 0 => Ok(std::ptr::null()),
        _ => Err(format!("{what} given: {}, flag {flag}", v.is_some())),
    }
}

pub fn stats_partial(
    d: &LaunchDims,
    r: ReduceParams,
    p: NormKernelParams,
    x: &[f32],
    partial: &mut [f64],
) -> EmuResult {
    let np = partial_len(d, &r, &p)?;
    need("x", x.len(), p.numel() as u64)?;
    need("partial", partial.len(), np)?;
    // SAFETY: lengths checked against the params above.
    status(unsafe { emu_norm_stats_partial(d, r, p, x.as_ptr(), partial.as_mut_ptr()) })
}

pub fn stats_finish(
    d: &LaunchDims,
    r: ReduceParams,
    p: NormKernelParams,
    partial: &[f64],
    x: &[f32],
    mean: &mut [f32],
    var: &mut [f32],
) -> EmuResult {
    let np = partial_len(d, &r, &p)?;
    need("partial", partial.len(), np)?;
    need("x", x.len(), p.numel() as u64)?;
    need("mean", mean.len(), p.stats_len() as u64)?;
    need("var", var.len(), p.stats_len() as u64)?;
    // SAFETY: lengths checked against the params above.
    status(unsafe {
        emu_norm_stats_finish(
            d,
            r,
            p,
            partial.as_ptr(),
            x.as_ptr(),
            mean.as_mut_ptr(),
            var.as_mut_ptr(),
        )
    })
}

/// The statistics, gamma and beta that a norm's forward normalises with (and its backward
/// differentiates).
pub struct NormInputs<'a> {
    pub mean: &'a [f32],
    pub var: &'a [f32],
    pub gamma: Option<&'a [f32]>,
    pub beta: Option<&'a [f32]>,
}

impl NormInputs<'_> {
    /// Their pointers, an absent gamma or beta null (its flag is 0, so it is not read),
    /// once their lengths are checked.
    fn pointers(&self, p: &NormKernelParams) -> Result<[*const f32; 4], String> {
        need("mean", self.mean.len(), p.stats_len() as u64)?;
        need("var", self.var.len(), p.stats_len() as u64)?;
        Ok([
            self.mean.as_ptr(),
            self.var.as_ptr(),
            optional("gamma", self.gamma, p.has_gamma, p.c)?,
            optional("beta", self.beta, p.has_beta, p.c)?,
        ])
    }
}

pub fn affine(
    d: &LaunchDims,
    p: NormKernelParams,
    inputs: &NormInputs,
    coef: &mut [f32],
) -> EmuResult {
    check_params(&p)?;
    let [mean, var, gamma, beta] = inputs.pointers(&p)?;
    need("coef", coef.len(), 2 * p.pairs() as u64)?;
    // SAFETY: lengths checked against the params above; absent inputs are null and
    // their flags are 0, so the kernel does not read them.
    status(unsafe { emu_norm_affine(d, p, mean, var, gamma, beta, coef.as_mut_ptr()) })
}

/// The lengths `apply` and `apply_packed` need.
fn check_apply(p: &NormKernelParams, x: &[f32], coef: &[f32], y: &[f32]) -> EmuResult {
    check_params(p)?;
    need("x", x.len(), p.numel() as u64)?;
    need("coef", coef.len(), 2 * p.pairs() as u64)?;
    need("y", y.len(), p.numel() as u64)
}

/// The lengths `backward_dx` and `backward_dx_packed` need: x, dy and dx, and the
/// backward's coefficients (`backward_finish`'s).
fn check_dx(p: &NormKernelParams, elements: [&[f32]; 3], coef: &[f32]) -> EmuResult {
    check_params(p)?;
    for (what, v) in ["x", "dy", "dx"].into_iter().zip(elements) {
        need(what, v.len(), p.numel() as u64)?;
    }
    need("coef", coef.len(), coef_len(p))
}

/// Values of `backward_finish`'s coefficient planes.
fn coef_len(p: &NormKernelParams) -> u64 {
    (NORM_BACKWARD_COEF_PLANES * p.pairs()) as u64
}

pub fn apply(
    d: &LaunchDims,
    p: NormKernelParams,
    x: &[f32],
    coef: &[f32],
    y: &mut [f32],
) -> EmuResult {
    check_apply(&p, x, coef, y)?;
    // SAFETY: lengths checked against the params above.
    status(unsafe { emu_norm_apply(d, p, x.as_ptr(), coef.as_ptr(), y.as_mut_ptr()) })
}

/// That `pack` is the norm's (`norm_pack`), `packed` holds it in elements of its format, and
/// the f32 buffers the kernel reads and writes in 16-byte pieces and `packed` are 16-byte
/// aligned.
fn check_pack<E: Packed>(
    p: &NormKernelParams,
    pack: &ConvPack,
    packed: &[E],
    f32s: &[(&str, *const f32)],
) -> EmuResult {
    if norm_pack(p, pack.precision, 1).map(|k| (k.kind, k.params)) != Some((pack.kind, pack.params))
    {
        return Err(format!(
            "{pack:?} is not the pack of this norm's activations"
        ));
    }
    check_packed(pack, packed)?;
    f32s.iter().try_for_each(|&(what, at)| aligned16(what, at))
}

/// `apply`, writing y also as `pack` packs it (`u16` bf16 or `u32` tf32 elements).
pub fn apply_packed<E: Packed>(
    d: &LaunchDims,
    p: NormKernelParams,
    pack: &ConvPack,
    x: &[f32],
    coef: &[f32],
    y: &mut [f32],
    packed: &mut [E],
) -> EmuResult {
    check_apply(&p, x, coef, y)?;
    check_pack(&p, pack, packed, &[("x", x.as_ptr()), ("y", y.as_ptr())])?;
    let (x, coef, y, out) = (
        x.as_ptr(),
        coef.as_ptr(),
        y.as_mut_ptr(),
        packed.as_mut_ptr(),
    );
    // SAFETY: lengths, element size and alignment checked above.
    status(unsafe {
        match pack.precision {
            ConvPrecision::Tf32 => emu_norm_apply_tf32_pack(d, p, x, coef, y, out.cast()),
            _ => emu_norm_apply_bf16_pack(d, p, x, coef, y, out.cast()),
        }
    })
}

/// `backward_dx`, writing dx also as `pack` packs it (`u16` bf16 or `u32` tf32 elements).
#[allow(clippy::too_many_arguments)]
pub fn backward_dx_packed<E: Packed>(
    d: &LaunchDims,
    p: NormKernelParams,
    pack: &ConvPack,
    x: &[f32],
    dy: &[f32],
    coef: &[f32],
    dx: &mut [f32],
    packed: &mut [E],
) -> EmuResult {
    check_dx(&p, [x, dy, dx], coef)?;
    let f32s = [("x", x.as_ptr()), ("dy", dy.as_ptr()), ("dx", dx.as_ptr())];
    check_pack(&p, pack, packed, &f32s)?;
    let (x, dy, coef) = (x.as_ptr(), dy.as_ptr(), coef.as_ptr());
    let (dx, out) = (dx.as_mut_ptr(), packed.as_mut_ptr());
    // SAFETY: lengths, element size and alignment checked above.
    status(unsafe {
        match pack.precision {
            ConvPrecision::Tf32 => {
                emu_norm_backward_dx_tf32_pack(d, p, x, dy, coef, dx, out.cast())
            }
            _ => emu_norm_backward_dx_bf16_pack(d, p, x, dy, coef, dx, out.cast()),
        }
    })
}

pub fn backward_partial(
    d: &LaunchDims,
    r: ReduceParams,
    p: NormKernelParams,
    x: &[f32],
    dy: &[f32],
    inputs: &NormInputs,
    partial: &mut [f64],
) -> EmuResult {
    let np = partial_len(d, &r, &p)?;
    for (what, len) in [("x", x.len()), ("dy", dy.len())] {
        need(what, len, p.numel() as u64)?;
    }
    let [mean, var, gamma, beta] = inputs.pointers(&p)?;
    need("partial", partial.len(), np)?;
    // SAFETY: lengths checked against the params above; an absent gamma or beta is null
    // and its flag 0.
    status(unsafe {
        emu_norm_backward_partial(
            d,
            r,
            p,
            x.as_ptr(),
            dy.as_ptr(),
            mean,
            var,
            gamma,
            beta,
            partial.as_mut_ptr(),
        )
    })
}

/// What `backward_finish` writes: dx's coefficients, dgamma, dbeta, each where given.
pub struct NormFinishOutputs<'a> {
    pub coef: Option<&'a mut [f32]>,
    pub dgamma: Option<&'a mut [f32]>,
    pub dbeta: Option<&'a mut [f32]>,
}

fn output(what: &str, v: &mut Option<&mut [f32]>, len: u64) -> Result<*mut f32, String> {
    match v {
        Some(v) => {
            need(what, v.len(), len)?;
            Ok(v.as_mut_ptr())
        }
        None => Ok(std::ptr::null_mut()),
    }
}

/// `partial` may be None only with fixed statistics and neither dgamma nor dbeta (the
/// kernel does not read it then).
pub fn backward_finish(
    d: &LaunchDims,
    r: ReduceParams,
    p: NormKernelParams,
    partial: Option<&[f64]>,
    inputs: &NormInputs,
    mut outputs: NormFinishOutputs,
) -> EmuResult {
    let np = partial_len(d, &r, &p)?;
    let affine = outputs.dgamma.is_some() || outputs.dbeta.is_some();
    let partial = match partial {
        Some(v) => {
            need("partial", v.len(), np)?;
            v.as_ptr()
        }
        None if p.fixed_stats != 0 && !affine => std::ptr::null(),
        None => return Err("the partial sums are needed".into()),
    };
    let [mean, var, gamma, beta] = inputs.pointers(&p)?;
    let coef = output("coef", &mut outputs.coef, coef_len(&p))?;
    let dgamma = output("dgamma", &mut outputs.dgamma, p.c)?;
    let dbeta = output("dbeta", &mut outputs.dbeta, p.c)?;
    let grads = norm_grad_bits([!coef.is_null(), !dgamma.is_null(), !dbeta.is_null()]);
    // SAFETY: lengths checked against the params above; absent inputs and outputs are
    // null, and the flags and `grads` keep the kernel from touching them.
    status(unsafe {
        emu_norm_backward_finish(
            d, r, p, grads, partial, mean, var, gamma, beta, coef, dgamma, dbeta,
        )
    })
}

pub fn backward_dx(
    d: &LaunchDims,
    p: NormKernelParams,
    x: &[f32],
    dy: &[f32],
    coef: &[f32],
    dx: &mut [f32],
) -> EmuResult {
    check_dx(&p, [x, dy, dx], coef)?;
    // SAFETY: lengths checked against the params above.
    status(unsafe {
        emu_norm_backward_dx(
            d,
            p,
            x.as_ptr(),
            dy.as_ptr(),
            coef.as_ptr(),
            dx.as_mut_ptr(),
        )
    })
}

pub fn update_moving(
    d: &LaunchDims,
    p: NormMovingParams,
    moving: &mut [f32],
    batch: &[f32],
) -> EmuResult {
    need("moving", moving.len(), p.n)?;
    need("batch", batch.len(), p.n)?;
    // SAFETY: lengths checked against the params above.
    status(unsafe { emu_norm_update_moving(d, p, moving.as_mut_ptr(), batch.as_ptr()) })
}
