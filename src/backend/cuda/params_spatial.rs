//! Parameters of the spatial kernels (kernels/params_spatial.h): pooling, resampling,
//! channel ranges, padding, flips and the SSIM window filter. The geometry structs of
//! `tensor_ops` are `#[repr(C)]` and travel to the kernels as they are; the checks here
//! reject what the kernels cannot index (their arithmetic is 32-bit) or would read out of
//! bounds, for the device launchers and the harness alike.
pub(super) use crate::error::check_len as expect_len;
use crate::error::{Error, Result};
use crate::tensor_ops::concat::ChannelRange;
use crate::tensor_ops::flip::Flip3dGeometry;
use crate::tensor_ops::pad::Pad3dGeometry;
use crate::tensor_ops::pool::Pool3dGeometry;
use crate::tensor_ops::upsample::Resample3dGeometry;

/// Most taps of a window filter (`VX_WINDOW_MAX_TAPS`).
pub const WINDOW_MAX_TAPS: usize = 32;

/// `LinearTap` of params_spatial.h: output cell o of one axis interpolates between input
/// cells `i0` and `min(i0 + 1, n_in - 1)` with weights `w0` and `w1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinearTap {
    pub i0: u32,
    pub w0: f32,
    pub w1: f32,
}

/// f32 words per [`LinearTap`] (tables live in f32 device buffers).
pub const LINEAR_TAP_WORDS: usize = 3;

/// One pass of the separable window filter over a tensor viewed as `[outer, len, inner]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowAxisParams {
    pub outer: u32,
    pub len: u32,
    pub inner: u32,
    pub k: u32,
    pub taps: [f32; WINDOW_MAX_TAPS],
}

impl WindowAxisParams {
    /// The pass along `len` of `[outer, len, inner]` with `taps` (rounded to f32 as the
    /// CPU backend's f32 kernel rounds them).
    pub fn new(outer: usize, len: usize, inner: usize, taps: &[f64]) -> Result<Self> {
        let k = taps.len();
        if k == 0 || k > WINDOW_MAX_TAPS || k > len {
            return Err(Error::shape(
                "window_filter",
                format!(
                    "{k} taps along an axis of {len} (the CUDA kernel takes 1 to \
                     {WINDOW_MAX_TAPS}, at most the axis length)"
                ),
            ));
        }
        let fits = outer
            .checked_mul(len)
            .and_then(|v| v.checked_mul(inner))
            .is_some_and(|v| v <= u32::MAX as usize);
        if !fits {
            return Err(too_large(
                "window_filter",
                format!("[{outer}, {len}, {inner}]"),
            ));
        }
        let mut padded = [0.0; WINDOW_MAX_TAPS];
        for (p, &t) in padded.iter_mut().zip(taps) {
            *p = t as f32;
        }
        Ok(Self {
            outer: outer as u32,
            len: len as u32,
            inner: inner as u32,
            k: k as u32,
            taps: padded,
        })
    }
    /// Elements of the unfiltered view.
    pub fn input_len(&self) -> usize {
        self.outer as usize * self.len as usize * self.inner as usize
    }
    /// Elements after filtering (`len` shrinks by `k - 1`).
    pub fn output_len(&self) -> usize {
        self.outer as usize * (self.len + 1 - self.k) as usize * self.inner as usize
    }
}

/// The three passes of the window filter for an input of `dims` (NDHWC), in filtering
/// order W, H, D: each pass sees the axes filtered before it already shrunk by `k - 1`,
/// as the CPU backend views them.
pub fn window_passes(dims: [usize; 5], taps: &[f64]) -> Result<[WindowAxisParams; 3]> {
    let [n, d, h, w, c] = dims;
    let k = taps.len();
    if k == 0 || d < k || h < k || w < k {
        return Err(Error::shape(
            "window_filter",
            format!("a window of {k} taps does not fit inside the spatial axes of {dims:?}"),
        ));
    }
    let (hs, ws) = (h + 1 - k, w + 1 - k);
    let numel = dims.iter().try_fold(1usize, |acc, &v| acc.checked_mul(v));
    if numel.is_none_or(|v| v > u32::MAX as usize) {
        return Err(too_large("window_filter", format!("input {dims:?}")));
    }
    Ok([
        WindowAxisParams::new(n * d * h, w, c, taps)?,
        WindowAxisParams::new(n * d, h, ws * c, taps)?,
        WindowAxisParams::new(n, d, hs * ws * c, taps)?,
    ])
}

fn too_large(op: &'static str, what: String) -> Error {
    Error::shape(
        op,
        format!("{what} exceeds the CUDA kernels' 32-bit indices"),
    )
}

/// `batch * d * h * w * channels` when it and every factor fit the kernels' indices: the
/// element count below 2^32, each size within i32 (window starts are signed).
fn numel(op: &'static str, batch: usize, dhw: [usize; 3], channels: usize) -> Result<usize> {
    let n = dhw
        .iter()
        .try_fold(batch, |acc, &v| acc.checked_mul(v))
        .and_then(|v| v.checked_mul(channels))
        .filter(|&v| v <= u32::MAX as usize);
    let sizes_fit = dhw.iter().all(|&v| v <= i32::MAX as usize);
    match n {
        Some(n) if sizes_fit => Ok(n),
        _ => Err(too_large(
            op,
            format!(
                "a [{batch}, {}, {}, {}, {channels}] tensor",
                dhw[0], dhw[1], dhw[2]
            ),
        )),
    }
}

/// (input, output) element counts of a pooling geometry whose every window holds at least
/// one input cell, as `Pool3dSpec::geometry` makes them.
pub fn pool_counts(op: &'static str, g: &Pool3dGeometry) -> Result<(usize, usize)> {
    let inputs = numel(op, g.batch, g.input, g.channels)?;
    let outputs = numel(op, g.batch, g.output, g.channels)?;
    let windows_fit = (0..3).all(|a| {
        let (k, s, pad) = (g.kernel[a], g.stride[a], g.pad_before[a]);
        k > 0
            && s > 0
            && g.input[a] > 0
            && g.output[a] > 0
            && pad < k
            && (g.output[a] - 1)
                .checked_mul(s)
                .and_then(|v| v.checked_add(k))
                .is_some_and(|end| end <= i32::MAX as usize && end - k < g.input[a] + pad)
    });
    if !windows_fit {
        return Err(Error::shape(
            op,
            format!("{g:?}: a window holds no input cell or reaches past 32-bit indices"),
        ));
    }
    Ok((inputs, outputs))
}

/// (input, output) element counts of a resampling geometry with non-empty spatial axes.
pub fn resample_counts(op: &'static str, g: &Resample3dGeometry) -> Result<(usize, usize)> {
    if g.input.contains(&0) || g.output.contains(&0) {
        return Err(Error::shape(
            op,
            format!("cannot resample {:?} to {:?}", g.input, g.output),
        ));
    }
    Ok((
        numel(op, g.batch, g.input, g.channels)?,
        numel(op, g.batch, g.output, g.channels)?,
    ))
}

/// Per-axis factors of a nearest-neighbour geometry (output a whole multiple of input).
pub fn nearest_factors(g: &Resample3dGeometry) -> Result<[usize; 3]> {
    if (0..3).any(|a| g.input[a] == 0 || !g.output[a].is_multiple_of(g.input[a])) {
        return Err(Error::shape(
            "upsample_nearest3d",
            format!(
                "output size {:?} is not a whole multiple of input size {:?}",
                g.output, g.input
            ),
        ));
    }
    Ok([0, 1, 2].map(|a| g.output[a] / g.input[a]))
}

/// Entries of the trilinear tap table: one per output cell of D, H and W.
pub fn linear_taps_len(g: &Resample3dGeometry) -> usize {
    g.output.iter().sum()
}

/// (full, part) element counts of a channel range with `start <= end <= channels`.
pub fn channel_counts(op: &'static str, r: &ChannelRange) -> Result<(usize, usize)> {
    if r.start > r.end || r.end > r.channels {
        return Err(Error::shape(op, format!("{r:?} is not a channel range")));
    }
    let full = r
        .rows
        .checked_mul(r.channels)
        .filter(|&v| v <= u32::MAX as usize)
        .ok_or_else(|| too_large(op, format!("{r:?}")))?;
    Ok((full, r.rows * r.width()))
}

/// (input, output) element counts of a pad/crop geometry whose offsets fit i32.
pub fn pad_counts(g: &Pad3dGeometry) -> Result<(usize, usize)> {
    let op = "pad3d";
    if g.before.iter().any(|&b| i32::try_from(b).is_err()) {
        return Err(too_large(op, format!("padding {:?}", g.before)));
    }
    Ok((
        numel(op, g.batch, g.input, g.channels)?,
        numel(op, g.batch, g.output, g.channels)?,
    ))
}

/// Element count of a flip geometry.
pub fn flip_count(g: &Flip3dGeometry) -> Result<usize> {
    numel("flip3d", g.batch, g.dims, g.channels)
}

// SAFETY: plain #[repr(C)] data without pointers or padding (usize and i64 fields are the
// 64-bit integers of params_spatial.h on the 64-bit targets CUDA supports), passed by value
// as kernel arguments whose C++ types have the same layout (checked by
// tests/cuda_harness_ops_b.rs).
unsafe impl cudarc::driver::DeviceRepr for Pool3dGeometry {}
unsafe impl cudarc::driver::DeviceRepr for Resample3dGeometry {}
unsafe impl cudarc::driver::DeviceRepr for ChannelRange {}
unsafe impl cudarc::driver::DeviceRepr for Pad3dGeometry {}
unsafe impl cudarc::driver::DeviceRepr for Flip3dGeometry {}
unsafe impl cudarc::driver::DeviceRepr for WindowAxisParams {}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(
        input: usize,
        output: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Pool3dGeometry {
        Pool3dGeometry {
            batch: 1,
            channels: 2,
            input: [input, 3, 3],
            output: [output, 3, 3],
            kernel: [kernel, 1, 1],
            stride: [stride, 1, 1],
            pad_before: [pad, 0, 0],
        }
    }

    #[test]
    fn pool_windows_must_hold_a_cell() {
        // k 3, s 2, 'same' on 4: out 2, pad 0: windows [0, 3) and [2, 4).
        assert_eq!(pool_counts("p", &pool(4, 2, 3, 2, 0)).unwrap(), (72, 36));
        // A third window would start at cell 4, past the input.
        assert!(pool_counts("p", &pool(4, 3, 3, 2, 0)).is_err());
        // Padding as wide as the window leaves the first window empty.
        assert!(pool_counts("p", &pool(4, 2, 2, 2, 2)).is_err());
        assert!(pool_counts("p", &pool(4, 2, 3, 0, 0)).is_err());
    }

    #[test]
    fn sizes_past_32_bit_indices_are_errors() {
        let g = Flip3dGeometry {
            batch: 2,
            channels: 64,
            dims: [1024, 1024, 1024],
            mirror: [1, 0, 0],
        };
        let e = flip_count(&g).unwrap_err().to_string();
        assert!(e.contains("flip3d") && e.contains("32-bit"), "{e}");
        let pad = Pad3dGeometry {
            batch: 1,
            channels: 1,
            input: [2, 2, 2],
            output: [2, 2, 2],
            before: [0, 1 << 40, 0],
        };
        assert!(pad_counts(&pad).is_err());
        let r = ChannelRange {
            rows: 1 << 30,
            channels: 8,
            start: 0,
            end: 1,
        };
        assert!(channel_counts("slice_channels", &r).is_err());
    }

    #[test]
    fn window_params_round_taps_and_bound_their_count() {
        let p = WindowAxisParams::new(2, 5, 3, &[0.25, 0.5, 0.25]).unwrap();
        assert_eq!((p.input_len(), p.output_len()), (30, 18));
        assert_eq!(&p.taps[..4], &[0.25, 0.5, 0.25, 0.0]);
        assert!(WindowAxisParams::new(2, 5, 3, &[]).is_err());
        assert!(WindowAxisParams::new(2, 2, 3, &[1.0; 3]).is_err());
        assert!(WindowAxisParams::new(1, 64, 1, &[1.0; 33]).is_err());
    }
}
