//! Weight initialisers, drawn from a seeded generator: the same seed gives bit-identical weights.
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Normal with std sqrt(2 / fan_in) (He/Kaiming; nnU-Net's choice for LeakyReLU nets).
    HeNormal,
    /// Uniform in +-sqrt(6 / (fan_in + fan_out)) (Keras' default).
    GlorotUniform,
}

impl Init {
    /// `n` values for a kernel with the given fans (kernel volume included).
    pub fn sample(self, n: usize, fan_in: usize, fan_out: usize, rng: &mut Rng) -> Vec<f32> {
        match self {
            Init::HeNormal => {
                let std = (2.0 / fan_in.max(1) as f64).sqrt();
                (0..n).map(|_| (rng.normal() * std) as f32).collect()
            }
            Init::GlorotUniform => {
                let limit = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
                (0..n)
                    .map(|_| rng.uniform_range(-limit, limit) as f32)
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_bit_identical_and_statistics_match() {
        let a = Init::HeNormal.sample(20_000, 27 * 8, 27 * 16, &mut Rng::new(5));
        let b = Init::HeNormal.sample(20_000, 27 * 8, 27 * 16, &mut Rng::new(5));
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let var = a.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / a.len() as f64;
        assert!((var - 2.0 / 216.0).abs() < 0.05 * 2.0 / 216.0, "var {var}");
        let g = Init::GlorotUniform.sample(20_000, 10, 20, &mut Rng::new(1));
        let limit = (6.0f64 / 30.0).sqrt() as f32;
        assert!(g.iter().all(|v| v.abs() <= limit));
        assert!(g.iter().any(|v| v.abs() > 0.9 * limit));
    }
}
