//! The optimiser state shared by every optimiser: the step count and per-parameter slots
//! (momentum buffer, moments) named `<param name>.<slot>`.
use crate::autograd::Gradients;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nn::Param;
use crate::tensor::Tensor;
use std::collections::{BTreeMap, HashSet};

pub(super) struct OptimState<B: Backend> {
    /// Completed steps.
    pub step: u64,
    /// `step` as a scalar tensor for `export`; None before the first step.
    step_tensor: Option<Tensor<B>>,
    slots: BTreeMap<String, Tensor<B>>,
}

impl<B: Backend> Default for OptimState<B> {
    fn default() -> Self {
        Self {
            step: 0,
            step_tensor: None,
            slots: BTreeMap::new(),
        }
    }
}

fn slot_key(param: &str, slot: &str) -> String {
    format!("{param}.{slot}")
}

impl<B: Backend> OptimState<B> {
    /// Checks every gradient and existing slot against its parameter before any update, so
    /// a failing step changes nothing. `slot_names` are this optimiser's per-parameter slots.
    pub fn check(
        &self,
        op: &'static str,
        params: &[&mut Param<B>],
        grads: &Gradients<B>,
        slot_names: &[&str],
    ) -> Result<()> {
        let mut seen = HashSet::new();
        for p in params {
            if !seen.insert(p.name.as_str()) {
                return Err(Error::shape(
                    op,
                    format!("parameter {} listed twice", p.name),
                ));
            }
            let Some(g) = grads.get(p.id) else { continue };
            if g.shape() != p.value.shape() {
                return Err(Error::shape(
                    op,
                    format!(
                        "gradient of shape {} for parameter {} of shape {}",
                        g.shape(),
                        p.name,
                        p.value.shape()
                    ),
                ));
            }
            for slot in slot_names {
                if let Some(s) = self.slots.get(&slot_key(&p.name, slot)) {
                    if s.shape() != p.value.shape() {
                        return Err(Error::shape(
                            op,
                            format!(
                                "state {slot} of shape {} for parameter {} of shape {}",
                                s.shape(),
                                p.name,
                                p.value.shape()
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts a new step (its number is the new `step`), recording it on `backend`.
    pub fn begin_step(&mut self, backend: Option<&B>) -> Result<()> {
        self.step += 1;
        let backend = backend
            .cloned()
            .or_else(|| self.step_tensor.as_ref().map(|t| t.backend().clone()));
        if let Some(b) = backend {
            self.step_tensor = Some(Tensor::scalar(&b, self.step as f64)?);
        }
        Ok(())
    }

    /// The slot `slot` of `param`, taken out (zeros on first use); give it back with `put`.
    pub fn take(&mut self, param: &Param<B>, slot: &str) -> Result<Tensor<B>> {
        match self.slots.remove(&slot_key(&param.name, slot)) {
            Some(t) => Ok(t),
            None => Tensor::zeros(param.value.backend(), param.value.shape().clone()),
        }
    }

    pub fn put(&mut self, param: &Param<B>, slot: &str, value: Tensor<B>) {
        self.slots.insert(slot_key(&param.name, slot), value);
    }

    /// The slot `slot` of each of `params`, taken out in order (zeros on first use); on a
    /// failure the ones already taken go back. Give them back with `put_all`.
    pub fn take_all(&mut self, params: &[&Param<B>], slot: &str) -> Result<Vec<Tensor<B>>> {
        let mut taken = Vec::with_capacity(params.len());
        for p in params {
            match self.take(p, slot) {
                Ok(t) => taken.push(t),
                Err(e) => {
                    self.put_all(&params[..taken.len()], slot, taken);
                    return Err(e);
                }
            }
        }
        Ok(taken)
    }

    pub fn put_all(&mut self, params: &[&Param<B>], slot: &str, values: Vec<Tensor<B>>) {
        for (p, v) in params.iter().zip(values) {
            self.put(p, slot, v);
        }
    }

    pub fn export(&self) -> Vec<(String, Tensor<B>)> {
        let Some(step) = &self.step_tensor else {
            return Vec::new();
        };
        std::iter::once(("step".to_string(), step.clone()))
            .chain(self.slots.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect()
    }

    /// Replaces the state with `entries`, accepting `step` and `<param>.<slot>` for the
    /// given slot names only.
    pub fn import(
        &mut self,
        kind: &str,
        entries: Vec<(String, Tensor<B>)>,
        slot_names: &[&str],
    ) -> Result<()> {
        let mut fresh = Self::default();
        let mut has_step = false;
        for (key, tensor) in entries {
            if key == "step" {
                let v = tensor.item()?;
                if !(v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(53)) {
                    return Err(Error::config(
                        format!("{kind} state"),
                        format!("step count {v} is not a non-negative integer"),
                    ));
                }
                fresh.step = v as u64;
                fresh.step_tensor = Some(tensor);
                has_step = true;
            } else if slot_names.iter().any(|s| {
                key.strip_suffix(s)
                    .is_some_and(|p| p.len() > 1 && p.ends_with('.'))
            }) {
                fresh.slots.insert(key, tensor);
            } else {
                return Err(Error::config(
                    format!("{kind} state"),
                    format!(
                        "unexpected entry {key} (expected step or <parameter>.{{{}}})",
                        slot_names.join(",")
                    ),
                ));
            }
        }
        if !has_step && !fresh.slots.is_empty() {
            return Err(Error::config(
                format!("{kind} state"),
                "missing the step count",
            ));
        }
        *self = fresh;
        Ok(())
    }
}
