//! The CPU execution harness: kernels/*.cu compiled as host C++ by build.rs (with
//! kernels/emu/cuda_emu.h) and run here on host slices, one function per kernel. The
//! wrappers check that every slice is as long as the parameters say the kernel will index;
//! within that, memory safety rests on the kernels, which is what the harness tests check.
//! A launch that the harness rejects (bad dimensions, deadlock, misused shuffle) returns
//! the harness's message.
use super::params::{
    BinaryParams, BroadcastParams, LaunchDims, ReduceParams, UnaryParams, UniformParams,
};
use std::ffi::{c_char, c_int, c_longlong, c_void, CStr, CString};

extern "C" {
    fn emu_last_error() -> *const c_char;
    fn vx_param_layout(ty: *const c_char, field: *const c_char) -> c_longlong;
    fn vx_launch_constant(name: *const c_char) -> c_longlong;

    fn emu_unary_forward(d: *const LaunchDims, p: UnaryParams, x: *const f32, y: *mut f32)
        -> c_int;
    fn emu_unary_backward(
        d: *const LaunchDims,
        p: UnaryParams,
        x: *const f32,
        y: *const f32,
        dy: *const f32,
        dx: *mut f32,
    ) -> c_int;
    fn emu_binary_forward(
        d: *const LaunchDims,
        p: BinaryParams,
        a: *const f32,
        b: *const f32,
        out: *mut f32,
    ) -> c_int;
    fn emu_binary_backward_a(
        d: *const LaunchDims,
        p: BinaryParams,
        a: *const f32,
        b: *const f32,
        dy: *const f32,
        da: *mut f32,
    ) -> c_int;
    fn emu_binary_backward_b(
        d: *const LaunchDims,
        p: BinaryParams,
        a: *const f32,
        b: *const f32,
        dy: *const f32,
        db: *mut f32,
    ) -> c_int;
    fn emu_binary_backward_b_partial(
        d: *const LaunchDims,
        r: ReduceParams,
        p: BinaryParams,
        a: *const f32,
        b: *const f32,
        dy: *const f32,
        partial: *mut f64,
    ) -> c_int;
    fn emu_sum_axis1(d: *const LaunchDims, p: ReduceParams, x: *const f32, out: *mut f32) -> c_int;
    fn emu_sum_axis1_columns(
        d: *const LaunchDims,
        p: ReduceParams,
        x: *const f32,
        out: *mut f32,
    ) -> c_int;
    fn emu_sum_axis1_partial(
        d: *const LaunchDims,
        p: ReduceParams,
        x: *const f32,
        partial: *mut f64,
    ) -> c_int;
    fn emu_sum_axis1_finish(
        d: *const LaunchDims,
        p: ReduceParams,
        partial: *const f64,
        out: *mut f32,
    ) -> c_int;
    fn emu_broadcast_axis1(
        d: *const LaunchDims,
        p: BroadcastParams,
        x: *const f32,
        out: *mut f32,
    ) -> c_int;
    fn emu_uniform_fill(d: *const LaunchDims, p: UniformParams, out: *mut f32) -> c_int;

    fn emu_selftest_barrier(d: *const LaunchDims, out: *mut f32) -> c_int;
    fn emu_selftest_missing_barrier(d: *const LaunchDims, out: *mut f32, step: c_int) -> c_int;
    fn emu_selftest_shuffle(d: *const LaunchDims, out: *mut f32) -> c_int;
    fn emu_selftest_atomic(d: *const LaunchDims, out: *mut f32) -> c_int;
    fn emu_selftest_dynamic_shared(d: *const LaunchDims, out: *mut f32) -> c_int;
    fn emu_selftest_static_shared(d: *const LaunchDims, out: *mut f32) -> c_int;
    fn emu_selftest_deadlock(d: *const LaunchDims, out: *mut f32) -> c_int;
    fn emu_selftest_global_read(d: *const LaunchDims, src: *const f32, out: *mut f32) -> c_int;
    fn emu_allow_global_read(base: *const c_void, bytes: usize);
    fn emu_clear_global_reads();
    fn emu_set_deferred(reads: c_int, copies: c_int);
}

/// What asynchronous work the harness runs at the wait that retires it rather than when
/// issued (kernels/emu/cuda_emu.h, `EmuAsyncQueue`), in this OS thread's launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deferred {
    /// wgmma's operand reads and cp.async's copies (the default): shows stages refilled
    /// before the tensor cores are done with them, and most read before their copies land.
    ReadsAndCopies,
    /// cp.async's copies alone (wgmma reads when issued): shows a stage published to its
    /// readers before its copies' wait, which a late read could meet after the copy.
    Copies,
}

/// Sets what this thread's next launches defer; `Deferred::ReadsAndCopies` until set.
pub fn set_deferred(deferred: Deferred) {
    let reads = deferred == Deferred::ReadsAndCopies;
    // SAFETY: sets a thread-local flag of the harness.
    unsafe { emu_set_deferred(c_int::from(reads), 1) }
}

/// The global buffers this thread's launches may read through async copies while it lives;
/// the harness fails a launch whose async copy reads anywhere else (cuda_emu.h). The list is
/// the OS thread's, so a guard stays on its thread (not `Send`), and guards do not nest:
/// a new one replaces the list.
struct GlobalReads(std::marker::PhantomData<*const ()>);

impl GlobalReads {
    fn allow(buffers: &[(*const c_void, usize)]) -> Self {
        // SAFETY: the harness only records the ranges; it reads through them during the
        // launches of this guard's lifetime, which the callers' borrows outlive.
        unsafe {
            emu_clear_global_reads();
            for &(base, bytes) in buffers {
                emu_allow_global_read(base, bytes);
            }
        }
        GlobalReads(std::marker::PhantomData)
    }
}

impl Drop for GlobalReads {
    fn drop(&mut self) {
        // SAFETY: clears this thread's list; no pointer is read.
        unsafe { emu_clear_global_reads() }
    }
}

pub type EmuResult = Result<(), String>;

fn status(code: c_int) -> EmuResult {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: the harness returns a NUL-terminated string owned by this thread, valid
    // until its next launch on this thread.
    let msg = unsafe { CStr::from_ptr(emu_last_error()) };
    Err(msg.to_string_lossy().into_owned())
}

fn need(what: &str, have: usize, want: u64) -> EmuResult {
    if (have as u64) < want {
        return Err(format!(
            "{what}: {have} elements, the kernel reads or writes {want}"
        ));
    }
    Ok(())
}

/// Size of a params.h struct (`field` None) or the offset of one of its fields, as the C++
/// compiler lays them out; None for a name it does not know.
pub fn param_layout(ty: &str, field: Option<&str>) -> Option<usize> {
    let ty = CString::new(ty).ok()?;
    let field = field.map(CString::new).transpose().ok()?;
    let ptr = field.as_ref().map_or(std::ptr::null(), |f| f.as_ptr());
    // SAFETY: both pointers are NUL-terminated strings (or null) that outlive the call.
    let v = unsafe { vx_param_layout(ty.as_ptr(), ptr) };
    usize::try_from(v).ok()
}

/// A launch constant from params.h (`VX_CONV_BM`, ...); None for an unknown name.
pub fn launch_constant(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: a NUL-terminated string that outlives the call.
    let v = unsafe { vx_launch_constant(name.as_ptr()) };
    u32::try_from(v).ok()
}

pub fn unary_forward(d: &LaunchDims, p: UnaryParams, x: &[f32], y: &mut [f32]) -> EmuResult {
    need("x", x.len(), p.n)?;
    need("y", y.len(), p.n)?;
    // SAFETY: the slices cover the p.n elements the kernel indexes.
    status(unsafe { emu_unary_forward(d, p, x.as_ptr(), y.as_mut_ptr()) })
}

pub fn unary_backward(
    d: &LaunchDims,
    p: UnaryParams,
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> EmuResult {
    for (what, len) in [
        ("x", x.len()),
        ("y", y.len()),
        ("dy", dy.len()),
        ("dx", dx.len()),
    ] {
        need(what, len, p.n)?;
    }
    // SAFETY: the slices cover the p.n elements the kernel indexes.
    status(unsafe {
        emu_unary_backward(d, p, x.as_ptr(), y.as_ptr(), dy.as_ptr(), dx.as_mut_ptr())
    })
}

fn check_binary(p: &BinaryParams, a: usize, b: usize, dy: usize, out: u64, o: usize) -> EmuResult {
    if p.nb == 0 || !p.n.is_multiple_of(p.nb) {
        return Err(format!("b of {} elements does not tile {}", p.nb, p.n));
    }
    need("a", a, p.n)?;
    need("b", b, p.nb)?;
    need("dy", dy, p.n)?;
    need("out", o, out)
}

pub fn binary_forward(
    d: &LaunchDims,
    p: BinaryParams,
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
) -> EmuResult {
    check_binary(&p, a.len(), b.len(), a.len(), p.n, out.len())?;
    // SAFETY: lengths checked against the params above.
    status(unsafe { emu_binary_forward(d, p, a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) })
}

pub fn binary_backward_a(
    d: &LaunchDims,
    p: BinaryParams,
    a: &[f32],
    b: &[f32],
    dy: &[f32],
    da: &mut [f32],
) -> EmuResult {
    check_binary(&p, a.len(), b.len(), dy.len(), p.n, da.len())?;
    // SAFETY: lengths checked against the params above.
    status(unsafe {
        emu_binary_backward_a(d, p, a.as_ptr(), b.as_ptr(), dy.as_ptr(), da.as_mut_ptr())
    })
}

pub fn binary_backward_b(
    d: &LaunchDims,
    p: BinaryParams,
    a: &[f32],
    b: &[f32],
    dy: &[f32],
    db: &mut [f32],
) -> EmuResult {
    if p.nb != p.n {
        return Err("binary_backward_b is for an unbroadcast b".into());
    }
    check_binary(&p, a.len(), b.len(), dy.len(), p.n, db.len())?;
    // SAFETY: lengths checked against the params above.
    status(unsafe {
        emu_binary_backward_b(d, p, a.as_ptr(), b.as_ptr(), dy.as_ptr(), db.as_mut_ptr())
    })
}

fn check_reduce(p: &ReduceParams, input: usize, output: usize) -> EmuResult {
    need("input", input, p.outer * p.mid * p.inner)?;
    need("output", output, p.outer * p.splits as u64 * p.inner)
}

#[allow(clippy::too_many_arguments)]
pub fn binary_backward_b_partial(
    d: &LaunchDims,
    r: ReduceParams,
    p: BinaryParams,
    a: &[f32],
    b: &[f32],
    dy: &[f32],
    partial: &mut [f64],
) -> EmuResult {
    if r.outer != 1 || r.mid * r.inner != p.n || r.inner != p.nb {
        return Err(format!("reduce view {r:?} is not [1, n / nb, nb] of {p:?}"));
    }
    check_binary(&p, a.len(), b.len(), dy.len(), 0, 0)?;
    check_reduce(&r, a.len(), partial.len())?;
    // SAFETY: lengths checked against the params above.
    status(unsafe {
        emu_binary_backward_b_partial(
            d,
            r,
            p,
            a.as_ptr(),
            b.as_ptr(),
            dy.as_ptr(),
            partial.as_mut_ptr(),
        )
    })
}

pub fn sum_axis1(d: &LaunchDims, p: ReduceParams, x: &[f32], out: &mut [f32]) -> EmuResult {
    check_reduce(&p, x.len(), out.len())?;
    // SAFETY: lengths checked against the params above.
    status(unsafe { emu_sum_axis1(d, p, x.as_ptr(), out.as_mut_ptr()) })
}

pub fn sum_axis1_columns(d: &LaunchDims, p: ReduceParams, x: &[f32], out: &mut [f32]) -> EmuResult {
    check_reduce(&p, x.len(), out.len())?;
    // SAFETY: lengths checked against the params above.
    status(unsafe { emu_sum_axis1_columns(d, p, x.as_ptr(), out.as_mut_ptr()) })
}

pub fn sum_axis1_partial(
    d: &LaunchDims,
    p: ReduceParams,
    x: &[f32],
    partial: &mut [f64],
) -> EmuResult {
    check_reduce(&p, x.len(), partial.len())?;
    // SAFETY: lengths checked against the params above.
    status(unsafe { emu_sum_axis1_partial(d, p, x.as_ptr(), partial.as_mut_ptr()) })
}

pub fn sum_axis1_finish(
    d: &LaunchDims,
    p: ReduceParams,
    partial: &[f64],
    out: &mut [f32],
) -> EmuResult {
    check_reduce(&p, partial.len(), out.len())?;
    // SAFETY: lengths checked against the params above.
    status(unsafe { emu_sum_axis1_finish(d, p, partial.as_ptr(), out.as_mut_ptr()) })
}

pub fn broadcast_axis1(
    d: &LaunchDims,
    p: BroadcastParams,
    x: &[f32],
    out: &mut [f32],
) -> EmuResult {
    need("x", x.len(), p.outer * p.inner)?;
    need("out", out.len(), p.outer * p.mid * p.inner)?;
    // SAFETY: lengths checked against the params above.
    status(unsafe { emu_broadcast_axis1(d, p, x.as_ptr(), out.as_mut_ptr()) })
}

pub fn uniform_fill(d: &LaunchDims, p: UniformParams, out: &mut [f32]) -> EmuResult {
    need("out", out.len(), p.n)?;
    // SAFETY: the slice covers the p.n elements written.
    status(unsafe { emu_uniform_fill(d, p, out.as_mut_ptr()) })
}

/// The harness's own test kernels (kernels/emu/selftest.cpp); each writes to `out` as its
/// comment there says.
pub mod selftest {
    use super::*;

    fn threads(d: &LaunchDims) -> u64 {
        d.grid.iter().chain(&d.block).map(|&v| v as u64).product()
    }

    /// out[b * blockDim + t] = neighbour's t + 1, exchanged through a barrier.
    pub fn barrier(d: &LaunchDims, out: &mut [f32]) -> EmuResult {
        need("out", out.len(), threads(d))?;
        // SAFETY: one element per launched thread.
        status(unsafe { emu_selftest_barrier(d, out.as_mut_ptr()) })
    }
    /// The same exchange without the barrier, with neighbour `t + step`, per block.
    pub fn missing_barrier(d: &LaunchDims, step: i32, out: &mut [f32]) -> EmuResult {
        need("out", out.len(), threads(d))?;
        if d.block[0] > 1024 || d.block[1] * d.block[2] != 1 || d.grid[1] * d.grid[2] != 1 {
            return Err(format!(
                "{d:?}: one dimension, at most 1024 threads a block"
            ));
        }
        // SAFETY: one element per launched thread; shared memory holds 1024 floats.
        status(unsafe { emu_selftest_missing_barrier(d, out.as_mut_ptr(), step) })
    }
    /// Four values per thread from xor, down, butterfly and broadcast shuffles (one block).
    pub fn shuffle(d: &LaunchDims, out: &mut [f32]) -> EmuResult {
        need("out", out.len(), 4 * threads(d))?;
        // SAFETY: four elements per launched thread.
        status(unsafe { emu_selftest_shuffle(d, out.as_mut_ptr()) })
    }
    /// out[0] += 1 and out[1] += threadIdx.x from every thread.
    pub fn atomic(d: &LaunchDims, out: &mut [f32]) -> EmuResult {
        need("out", out.len(), 2)?;
        // SAFETY: two elements.
        status(unsafe { emu_selftest_atomic(d, out.as_mut_ptr()) })
    }
    /// Poisoned then exchanged dynamic shared memory (one block, shared_bytes >= 4 per thread).
    pub fn dynamic_shared(d: &LaunchDims, out: &mut [f32]) -> EmuResult {
        need("out", out.len(), 2 * threads(d))?;
        need(
            "shared floats",
            d.shared_bytes as usize / 4,
            d.block[0] as u64,
        )?;
        // SAFETY: two elements per thread; shared memory holds one float per thread.
        status(unsafe { emu_selftest_dynamic_shared(d, out.as_mut_ptr()) })
    }
    /// Poisoned, exchanged and helper-held static shared memory (at most 1024 threads a
    /// block, one dimension).
    pub fn static_shared(d: &LaunchDims, out: &mut [f32]) -> EmuResult {
        need("out", out.len(), 3 * threads(d))?;
        if d.block[0] > 1024 || d.block[1] * d.block[2] != 1 {
            return Err(format!(
                "block {:?}: one dimension of at most 1024",
                d.block
            ));
        }
        // SAFETY: three elements per thread; shared memory holds 1024 floats.
        status(unsafe { emu_selftest_static_shared(d, out.as_mut_ptr()) })
    }
    /// Shuffle and barrier in divergent code: must fail with a deadlock report.
    pub fn deadlock(d: &LaunchDims, out: &mut [f32]) -> EmuResult {
        need("out", out.len(), threads(d))?;
        // SAFETY: one element per launched thread.
        status(unsafe { emu_selftest_deadlock(d, out.as_mut_ptr()) })
    }
    /// out[4t..4t+4] = src[4t..4t+4] through async copies (one block), with only
    /// `src[..readable]` registered as readable (None: nothing registered). A copy outside
    /// the registered elements must fail the launch.
    pub fn global_read(
        d: &LaunchDims,
        src: &[f32],
        readable: Option<usize>,
        out: &mut [f32],
    ) -> EmuResult {
        need("src", src.len(), 4 * threads(d))?;
        need("out", out.len(), 4 * threads(d))?;
        let readable = readable.map(|n| &src[..n.min(src.len())]);
        let buffers: Vec<_> = readable
            .iter()
            .map(|r| (r.as_ptr().cast(), 4 * r.len()))
            .collect();
        let _reads = GlobalReads::allow(&buffers);
        // SAFETY: four elements per launched thread in both slices.
        status(unsafe { emu_selftest_global_read(d, src.as_ptr(), out.as_mut_ptr()) })
    }
}

pub mod bce;
pub mod confusion;
pub mod cross_entropy;
pub mod dice;
pub mod dropout;
pub mod matmul;
pub mod norm;
pub mod optim_step;
pub mod softmax;
/// The spatial kernels (pool, upsample, concat, pad, flip, ssim).
pub mod spatial;
/// The sliding-window stitching (kernels/stitch.cu).
pub mod stitch;
/// The convolution kernels (kernels/conv3d.cu, conv3d_pipe.cu, conv3d_wgmma.cu) and the
/// tensor-core probes.
pub mod conv {
    use super::{need, status, EmuResult, GlobalReads};
    use crate::backend::cuda::conv_plan::{
        wgmma_probe_depth, ConvBf16x3PackParams, ConvBorderBf16x3PackParams, ConvBorderPackParams,
        ConvChannelMajorPackParams, ConvPack, ConvPackArgs, ConvPackKind, ConvPackParams, ConvPlan,
        ConvPrecision, WgmmaLayout, CONV_WGMMA_THREADS, WGMMA_PROBE_SHARED_BYTES,
    };
    use crate::backend::cuda::conv_tma::{
        tma_params, TiledMap, TMA_L2_PROMOTION_128B, TMA_PROBE_MAX_BOX_BYTES,
        TMA_PROBE_SHARED_BYTES,
    };
    use crate::backend::cuda::params::{Conv3dParams, Conv3dTmaParams, LaunchDims, TensorMap};
    use std::ffi::{c_char, c_int, c_longlong, c_void, CString};

    extern "C" {
        fn emu_conv3d_f32(
            name: *const c_char,
            d: *const LaunchDims,
            p: Conv3dParams,
            a: *const f32,
            b: *const f32,
            bias: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_conv3d_wgmma(
            name: *const c_char,
            d: *const LaunchDims,
            p: Conv3dParams,
            a: *const c_void,
            b: *const c_void,
            bias: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_wgmma_probe_bf16_n128(
            d: *const LaunchDims,
            a: *const f32,
            b: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_wgmma_probe_bf16_n32(
            d: *const LaunchDims,
            a: *const f32,
            b: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_wgmma_probe_tf32_n32(
            d: *const LaunchDims,
            a: *const f32,
            b: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_wgmma_probe_bf16_n64(
            d: *const LaunchDims,
            a: *const f32,
            b: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_wgmma_probe_tf32_n128(
            d: *const LaunchDims,
            a: *const f32,
            b: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_wgmma_probe_tf32_n64(
            d: *const LaunchDims,
            a: *const f32,
            b: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_wgmma_probe_bf16_mn_n128(
            d: *const LaunchDims,
            a: *const f32,
            b: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_wgmma_probe_bf16_mn_n64(
            d: *const LaunchDims,
            a: *const f32,
            b: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_wgmma_probe_bf16_sw64_n128(
            d: *const LaunchDims,
            a: *const f32,
            b: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_wgmma_probe_bf16_sw64_n64(
            d: *const LaunchDims,
            a: *const f32,
            b: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_conv3d_tma(
            name: *const c_char,
            d: *const LaunchDims,
            p: *const Conv3dTmaParams,
            bias: *const f32,
            out: *mut f32,
        ) -> c_int;
        #[allow(clippy::too_many_arguments)] // cuTensorMapEncodeTiled's
        fn emu_tensor_map_encode_tiled(
            map: *mut TensorMap,
            data_type: c_int,
            rank: u32,
            address: *const c_void,
            dims: *const u64,
            strides: *const u64,
            box_dims: *const u32,
            element_strides: *const u32,
            interleave: c_int,
            swizzle: c_int,
            l2_promotion: c_int,
            oob_fill: c_int,
        ) -> c_int;
        #[allow(clippy::too_many_arguments)] // the kernel's
        fn emu_tma_probe(
            d: *const LaunchDims,
            map: *const TensorMap,
            c0: c_int,
            c1: c_int,
            c2: c_int,
            c3: c_int,
            c4: c_int,
            bytes: c_int,
            out: *mut u32,
        ) -> c_int;
        fn emu_conv3d_pipe(
            name: *const c_char,
            d: *const LaunchDims,
            p: Conv3dParams,
            a: *const c_void,
            b: *const c_void,
            bias: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_conv3d_halo(
            name: *const c_char,
            d: *const LaunchDims,
            p: Conv3dParams,
            a: *const c_void,
            b: *const c_void,
            bias: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_conv3d_halo_shared_bytes(name: *const c_char) -> c_longlong;
        fn emu_conv3d_phase(
            name: *const c_char,
            d: *const LaunchDims,
            p: Conv3dParams,
            a: *const c_void,
            b: *const c_void,
            bias: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_conv3d_phase_shared_bytes(name: *const c_char) -> c_longlong;
        fn emu_conv3d_pack_bordered_bf16(
            d: *const LaunchDims,
            p: ConvBorderPackParams,
            src: *const f32,
            dst: *mut c_void,
        ) -> c_int;
        fn emu_conv3d_pack_bordered_tf32(
            d: *const LaunchDims,
            p: ConvBorderPackParams,
            src: *const f32,
            dst: *mut c_void,
        ) -> c_int;
        fn emu_conv3d_pack_bordered_bf16x3(
            d: *const LaunchDims,
            p: ConvBorderBf16x3PackParams,
            src: *const f32,
            dst: *mut c_void,
        ) -> c_int;
        fn emu_conv3d_pack_rows_bf16x3(
            d: *const LaunchDims,
            p: ConvBf16x3PackParams,
            src: *const f32,
            dst: *mut c_void,
        ) -> c_int;
        fn emu_conv3d_pack_channel_major_tf32(
            d: *const LaunchDims,
            p: ConvChannelMajorPackParams,
            src: *const f32,
            dst: *mut c_void,
        ) -> c_int;
        fn emu_conv3d_pack_rows_bf16(
            d: *const LaunchDims,
            p: ConvPackParams,
            src: *const f32,
            dst: *mut c_void,
        ) -> c_int;
        fn emu_conv3d_pack_transposed_bf16(
            d: *const LaunchDims,
            p: ConvPackParams,
            src: *const f32,
            dst: *mut c_void,
        ) -> c_int;
        fn emu_conv3d_pack_rows_tf32(
            d: *const LaunchDims,
            p: ConvPackParams,
            src: *const f32,
            dst: *mut c_void,
        ) -> c_int;
        fn emu_conv3d_pack_transposed_tf32(
            d: *const LaunchDims,
            p: ConvPackParams,
            src: *const f32,
            dst: *mut c_void,
        ) -> c_int;
        fn emu_ldmatrix_probe(d: *const LaunchDims, src: *const u16, out: *mut u32) -> c_int;
        fn emu_fragment_probe_bf16(
            d: *const LaunchDims,
            a: *const u32,
            b: *const u32,
            out: *mut u32,
        ) -> c_int;
        fn emu_fragment_probe_tf32(
            d: *const LaunchDims,
            a: *const u32,
            b: *const u32,
            out: *mut u32,
        ) -> c_int;
        fn emu_mma_probe_tf32(
            d: *const LaunchDims,
            a: *const f32,
            b: *const f32,
            c: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_mma_probe_bf16(
            d: *const LaunchDims,
            a: *const f32,
            b: *const f32,
            c: *const f32,
            out: *mut f32,
        ) -> c_int;
        fn emu_tc_round_probe(
            d: *const LaunchDims,
            x: *const f32,
            n: c_int,
            tf32: *mut u32,
            bf16: *mut u32,
        ) -> c_int;
    }

    /// A packed operand element: bf16 bits (`u16`) or tf32 bits (`u32`).
    pub trait Packed: Copy {
        const BYTES: usize;
        /// A NaN of the format: what packed buffers start as, so that an element no pack
        /// wrote poisons the result.
        const NAN: Self;
    }
    impl Packed for u16 {
        const BYTES: usize = 2;
        const NAN: Self = 0xFFFF;
    }
    impl Packed for u32 {
        const BYTES: usize = 4;
        const NAN: Self = 0xFFFF_FFFF;
    }

    /// Runs the plan's pass: `a`, `b` and `bias` as `plan.operand_lens()` says (a bias
    /// only where the pass takes one), `out` of `plan.workspace_len()` elements. A
    /// tensor-core plan packs a and b first, into buffers filled with NaN beforehand.
    pub fn conv3d(
        plan: &ConvPlan,
        a: &[f32],
        b: &[f32],
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) -> EmuResult {
        let (na, nb, _) = plan.operand_lens();
        need("a", a.len(), na as u64)?;
        need("b", b.len(), nb as u64)?;
        match plan.kernel.precision {
            ConvPrecision::F32 => launch(
                plan,
                (a.as_ptr().cast(), 4 * na),
                (b.as_ptr().cast(), 4 * nb),
                bias,
                out,
            ),
            ConvPrecision::Tf32 => packed_pass::<u32>(plan, a, b, bias, out),
            ConvPrecision::Bf16 => packed_pass::<u16>(plan, a, b, bias, out),
        }
    }

    fn packed_pass<E: Packed>(
        plan: &ConvPlan,
        a: &[f32],
        b: &[f32],
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) -> EmuResult {
        let [pack_a, pack_b] = plan
            .packs
            .ok_or_else(|| format!("{:?} packs nothing", plan.kernel))?;
        let packed = |pack: &ConvPack, src: &[f32]| -> Result<Vec<E>, String> {
            let mut dst = vec![E::NAN; pack.packed_len()];
            conv3d_pack(pack, src, &mut dst)?;
            Ok(dst)
        };
        let (a, b) = (packed(&pack_a, a)?, packed(&pack_b, b)?);
        conv3d_packed(plan, &a, &b, bias, out)
    }

    /// Runs a tensor-core plan's kernel on operands already packed as `plan.packs` says.
    pub fn conv3d_packed<E: Packed>(
        plan: &ConvPlan,
        a: &[E],
        b: &[E],
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) -> EmuResult {
        let [pack_a, pack_b] = plan
            .packs
            .ok_or_else(|| format!("{:?} reads f32 operands", plan.kernel))?;
        if pack_a.element_bytes() != E::BYTES {
            return Err(format!(
                "{:?} reads {}-byte elements",
                plan.kernel,
                pack_a.element_bytes()
            ));
        }
        need("packed a", a.len(), pack_a.packed_len() as u64)?;
        need("packed b", b.len(), pack_b.packed_len() as u64)?;
        launch(
            plan,
            (a.as_ptr().cast(), pack_a.packed_len() * E::BYTES),
            (b.as_ptr().cast(), pack_b.packed_len() * E::BYTES),
            bias,
            out,
        )
    }

    /// Launches the plan's kernel on a and b (f32, or packed for a tensor-core plan), each
    /// with the bytes the plan makes it read, which the caller checked the slices hold.
    /// Those bytes are all the launch's async copies may read.
    fn launch(
        plan: &ConvPlan,
        (a, a_bytes): (*const u8, usize),
        (b, b_bytes): (*const u8, usize),
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) -> EmuResult {
        need("out", out.len(), plan.workspace_len() as u64)?;
        let bias = match (bias, plan.operand_lens().2) {
            (None, _) => std::ptr::null(),
            (Some(v), Some(n)) => {
                need("bias", v.len(), n as u64)?;
                v.as_ptr()
            }
            (Some(_), None) => return Err("this pass takes no bias".into()),
        };
        let name = plan
            .kernel
            .name()
            .ok_or_else(|| format!("no kernel for {:?}", plan.kernel))?;
        let c_name = CString::new(name).map_err(|e| e.to_string())?;
        let (name_ptr, dims, p, out_ptr) =
            (c_name.as_ptr(), &plan.dims, plan.params, out.as_mut_ptr());
        let _reads = GlobalReads::allow(&[(a.cast(), a_bytes), (b.cast(), b_bytes)]);
        if let Some((tiling, [a_map, b_map])) = plan.tma_maps() {
            let params = tma_params(
                &plan.params,
                &tiling,
                encode_tiled(&a_map, a)?,
                encode_tiled(&b_map, b)?,
            );
            // SAFETY: the maps describe the plan's packs of its operands, which a and b hold
            // (the callers checked their lengths); bias is the pass's or null (never read
            // then); out holds workspace_len.
            let code = unsafe { emu_conv3d_tma(name_ptr, dims, &params, bias, out_ptr) };
            if code == -2 {
                return Err(format!("the harness has no kernel {name}"));
            }
            return status(code);
        }
        // SAFETY: the slices behind a, b, bias and out cover what the params make the
        // kernel index (checked by the callers and above); a null bias is never read.
        let code = unsafe {
            match plan.kernel.module() {
                "conv3d" => emu_conv3d_f32(name_ptr, dims, p, a.cast(), b.cast(), bias, out_ptr),
                "conv3d_wgmma" => {
                    emu_conv3d_wgmma(name_ptr, dims, p, a.cast(), b.cast(), bias, out_ptr)
                }
                "conv3d_halo" => {
                    emu_conv3d_halo(name_ptr, dims, p, a.cast(), b.cast(), bias, out_ptr)
                }
                "conv3d_phase" => {
                    emu_conv3d_phase(name_ptr, dims, p, a.cast(), b.cast(), bias, out_ptr)
                }
                _ => emu_conv3d_pipe(name_ptr, dims, p, a.cast(), b.cast(), bias, out_ptr),
            }
        };
        if code == -2 {
            return Err(format!("the harness has no kernel {name}"));
        }
        status(code)
    }

    /// `map` over the packed operand at `at`, as the harness's twin of
    /// `cuTensorMapEncodeTiled` encodes it (the arguments the device launcher passes).
    pub fn encode_tiled(map: &TiledMap, at: *const u8) -> Result<TensorMap, String> {
        let mut encoded = TensorMap::default();
        // SAFETY: the arrays hold the rank's 5 dimensions (4 strides) and outlive the call,
        // which writes the 128-byte, 128-byte-aligned map.
        let code = unsafe {
            emu_tensor_map_encode_tiled(
                &mut encoded,
                map.data_type,
                5,
                at.cast(),
                map.dims.as_ptr(),
                map.strides.as_ptr(),
                map.box_dims.as_ptr(),
                map.element_strides.as_ptr(),
                0,
                map.swizzle,
                TMA_L2_PROMOTION_128B,
                0,
            )
        };
        if code != 0 {
            return Err(format!("the harness refused the tensor map {map:?}"));
        }
        Ok(encoded)
    }

    /// The shared-memory bytes (as 32-bit words, into `out`) that the harness's twin of the
    /// tensor memory accelerator's copy of the box of `map` over `data` at `coords` leaves
    /// (`Cuda::tma_probe` on a device).
    pub fn tma_probe(map: &TiledMap, data: &[u32], coords: [i32; 5], out: &mut [u32]) -> EmuResult {
        let bytes = map.box_bytes();
        need("data", data.len(), map.tensor_bytes().div_ceil(4))?;
        need("out", out.len(), bytes / 4)?;
        if bytes > TMA_PROBE_MAX_BOX_BYTES as u64 {
            return Err(format!("a box of {bytes} bytes: {map:?}"));
        }
        let encoded = encode_tiled(map, data.as_ptr().cast())?;
        let _reads = GlobalReads::allow(&[(data.as_ptr().cast(), data.len() * 4)]);
        let d = LaunchDims {
            shared_bytes: TMA_PROBE_SHARED_BYTES,
            ..LaunchDims::linear([1, 1, 1], 128)
        };
        let [c0, c1, c2, c3, c4] = coords;
        // SAFETY: the map describes data (its extent checked above), whose reads are
        // registered; out holds the box's words.
        status(unsafe {
            emu_tma_probe(
                &d,
                &encoded,
                c0,
                c1,
                c2,
                c3,
                c4,
                bytes as c_int,
                out.as_mut_ptr(),
            )
        })
    }

    /// The dynamic shared memory the halo kernel `name` (kernels/conv3d_halo.cu) uses, from
    /// its tile's own constants; None for no such kernel.
    pub fn halo_shared_bytes(name: &str) -> Option<u32> {
        let name = CString::new(name).ok()?;
        // SAFETY: a NUL-terminated string that outlives the call.
        let bytes = unsafe { emu_conv3d_halo_shared_bytes(name.as_ptr()) };
        u32::try_from(bytes).ok()
    }

    /// The dynamic shared memory the phase kernel `name` (kernels/conv3d_phase.cu) uses,
    /// from its tile's own constants; None for no such kernel.
    pub fn phase_shared_bytes(name: &str) -> Option<u32> {
        let name = CString::new(name).ok()?;
        // SAFETY: a NUL-terminated string that outlives the call.
        let bytes = unsafe { emu_conv3d_phase_shared_bytes(name.as_ptr()) };
        u32::try_from(bytes).ok()
    }

    /// The kernels access packed buffers in 16-byte chunks (a Vec's allocation is aligned
    /// so on the hosts the harness runs on; a sub-slice may not be).
    pub(super) fn aligned16<E>(what: &str, p: *const E) -> EmuResult {
        if !(p as usize).is_multiple_of(16) {
            return Err(format!("{what} is not 16-byte aligned"));
        }
        Ok(())
    }

    /// That `packed` holds `pack` (`packed_len` elements of its format, 16-byte aligned),
    /// for a kernel that writes it.
    pub(super) fn check_packed<E: Packed>(pack: &ConvPack, packed: &[E]) -> EmuResult {
        need("packed", packed.len(), pack.packed_len() as u64)?;
        if pack.element_bytes() != E::BYTES {
            return Err(format!(
                "{} writes {}-byte elements",
                pack.name(),
                pack.element_bytes()
            ));
        }
        aligned16("packed", packed.as_ptr())
    }

    /// Runs a pack kernel: `src` of `pack.source_len()` f32, `dst` of `pack.packed_len()`
    /// elements of the pack's format (`u16` bf16, `u32` tf32), 16-byte aligned.
    pub fn conv3d_pack<E: Packed>(pack: &ConvPack, src: &[f32], dst: &mut [E]) -> EmuResult {
        need("source", src.len(), pack.source_len() as u64)?;
        check_packed(pack, dst)?;
        let tf32 = pack.precision == ConvPrecision::Tf32;
        let (src, dst) = (src.as_ptr(), dst.as_mut_ptr().cast());
        let d = &pack.dims;
        // SAFETY: lengths and element size checked against the pack above, whose params
        // (each kind its own, `ConvPackArgs`) describe the source and packed buffer.
        status(unsafe {
            match pack.args() {
                ConvPackArgs::Bordered(p) if tf32 => emu_conv3d_pack_bordered_tf32(d, p, src, dst),
                ConvPackArgs::Bordered(p) => emu_conv3d_pack_bordered_bf16(d, p, src, dst),
                ConvPackArgs::BorderedBf16x3(p) => emu_conv3d_pack_bordered_bf16x3(d, p, src, dst),
                ConvPackArgs::ChannelMajor(p) => emu_conv3d_pack_channel_major_tf32(d, p, src, dst),
                ConvPackArgs::RowsBf16x3(p) => emu_conv3d_pack_rows_bf16x3(d, p, src, dst),
                ConvPackArgs::Rows(p) => {
                    let run = match (pack.kind == ConvPackKind::Transposed, tf32) {
                        (true, true) => emu_conv3d_pack_transposed_tf32,
                        (true, false) => emu_conv3d_pack_transposed_bf16,
                        (false, true) => emu_conv3d_pack_rows_tf32,
                        (false, false) => emu_conv3d_pack_rows_bf16,
                    };
                    run(d, p, src, dst)
                }
            }
        })
    }

    /// Each lane's 14 ldmatrix registers on `rows` (32 rows of 8 bf16, 16-byte aligned), as
    /// `Cuda::ldmatrix_probe` gives them on a device.
    pub fn ldmatrix_probe(rows: &[u16], out: &mut [u32]) -> EmuResult {
        need("rows", rows.len(), 256)?;
        need("out", out.len(), 32 * 14)?;
        aligned16("rows", rows.as_ptr())?;
        let d = LaunchDims::linear([1, 1, 1], 32);
        // SAFETY: lengths and alignment checked above.
        status(unsafe { emu_ldmatrix_probe(&d, rows.as_ptr(), out.as_mut_ptr()) })
    }

    /// The fragment registers of the main loops (`Cuda::fragment_probe` on a device): `a`
    /// and `b` 16 rows of 64 bytes as words, `out` 32 words per lane.
    pub fn fragment_probe(
        precision: ConvPrecision,
        a: &[u32],
        b: &[u32],
        out: &mut [u32],
    ) -> EmuResult {
        need("a", a.len(), 256)?;
        need("b", b.len(), 256)?;
        need("out", out.len(), 32 * 32)?;
        let run = match precision {
            ConvPrecision::Tf32 => emu_fragment_probe_tf32,
            ConvPrecision::Bf16 => emu_fragment_probe_bf16,
            ConvPrecision::F32 => return Err("f32 has no tensor-core tiles".into()),
        };
        let d = LaunchDims::linear([1, 1, 1], 32);
        // SAFETY: lengths checked above; the kernels read bf16 as pairs of a word.
        status(unsafe { run(&d, a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) })
    }

    /// `out = a b + c` through one emulated mma (`Cuda::mma_probe` on a device).
    pub fn mma_probe(
        precision: ConvPrecision,
        a: &[f32],
        b: &[f32],
        c: &[f32],
        out: &mut [f32],
    ) -> EmuResult {
        type Probe = unsafe extern "C" fn(
            *const LaunchDims,
            *const f32,
            *const f32,
            *const f32,
            *mut f32,
        ) -> c_int;
        let (k, run): (u64, Probe) = match precision {
            ConvPrecision::Tf32 => (8, emu_mma_probe_tf32),
            ConvPrecision::Bf16 => (16, emu_mma_probe_bf16),
            ConvPrecision::F32 => return Err("f32 has no tensor-core mma".into()),
        };
        need("a", a.len(), 16 * k)?;
        need("b", b.len(), k * 8)?;
        need("c", c.len(), 128)?;
        need("out", out.len(), 128)?;
        let d = LaunchDims::linear([1, 1, 1], 32);
        // SAFETY: lengths checked above.
        status(unsafe { run(&d, a.as_ptr(), b.as_ptr(), c.as_ptr(), out.as_mut_ptr()) })
    }

    /// `out` (128 x n) = `a` (128 x BK) `b` (n x BK)^T over one reduction step of the
    /// wgmma tiles (n = 128, 64 or, k-major, 32; BK = 64 bf16 or 32 tf32), k-major or (BF16
    /// only) mn-major, all row-major f32 (rounded by the kernel); `Cuda::wgmma_probe` on a device.
    pub fn wgmma_probe(
        precision: ConvPrecision,
        layout: WgmmaLayout,
        n: usize,
        a: &[f32],
        b: &[f32],
        out: &mut [f32],
    ) -> EmuResult {
        use WgmmaLayout::*;
        let run: WgmmaProbe = match (precision, layout, n) {
            (ConvPrecision::Bf16, KMajor, 128) => emu_wgmma_probe_bf16_n128,
            (ConvPrecision::Bf16, KMajor, 64) => emu_wgmma_probe_bf16_n64,
            (ConvPrecision::Bf16, KMajor, 32) => emu_wgmma_probe_bf16_n32,
            (ConvPrecision::Tf32, KMajor, 128) => emu_wgmma_probe_tf32_n128,
            (ConvPrecision::Tf32, KMajor, 64) => emu_wgmma_probe_tf32_n64,
            (ConvPrecision::Tf32, KMajor, 32) => emu_wgmma_probe_tf32_n32,
            (ConvPrecision::Bf16, MnMajor, 128) => emu_wgmma_probe_bf16_mn_n128,
            (ConvPrecision::Bf16, MnMajor, 64) => emu_wgmma_probe_bf16_mn_n64,
            (ConvPrecision::Bf16, KMajorSw64, 128) => emu_wgmma_probe_bf16_sw64_n128,
            (ConvPrecision::Bf16, KMajorSw64, 64) => emu_wgmma_probe_bf16_sw64_n64,
            _ => {
                return Err(format!(
                    "no {precision} wgmma probe with {n} columns ({layout:?})"
                ))
            }
        };
        let k = wgmma_probe_depth(precision) as u64;
        need("a", a.len(), 128 * k)?;
        need("b", b.len(), n as u64 * k)?;
        need("out", out.len(), 128 * n as u64)?;
        let d = LaunchDims {
            shared_bytes: WGMMA_PROBE_SHARED_BYTES,
            ..LaunchDims::linear([1, 1, 1], CONV_WGMMA_THREADS)
        };
        // SAFETY: lengths checked above.
        status(unsafe { run(&d, a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) })
    }

    type WgmmaProbe =
        unsafe extern "C" fn(*const LaunchDims, *const f32, *const f32, *mut f32) -> c_int;

    /// The conversion bits of each `x[i]` (`Cuda::tc_round_probe` on a device).
    pub fn tc_round_probe(x: &[f32], tf32: &mut [u32], bf16: &mut [u32]) -> EmuResult {
        let n = c_int::try_from(x.len()).map_err(|e| e.to_string())?;
        need("tf32", tf32.len(), x.len() as u64)?;
        need("bf16", bf16.len(), x.len() as u64)?;
        if n == 0 {
            return Ok(());
        }
        let d = LaunchDims::linear([(n as u32).div_ceil(256), 1, 1], 256);
        // SAFETY: n elements in each slice, checked above.
        status(unsafe {
            emu_tc_round_probe(&d, x.as_ptr(), n, tf32.as_mut_ptr(), bf16.as_mut_ptr())
        })
    }
}
