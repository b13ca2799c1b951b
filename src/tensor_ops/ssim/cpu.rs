use super::SsimWindowKernel;
use crate::backend::cpu::{par_rows_mut, CpuBackend};
use crate::backend::Element;
use crate::error::{Error, Result};

/// A tensor viewed as `[outer, len, inner]` for filtering along `len`.
#[derive(Clone, Copy)]
struct AxisView {
    outer: usize,
    len: usize,
    inner: usize,
}

/// `y[o, i, :] = sum_t taps[t] x[o, i + t, :]` for `i < len - k + 1`.
fn filter_axis<E: Element>(x: &[E], v: AxisView, taps: &[E]) -> Vec<E> {
    let out_len = v.len + 1 - taps.len();
    let mut y = vec![E::zero(); v.outer * out_len * v.inner];
    par_rows_mut(&mut y, v.inner, |row, yr| {
        let (o, i) = (row / out_len, row % out_len);
        for (t, &tap) in taps.iter().enumerate() {
            let start = (o * v.len + i + t) * v.inner;
            for (a, &b) in yr.iter_mut().zip(&x[start..start + v.inner]) {
                *a = *a + tap * b;
            }
        }
    });
    y
}

/// The adjoint of `filter_axis` for an input of view `v`:
/// `dx[o, j, :] = sum_t taps[t] dy[o, j - t, :]` over the `j - t` that exist.
fn filter_axis_adjoint<E: Element>(dy: &[E], v: AxisView, taps: &[E]) -> Vec<E> {
    let out_len = v.len + 1 - taps.len();
    let mut dx = vec![E::zero(); v.outer * v.len * v.inner];
    par_rows_mut(&mut dx, v.inner, |row, dr| {
        let (o, j) = (row / v.len, row % v.len);
        for (t, &tap) in taps.iter().enumerate() {
            if j < t || j - t >= out_len {
                continue;
            }
            let start = (o * out_len + j - t) * v.inner;
            for (a, &b) in dr.iter_mut().zip(&dy[start..start + v.inner]) {
                *a = *a + tap * b;
            }
        }
    });
    dx
}

/// The three axis views, in filtering order (W, then H, then D), of a tensor of `dims`
/// whose earlier-filtered axes already shrank by `k - 1`.
fn views(dims: [usize; 5], k: usize) -> [AxisView; 3] {
    let [n, d, h, w, c] = dims;
    let (hs, ws) = (h + 1 - k, w + 1 - k);
    [
        AxisView {
            outer: n * d * h,
            len: w,
            inner: c,
        },
        AxisView {
            outer: n * d,
            len: h,
            inner: ws * c,
        },
        AxisView {
            outer: n,
            len: d,
            inner: hs * ws * c,
        },
    ]
}

fn check(op: &str, len: usize, dims: [usize; 5], k: usize, input: bool) -> Result<()> {
    let fits = k > 0 && dims[1] >= k && dims[2] >= k && dims[3] >= k;
    let [n, d, h, w, c] = dims;
    let want = if !fits {
        None
    } else if input {
        Some(n * d * h * w * c)
    } else {
        Some(n * (d + 1 - k) * (h + 1 - k) * (w + 1 - k) * c)
    };
    if want != Some(len) {
        return Err(Error::shape(
            "window_filter",
            format!("{op}: {len} elements for input dims {dims:?} and {k} taps"),
        ));
    }
    Ok(())
}

impl<E: Element> SsimWindowKernel for CpuBackend<E> {
    fn window_filter_forward(&self, x: &Vec<E>, dims: [usize; 5], taps: &[f64]) -> Result<Vec<E>> {
        check("forward", x.len(), dims, taps.len(), true)?;
        let taps: Vec<E> = taps.iter().map(|&t| E::of(t)).collect();
        let [vw, vh, vd] = views(dims, taps.len());
        let y = filter_axis(x, vw, &taps);
        let y = filter_axis(&y, vh, &taps);
        Ok(filter_axis(&y, vd, &taps))
    }

    fn window_filter_backward(
        &self,
        dy: &Vec<E>,
        dims: [usize; 5],
        taps: &[f64],
    ) -> Result<Vec<E>> {
        check("backward", dy.len(), dims, taps.len(), false)?;
        let taps: Vec<E> = taps.iter().map(|&t| E::of(t)).collect();
        let [vw, vh, vd] = views(dims, taps.len());
        let g = filter_axis_adjoint(dy, vd, &taps);
        let g = filter_axis_adjoint(&g, vh, &taps);
        Ok(filter_axis_adjoint(&g, vw, &taps))
    }
}
