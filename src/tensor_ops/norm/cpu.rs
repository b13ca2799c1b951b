use super::{check_moving_lens, NormGrads, NormKernel, NormParams};
use crate::backend::cpu::{par_rows_mut, CpuBackend, PAR_CHUNK};
use crate::backend::Element;
use crate::error::Result;
use rayon::prelude::*;

/// Count, mean and sum of squared deviations of a set of values; two sets merge exactly
/// (Chan et al.), so partial results from threads combine without losing accuracy.
#[derive(Clone, Copy, Default)]
struct Moments {
    count: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    fn merge(self, o: Moments) -> Moments {
        if o.count == 0.0 {
            return self;
        }
        if self.count == 0.0 {
            return o;
        }
        let count = self.count + o.count;
        let delta = o.mean - self.mean;
        Moments {
            count,
            mean: self.mean + delta * o.count / count,
            m2: self.m2 + o.m2 + delta * delta * self.count * o.count / count,
        }
    }
}

/// The work split: `x` is `[n, spatial, c]`; one task covers `rows` voxels of one example.
struct Tasks {
    rows: usize,
    per_example: usize,
}

impl Tasks {
    fn new(p: &NormParams) -> Self {
        let rows = (PAR_CHUNK / p.c.max(1)).max(1);
        Self {
            rows,
            per_example: p.spatial.div_ceil(rows),
        }
    }
    fn count(&self, p: &NormParams) -> usize {
        p.n * self.per_example
    }
    /// The example of task `t` and its element range in `x`.
    fn range(&self, t: usize, p: &NormParams) -> (usize, std::ops::Range<usize>) {
        let ex = t / self.per_example;
        let first = (t % self.per_example) * self.rows;
        let last = (first + self.rows).min(p.spatial);
        let base = ex * p.spatial * p.c;
        (ex, base + first * p.c..base + last * p.c)
    }
}

/// `1 / sqrt(var + eps)` for every statistic.
fn inv_std<E: Element>(var: &[E], eps: f64) -> Vec<f64> {
    var.iter()
        .map(|v| 1.0 / (v.as_f64() + eps).sqrt())
        .collect()
}

/// Fills `out` row by row (`c` values per voxel), threaded by chunks of rows:
/// `f(example, index of the row's first element, output row)`.
fn map_rows<E: Element>(out: &mut [E], p: &NormParams, f: impl Fn(usize, usize, &mut [E]) + Sync) {
    par_rows_mut(out, p.c, |row, orow| f(row / p.spatial, row * p.c, orow));
}

/// The forward's coefficients, `y = act(x * a + b)`, per (example, channel): `a` in the
/// first `n * c` values, `b` in the rest. The backward computes them again, the same way,
/// for the activation's slope.
fn affine_coefficients<E: Element>(
    mean: &[E],
    var: &[E],
    gamma: Option<&Vec<E>>,
    beta: Option<&Vec<E>>,
    p: &NormParams,
) -> Vec<E> {
    let rstd = inv_std(var, p.eps);
    let pairs = p.n * p.c;
    let mut ab = vec![E::zero(); 2 * pairs];
    for ex in 0..p.n {
        for ch in 0..p.c {
            let s = p.stat_index(ex, ch);
            let g = gamma.map_or(1.0, |g| g[ch].as_f64());
            let scale = g * rstd[s];
            ab[ex * p.c + ch] = E::of(scale);
            ab[pairs + ex * p.c + ch] =
                E::of(beta.map_or(0.0, |b| b[ch].as_f64()) - mean[s].as_f64() * scale);
        }
    }
    ab
}

/// The pre-activation `x * a + b`: one expression for the forward and the backward, so
/// that the backward's slope is the one the forward applied.
#[inline(always)]
fn pre_activation<E: Element>(x: E, a: E, b: E) -> E {
    x * a + b
}

/// The activation's slope at pre-activation `z` (slope >= 0, so y > 0 exactly where z > 0).
#[inline(always)]
fn slope_at<E: Element>(z: E, slope: E) -> E {
    if z > E::zero() {
        E::one()
    } else {
        slope
    }
}

/// `y = leaky(x * a + b)` over one row. A function of its own: its slices are known not to
/// overlap, the slope is a value, and the select has no branch, so the loop vectorises.
#[inline(always)]
fn affine_leaky<E: Element>(y: &mut [E], x: &[E], a: &[E], b: &[E], slope: E) {
    for (((o, &v), &a), &b) in y.iter_mut().zip(x).zip(a).zip(b) {
        let z = pre_activation(v, a, b);
        *o = z * slope_at(z, slope);
    }
}

/// One row's share of the backward sums: `sum_dz += dz` and `sum_dz_x += dz (x - mean)`,
/// where dz is the gradient at the pre-activation `x * a + b`.
#[inline(always)]
fn sum_gradient_row<E: Element>(
    sum_dz: &mut [f64],
    sum_dz_x: &mut [f64],
    x: &[E],
    (a, b): (&[E], &[E]),
    dy: &[E],
    mean: &[f64],
    slope: E,
) {
    let c = sum_dz.len();
    let (sum_dz_x, x, dy, mean) = (&mut sum_dz_x[..c], &x[..c], &dy[..c], &mean[..c]);
    let (a, b) = (&a[..c], &b[..c]);
    for ch in 0..c {
        let z = pre_activation(x[ch], a[ch], b[ch]);
        let g = (dy[ch] * slope_at(z, slope)).as_f64();
        sum_dz[ch] += g;
        sum_dz_x[ch] += g * (x[ch].as_f64() - mean[ch]);
    }
}

/// dx = dz k.dz + (x - k.mean) k.centred + k.constant, per (example, channel).
struct DxCoefficients<E> {
    dz: Vec<E>,
    centred: Vec<E>,
    constant: Vec<E>,
    mean: Vec<E>,
}

impl<E: Element> DxCoefficients<E> {
    /// One row of dx; `(a, b)` are the forward's coefficients of the row's example.
    #[inline(always)]
    fn row(&self, ex: usize, out: &mut [E], x: &[E], (a, b): (&[E], &[E]), dy: &[E], slope: E) {
        let c = out.len();
        let at = ex * c..(ex + 1) * c;
        let (kd, kc, k0, mu) = (
            &self.dz[at.clone()],
            &self.centred[at.clone()],
            &self.constant[at.clone()],
            &self.mean[at],
        );
        let (x, dy, a, b) = (&x[..c], &dy[..c], &a[..c], &b[..c]);
        for i in 0..c {
            let dz = dy[i] * slope_at(pre_activation(x[i], a[i], b[i]), slope);
            out[i] = kd[i] * dz + kc[i] * (x[i] - mu[i]) + k0[i];
        }
    }
}

impl<E: Element> NormKernel for CpuBackend<E> {
    fn norm_stats(&self, x: &Vec<E>, p: &NormParams) -> Result<(Vec<E>, Vec<E>)> {
        p.validate()?;
        p.check_len("x", x.len(), p.numel())?;
        let tasks = Tasks::new(p);
        let c = p.c;
        // Per task and channel: a two-pass mean and spread over the task's rows, which are
        // in cache for the second pass.
        let partial: Vec<Vec<Moments>> = (0..tasks.count(p))
            .into_par_iter()
            .map(|t| {
                let (_, range) = tasks.range(t, p);
                let xs = &x[range];
                let count = (xs.len() / c) as f64;
                let mut sum = vec![0.0f64; c];
                for row in xs.chunks_exact(c) {
                    for (s, v) in sum.iter_mut().zip(row) {
                        *s += v.as_f64();
                    }
                }
                let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
                let mut m2 = vec![0.0f64; c];
                for row in xs.chunks_exact(c) {
                    for ((m, mu), v) in m2.iter_mut().zip(&mean).zip(row) {
                        let d = v.as_f64() - mu;
                        *m += d * d;
                    }
                }
                mean.into_iter()
                    .zip(m2)
                    .map(|(mean, m2)| Moments { count, mean, m2 })
                    .collect()
            })
            .collect();
        let mut stats = vec![Moments::default(); p.stats_len()];
        for (t, moments) in partial.into_iter().enumerate() {
            let ex = t / tasks.per_example;
            for (ch, m) in moments.into_iter().enumerate() {
                let s = p.stat_index(ex, ch);
                stats[s] = stats[s].merge(m);
            }
        }
        let mean = stats.iter().map(|m| E::of(m.mean)).collect();
        let var = stats.iter().map(|m| E::of(m.m2 / m.count)).collect();
        Ok((mean, var))
    }

    fn norm_forward(
        &self,
        x: &Vec<E>,
        mean: &Vec<E>,
        var: &Vec<E>,
        gamma: Option<&Vec<E>>,
        beta: Option<&Vec<E>>,
        p: &NormParams,
    ) -> Result<Vec<E>> {
        let affine = [gamma.map(|g| g.len()), beta.map(|b| b.len())];
        p.check_lens(&[("x", x.len())], mean.len(), var.len(), affine)?;
        let ab = affine_coefficients(mean, var, gamma, beta, p);
        let (a, b) = ab.split_at(p.n * p.c);
        let slope = E::of(p.neg_slope);
        let mut y = vec![E::zero(); x.len()];
        map_rows(&mut y, p, |ex, at, yrow| {
            let c = yrow.len();
            affine_leaky(
                yrow,
                &x[at..at + c],
                &a[ex * c..][..c],
                &b[ex * c..][..c],
                slope,
            );
        });
        Ok(y)
    }

    fn norm_backward(
        &self,
        x: &Vec<E>,
        dy: &Vec<E>,
        mean: &Vec<E>,
        var: &Vec<E>,
        gamma: Option<&Vec<E>>,
        beta: Option<&Vec<E>>,
        p: &NormParams,
        needs: [bool; 3],
    ) -> Result<NormGrads<Vec<E>>> {
        let elements = [("x", x.len()), ("dy", dy.len())];
        let affine = [gamma.map(|g| g.len()), beta.map(|b| b.len())];
        p.check_lens(&elements, mean.len(), var.len(), affine)?;
        let c = p.c;
        let rstd = inv_std(var, p.eps);
        let ab = affine_coefficients(mean, var, gamma, beta, p);
        let (a, b) = ab.split_at(p.n * c);
        let coefficients = |ex: usize| (&a[ex * c..][..c], &b[ex * c..][..c]);
        let slope = E::of(p.neg_slope);
        let gamma_at = |ch: usize| gamma.map_or(1.0, |g| g[ch].as_f64());

        // Pass 1, per (example, channel): sum of dz and of dz * xhat.
        let mut sdz = vec![0.0f64; p.n * c];
        let mut sdzx = vec![0.0f64; p.n * c];
        if !p.fixed_stats || needs[1] || needs[2] {
            let tasks = Tasks::new(p);
            let partial: Vec<Vec<f64>> = (0..tasks.count(p))
                .into_par_iter()
                .map(|t| {
                    let (ex, range) = tasks.range(t, p);
                    let stat: Vec<usize> = (0..c).map(|ch| p.stat_index(ex, ch)).collect();
                    let mu: Vec<f64> = stat.iter().map(|&s| mean[s].as_f64()).collect();
                    let r: Vec<f64> = stat.iter().map(|&s| rstd[s]).collect();
                    let mut acc = vec![0.0f64; 2 * c];
                    let (sum_dz, sum_dz_xhat) = acc.split_at_mut(c);
                    let (xs, dys) = (&x[range.clone()], &dy[range]);
                    for (xr, dyr) in xs.chunks_exact(c).zip(dys.chunks_exact(c)) {
                        let ab = coefficients(ex);
                        sum_gradient_row(sum_dz, sum_dz_xhat, xr, ab, dyr, &mu, slope);
                    }
                    // sum dz xhat = rstd * sum dz (x - mean)
                    for (s, r) in sum_dz_xhat.iter_mut().zip(&r) {
                        *s *= r;
                    }
                    acc
                })
                .collect();
            for (t, acc) in partial.into_iter().enumerate() {
                let ex = t / tasks.per_example;
                for ch in 0..c {
                    sdz[ex * c + ch] += acc[ch];
                    sdzx[ex * c + ch] += acc[c + ch];
                }
            }
        }
        let per_channel = |sums: &[f64]| -> Vec<E> {
            (0..c)
                .map(|ch| E::of((0..p.n).map(|ex| sums[ex * c + ch]).sum()))
                .collect()
        };
        let dgamma = needs[1].then(|| per_channel(&sdzx));
        let dbeta = needs[2].then(|| per_channel(&sdz));

        let dx = needs[0].then(|| {
            // Per statistic: sums over its elements of dxhat = gamma * dz and of dxhat * xhat.
            let mut sum_dxhat = vec![0.0f64; p.stats_len()];
            let mut sum_dxhat_xhat = vec![0.0f64; p.stats_len()];
            if !p.fixed_stats {
                for ex in 0..p.n {
                    for ch in 0..c {
                        let s = p.stat_index(ex, ch);
                        sum_dxhat[s] += gamma_at(ch) * sdz[ex * c + ch];
                        sum_dxhat_xhat[s] += gamma_at(ch) * sdzx[ex * c + ch];
                    }
                }
            }
            // dx = rstd * (gamma dz - mean(dxhat) - xhat mean(dxhat xhat))
            //    = k1 dz + k2 (x - mean) + k3, per (example, channel).
            let m = p.stats_count() as f64;
            let mut k = DxCoefficients {
                dz: vec![E::zero(); p.n * c],
                centred: vec![E::zero(); p.n * c],
                constant: vec![E::zero(); p.n * c],
                mean: vec![E::zero(); p.n * c],
            };
            for ex in 0..p.n {
                for ch in 0..c {
                    let s = p.stat_index(ex, ch);
                    let r = rstd[s];
                    let at = ex * c + ch;
                    k.dz[at] = E::of(r * gamma_at(ch));
                    k.centred[at] = E::of(-r * r * sum_dxhat_xhat[s] / m);
                    k.constant[at] = E::of(-r * sum_dxhat[s] / m);
                    k.mean[at] = mean[s];
                }
            }
            let mut dx = vec![E::zero(); x.len()];
            map_rows(&mut dx, p, |ex, at, out| {
                let row = at..at + out.len();
                k.row(ex, out, &x[row.clone()], coefficients(ex), &dy[row], slope);
            });
            dx
        });
        Ok(NormGrads { dx, dgamma, dbeta })
    }

    fn norm_update_moving(
        &self,
        moving: &mut Vec<E>,
        batch: &Vec<E>,
        momentum: f64,
        correction: f64,
    ) -> Result<()> {
        check_moving_lens(moving.len(), batch.len())?;
        for (m, b) in moving.iter_mut().zip(batch) {
            *m = E::of(momentum * m.as_f64() + (1.0 - momentum) * correction * b.as_f64());
        }
        Ok(())
    }
}
