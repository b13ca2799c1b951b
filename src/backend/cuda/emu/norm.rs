//! Harness entry points of kernels/norm.cu. Every wrapper checks that the slices cover
//! what the parameters make the kernel index, that the reduction view is the
//! normalisation's and that optional inputs match their flags.
use super::conv::{aligned16, check_packed, Packed};
use super::{need, status, EmuResult};
use crate::backend::cuda::conv_plan::{ConvPack, ConvPrecision};
use crate::backend::cuda::params::{LaunchDims, ReduceParams};
use crate::backend::cuda::params_norm::{norm_pack, NormKernelParams, NormMovingParams};
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
        affine: *const f32,
        dy: *const f32,
        coef: *const f32,
        dx: *mut f32,
        packed: *mut u16,
    ) -> c_int;
    fn emu_norm_backward_dx_tf32_pack(
        d: *const LaunchDims,
        p: NormKernelParams,
        x: *const f32,
        affine: *const f32,
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
        affine: *const f32,
        dy: *const f32,
        mean: *const f32,
        partial: *mut f64,
    ) -> c_int;
    fn emu_norm_backward_coef(
        d: *const LaunchDims,
        r: ReduceParams,
        p: NormKernelParams,
        partial: *const f64,
        mean: *const f32,
        var: *const f32,
        gamma: *const f32,
        coef: *mut f32,
    ) -> c_int;
    fn emu_norm_backward_affine(
        d: *const LaunchDims,
        r: ReduceParams,
        p: NormKernelParams,
        partial: *const f64,
        var: *const f32,
        beta: u32,
        out: *mut f32,
    ) -> c_int;
    fn emu_norm_backward_dx(
        d: *const LaunchDims,
        p: NormKernelParams,
        x: *const f32,
        affine: *const f32,
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

pub fn affine(
    d: &LaunchDims,
    p: NormKernelParams,
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    coef: &mut [f32],
) -> EmuResult {
    check_params(&p)?;
    need("mean", mean.len(), p.stats_len() as u64)?;
    need("var", var.len(), p.stats_len() as u64)?;
    let gamma = optional("gamma", gamma, p.has_gamma, p.c)?;
    let beta = optional("beta", beta, p.has_beta, p.c)?;
    need("coef", coef.len(), 2 * p.pairs() as u64)?;
    // SAFETY: lengths checked against the params above; absent inputs are null and
    // their flags are 0, so the kernel does not read them.
    status(unsafe {
        emu_norm_affine(
            d,
            p,
            mean.as_ptr(),
            var.as_ptr(),
            gamma,
            beta,
            coef.as_mut_ptr(),
        )
    })
}

/// The lengths `apply` and `apply_packed` need.
fn check_apply(p: &NormKernelParams, x: &[f32], coef: &[f32], y: &[f32]) -> EmuResult {
    check_params(p)?;
    need("x", x.len(), p.numel() as u64)?;
    need("coef", coef.len(), 2 * p.pairs() as u64)?;
    need("y", y.len(), p.numel() as u64)
}

/// The lengths `backward_dx` and `backward_dx_packed` need: x, dy and dx, the forward's
/// coefficients (`affine`'s output) and the backward's.
fn check_dx(
    p: &NormKernelParams,
    elements: [&[f32]; 3],
    affine: &[f32],
    coef: &[f32],
) -> EmuResult {
    check_params(p)?;
    for (what, v) in ["x", "dy", "dx"].into_iter().zip(elements) {
        need(what, v.len(), p.numel() as u64)?;
    }
    need("affine", affine.len(), 2 * p.pairs() as u64)?;
    need("coef", coef.len(), 4 * p.pairs() as u64)
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
    affine: &[f32],
    dy: &[f32],
    coef: &[f32],
    dx: &mut [f32],
    packed: &mut [E],
) -> EmuResult {
    check_dx(&p, [x, dy, dx], affine, coef)?;
    let f32s = [("x", x.as_ptr()), ("dy", dy.as_ptr()), ("dx", dx.as_ptr())];
    check_pack(&p, pack, packed, &f32s)?;
    let (x, affine, dy, coef) = (x.as_ptr(), affine.as_ptr(), dy.as_ptr(), coef.as_ptr());
    let (dx, out) = (dx.as_mut_ptr(), packed.as_mut_ptr());
    // SAFETY: lengths, element size and alignment checked above.
    status(unsafe {
        match pack.precision {
            ConvPrecision::Tf32 => {
                emu_norm_backward_dx_tf32_pack(d, p, x, affine, dy, coef, dx, out.cast())
            }
            _ => emu_norm_backward_dx_bf16_pack(d, p, x, affine, dy, coef, dx, out.cast()),
        }
    })
}

#[allow(clippy::too_many_arguments)]
pub fn backward_partial(
    d: &LaunchDims,
    r: ReduceParams,
    p: NormKernelParams,
    x: &[f32],
    affine: &[f32],
    dy: &[f32],
    mean: &[f32],
    partial: &mut [f64],
) -> EmuResult {
    let np = partial_len(d, &r, &p)?;
    for (what, len) in [("x", x.len()), ("dy", dy.len())] {
        need(what, len, p.numel() as u64)?;
    }
    need("affine", affine.len(), 2 * p.pairs() as u64)?;
    need("mean", mean.len(), p.stats_len() as u64)?;
    need("partial", partial.len(), np)?;
    // SAFETY: lengths checked against the params above.
    status(unsafe {
        emu_norm_backward_partial(
            d,
            r,
            p,
            x.as_ptr(),
            affine.as_ptr(),
            dy.as_ptr(),
            mean.as_ptr(),
            partial.as_mut_ptr(),
        )
    })
}

/// `partial` may be None only with fixed statistics (the kernel does not read it then).
#[allow(clippy::too_many_arguments)]
pub fn backward_coef(
    d: &LaunchDims,
    r: ReduceParams,
    p: NormKernelParams,
    partial: Option<&[f64]>,
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    coef: &mut [f32],
) -> EmuResult {
    let np = partial_len(d, &r, &p)?;
    let partial = match partial {
        Some(v) => {
            need("partial", v.len(), np)?;
            v.as_ptr()
        }
        None if p.fixed_stats != 0 => std::ptr::null(),
        None => return Err("the partial sums are needed without fixed statistics".into()),
    };
    need("mean", mean.len(), p.stats_len() as u64)?;
    need("var", var.len(), p.stats_len() as u64)?;
    let gamma = optional("gamma", gamma, p.has_gamma, p.c)?;
    need("coef", coef.len(), 4 * p.pairs() as u64)?;
    // SAFETY: lengths checked against the params above; an absent gamma or partial is not
    // read (flags).
    status(unsafe {
        emu_norm_backward_coef(
            d,
            r,
            p,
            partial,
            mean.as_ptr(),
            var.as_ptr(),
            gamma,
            coef.as_mut_ptr(),
        )
    })
}

/// dgamma into `out`, or dbeta with `beta`.
pub fn backward_affine(
    d: &LaunchDims,
    r: ReduceParams,
    p: NormKernelParams,
    partial: &[f64],
    var: &[f32],
    beta: bool,
    out: &mut [f32],
) -> EmuResult {
    let np = partial_len(d, &r, &p)?;
    need("partial", partial.len(), np)?;
    need("var", var.len(), p.stats_len() as u64)?;
    need("out", out.len(), p.c)?;
    // SAFETY: lengths checked against the params above.
    status(unsafe {
        emu_norm_backward_affine(
            d,
            r,
            p,
            partial.as_ptr(),
            var.as_ptr(),
            beta.into(),
            out.as_mut_ptr(),
        )
    })
}

pub fn backward_dx(
    d: &LaunchDims,
    p: NormKernelParams,
    x: &[f32],
    affine: &[f32],
    dy: &[f32],
    coef: &[f32],
    dx: &mut [f32],
) -> EmuResult {
    check_dx(&p, [x, dy, dx], affine, coef)?;
    // SAFETY: lengths checked against the params above.
    status(unsafe {
        emu_norm_backward_dx(
            d,
            p,
            x.as_ptr(),
            affine.as_ptr(),
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
