//! 3D structural similarity (Wang et al. 2004) as a loss for reconstruction tasks:
//! local means, variances and covariance from a window filter over each channel.
use super::check_finite;
use crate::autograd::Var;
use crate::backend::Backend;
use crate::error::{Error, Result};

/// The local window, the same along depth, height and width.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SsimWindow {
    /// `size^3` voxels weighted equally.
    Uniform { size: usize },
    /// `size^3` voxels weighted by a Gaussian of standard deviation `sigma` voxels.
    Gaussian { size: usize, sigma: f64 },
}

impl SsimWindow {
    /// The normalised 1D taps whose outer product is the window.
    pub fn taps(&self) -> Result<Vec<f64>> {
        let (size, weights): (usize, Box<dyn Fn(f64) -> f64>) = match *self {
            SsimWindow::Uniform { size } => (size, Box::new(|_| 1.0)),
            SsimWindow::Gaussian { size, sigma } => {
                if !(sigma > 0.0 && sigma.is_finite()) {
                    return Err(Error::config(
                        "loss.window.sigma",
                        format!("{sigma} must be positive"),
                    ));
                }
                (
                    size,
                    Box::new(move |d: f64| (-d * d / (2.0 * sigma * sigma)).exp()),
                )
            }
        };
        if size == 0 {
            return Err(Error::config("loss.window.size", "must be at least 1"));
        }
        let centre = (size as f64 - 1.0) / 2.0;
        let raw: Vec<f64> = (0..size).map(|i| weights(i as f64 - centre)).collect();
        let total: f64 = raw.iter().sum();
        Ok(raw.into_iter().map(|w| w / total).collect())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SsimOptions {
    /// L, the value range of the data (max - min); sets C1 = (k1 L)^2 and C2 = (k2 L)^2.
    pub data_range: f64,
    /// Default: Gaussian, 7 voxels, sigma 1.5 (Wang et al. use 11 in 2D; 7^3 keeps more
    /// of a 3D patch inside the 'valid' window positions).
    pub window: SsimWindow,
    pub k1: f64,
    pub k2: f64,
}

impl Default for SsimOptions {
    fn default() -> Self {
        Self {
            data_range: 1.0,
            window: SsimWindow::Gaussian {
                size: 7,
                sigma: 1.5,
            },
            k1: 0.01,
            k2: 0.03,
        }
    }
}

impl SsimOptions {
    /// Refuses options no SSIM can be computed with, naming the config key at fault
    /// (`loss.data_range`, `loss.window.size`, ...).
    pub fn validate(&self) -> Result<()> {
        self.checked_taps().map(drop)
    }

    /// The window's taps, once every option is checked (`validate`).
    fn checked_taps(&self) -> Result<Vec<f64>> {
        if !(self.data_range > 0.0 && self.data_range.is_finite()) {
            return Err(Error::config(
                "loss.data_range",
                format!("{} must be positive", self.data_range),
            ));
        }
        for (key, k) in [("loss.k1", self.k1), ("loss.k2", self.k2)] {
            if !(k >= 0.0 && k.is_finite()) {
                return Err(Error::config(key, format!("{k} must be 0 or more")));
            }
        }
        self.window.taps()
    }

    /// The window's taps along an axis.
    pub fn window_size(&self) -> usize {
        match self.window {
            SsimWindow::Uniform { size } | SsimWindow::Gaussian { size, .. } => size,
        }
    }
}

/// `1 - mean SSIM` over every window position that lies inside the volume ('valid'),
/// every channel and every sample of NDHWC `x` and `y` (same shape). Local statistics are
/// window-weighted population moments (no n-1 correction). 0 for identical inputs.
pub fn ssim3d<B: Backend>(x: &Var<B>, y: &Var<B>, opts: &SsimOptions) -> Result<Var<B>> {
    x.shape().expect_eq(y.shape(), "ssim3d")?;
    let taps = opts.checked_taps()?;
    let c1 = (opts.k1 * opts.data_range).powi(2);
    let c2 = (opts.k2 * opts.data_range).powi(2);
    let mean_x = x.window_filter(&taps)?;
    let mean_y = y.window_filter(&taps)?;
    let mx2 = mean_x.square()?;
    let my2 = mean_y.square()?;
    let mxy = mean_x.mul(&mean_y)?;
    let var_x = x.square()?.window_filter(&taps)?.sub(&mx2)?;
    let var_y = y.square()?.window_filter(&taps)?.sub(&my2)?;
    let cov = x.mul(y)?.window_filter(&taps)?.sub(&mxy)?;
    let luminance = mxy
        .scale(2.0)?
        .add_scalar(c1)?
        .div(&mx2.add(&my2)?.add_scalar(c1)?)?;
    let structure = cov
        .scale(2.0)?
        .add_scalar(c2)?
        .div(&var_x.add(&var_y)?.add_scalar(c2)?)?;
    let ssim = luminance.mul(&structure)?.mean()?;
    check_finite("ssim3d", ssim.scale(-1.0)?.add_scalar(1.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::Cpu64;
    use crate::tensor::Tensor;

    fn volume(dims: [usize; 5], phase: f64) -> Tensor<Cpu64> {
        let n: usize = dims.iter().product();
        let data: Vec<f64> = (0..n)
            .map(|i| 0.5 + 0.4 * (i as f64 * 0.37 + phase).sin())
            .collect();
        Tensor::from_host(&Cpu64::new(), dims, &data).unwrap()
    }

    #[test]
    fn identical_inputs_give_zero_loss() {
        let x = Var::constant(volume([2, 8, 7, 9, 2], 0.0));
        let l = ssim3d(&x, &x, &SsimOptions::default())
            .unwrap()
            .value()
            .item()
            .unwrap();
        assert!(l.abs() < 1e-12, "{l}");
    }

    #[test]
    fn constant_volumes_give_the_luminance_term() {
        let b = Cpu64::new();
        let x = Var::constant(Tensor::full(&b, [1, 4, 4, 4, 1], 0.2).unwrap());
        let y = Var::constant(Tensor::full(&b, [1, 4, 4, 4, 1], 0.6).unwrap());
        let opts = SsimOptions {
            window: SsimWindow::Uniform { size: 3 },
            ..SsimOptions::default()
        };
        let l = ssim3d(&x, &y, &opts).unwrap().value().item().unwrap();
        let want = 1.0 - (2.0 * 0.12 + 1e-4) / (0.04 + 0.36 + 1e-4);
        assert!((l - want).abs() < 1e-12, "{l} vs {want}");
    }

    #[test]
    fn one_window_over_the_whole_volume_uses_global_statistics() {
        // A 3^3 uniform window on a 3^3 volume has one position: plain means, variances
        // and covariance over all 27 voxels.
        let x = volume([1, 3, 3, 3, 1], 0.0);
        let y = volume([1, 3, 3, 3, 1], 2.1);
        let (xs, ys) = (x.to_vec().unwrap(), y.to_vec().unwrap());
        let mean = |v: &[f64]| v.iter().sum::<f64>() / 27.0;
        let (mx, my) = (mean(&xs), mean(&ys));
        let vx = xs.iter().map(|a| (a - mx).powi(2)).sum::<f64>() / 27.0;
        let vy = ys.iter().map(|b| (b - my).powi(2)).sum::<f64>() / 27.0;
        let cov = xs
            .iter()
            .zip(&ys)
            .map(|(a, b)| (a - mx) * (b - my))
            .sum::<f64>()
            / 27.0;
        let (c1, c2) = (1e-4 * 4.0, 9e-4 * 4.0);
        let ssim =
            (2.0 * mx * my + c1) * (2.0 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2));
        let opts = SsimOptions {
            data_range: 2.0,
            window: SsimWindow::Uniform { size: 3 },
            ..SsimOptions::default()
        };
        let l = ssim3d(&Var::constant(x), &Var::constant(y), &opts)
            .unwrap()
            .value()
            .item()
            .unwrap();
        assert!((l - (1.0 - ssim)).abs() < 1e-12, "{l} vs {}", 1.0 - ssim);
        assert!(ssim < 0.9, "the inputs differ: {ssim}");
    }

    #[test]
    fn gaussian_taps_are_normalised_and_symmetric() {
        let t = SsimWindow::Gaussian {
            size: 7,
            sigma: 1.5,
        }
        .taps()
        .unwrap();
        assert!((t.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!((t[0] - t[6]).abs() < 1e-15 && t[3] > t[2] && t[2] > t[1]);
        assert!((t[2] / t[3] - (-1.0f64 / 4.5).exp()).abs() < 1e-15);
        assert!(SsimWindow::Uniform { size: 0 }.taps().is_err());
        assert!(SsimWindow::Gaussian {
            size: 3,
            sigma: 0.0
        }
        .taps()
        .is_err());
    }

    #[test]
    fn gradients_for_both_inputs() {
        let x = volume([1, 4, 5, 4, 2], 0.0);
        let y = volume([1, 4, 5, 4, 2], 1.3);
        for window in [
            SsimWindow::Uniform { size: 3 },
            SsimWindow::Gaussian {
                size: 3,
                sigma: 1.0,
            },
        ] {
            let opts = SsimOptions {
                window,
                ..SsimOptions::default()
            };
            check_gradients(
                &[x.clone(), y.clone()],
                |v| ssim3d(&v[0], &v[1], &opts),
                1e-6,
                1e-6,
                80,
            )
            .unwrap_or_else(|e| panic!("{window:?}: {e}"));
        }
    }
}
