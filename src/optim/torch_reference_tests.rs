//! The optimisers, schedules, clipping and penalties against PyTorch in float64:
//! tests/fixtures/optim_reference.json, written by scripts/optim_reference.py (whose header
//! says where voxseg's documented conventions differ from torch's defaults and how the
//! script follows voxseg's). Cpu64 must agree to 1e-10 relative; f32 `Cpu` to rounding.
use super::{clip_grad_norm, l1_l2_penalty, LrSchedule, OptimizerSpec};
use crate::autograd::{LeafId, Tape, Var};
use crate::backend::cpu::{Cpu, Cpu64};
use crate::backend::{Backend, Element};
use crate::fixture_json::{floats, list};
use crate::nn::Param;
use crate::optim::test_util::gradients;
use crate::tensor::Tensor;
use serde_json::Value;
use std::collections::BTreeMap;

const F64_REL: f64 = 1e-10;

fn fixture() -> Value {
    serde_json::from_str(include_str!("../../tests/fixtures/optim_reference.json")).unwrap()
}

/// The largest relative difference seen, for the report printed with `--nocapture`.
#[derive(Default)]
struct Worst {
    rel: f64,
    at: String,
}

impl Worst {
    /// Fails unless `|got - want| <= rel * max(|want|, floor)`; `floor` keeps values that
    /// cancel to about zero from demanding relative precision they cannot have.
    fn check(&mut self, what: &str, got: f64, want: f64, rel: f64, floor: f64) {
        let scale = want.abs().max(floor);
        let d = (got - want).abs();
        let r = if d == 0.0 { 0.0 } else { d / scale };
        assert!(
            r <= rel,
            "{what}: got {got:e}, torch {want:e} (relative {r:e})"
        );
        if r > self.rel {
            self.rel = r;
            self.at = what.to_string();
        }
    }

    fn all(&mut self, what: &str, got: &[f64], want: &[f64], rel: f64, floor: f64) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            self.check(&format!("{what}[{i}]"), g, w, rel, floor);
        }
    }

    fn report(&self, part: &str) {
        eprintln!(
            "{part}: largest relative difference {:e} at {}",
            self.rel, self.at
        );
    }
}

fn tensor<B: Backend>(b: &B, values: &[f64]) -> Tensor<B> {
    let data: Vec<B::E> = values.iter().map(|&v| B::E::of(v)).collect();
    Tensor::from_host(b, [values.len()], &data).unwrap()
}

/// Runs one optimiser case of the fixture on `B`, through `OptimizerSpec::build` and
/// `Optimizer::step`, checking the parameters after every step (and with `state`, the final
/// state) against torch's.
fn optimizer_case<B: Backend>(
    b: &B,
    case: &Value,
    rel: f64,
    floor: f64,
    state: bool,
    worst: &mut Worst,
) {
    let name = case["name"].as_str().unwrap();
    let spec: OptimizerSpec = serde_json::from_value(case["spec"].clone()).unwrap();
    let mut opt = spec.build::<B>().unwrap();
    let mut params: Vec<Param<B>> = list(&case["params"])
        .iter()
        .map(|p| {
            Param::new(
                p["name"].as_str().unwrap(),
                tensor(b, &floats(&p["init"])),
                p["decay"].as_bool().unwrap(),
            )
        })
        .collect();
    for (t, step) in list(&case["steps"]).iter().enumerate() {
        let gs: Vec<Option<Vec<f64>>> = list(&step["grads"])
            .iter()
            .map(|g| (!g.is_null()).then(|| floats(g)))
            .collect();
        let entries: Vec<(LeafId, &[f64])> = params
            .iter()
            .zip(&gs)
            .filter_map(|(p, g)| Some((p.id, g.as_deref()?)))
            .collect();
        let grads = gradients(b, &entries);
        let mut refs: Vec<&mut Param<B>> = params.iter_mut().collect();
        opt.step(&mut refs, &grads, step["lr"].as_f64().unwrap())
            .unwrap();
        for (p, want) in params.iter().zip(list(&step["params"])) {
            let what = format!("{name} step {} {}", t + 1, p.name);
            worst.all(
                &what,
                &p.value.to_vec_f64().unwrap(),
                &floats(want),
                rel,
                floor,
            );
        }
    }
    if !state {
        return;
    }
    let got: BTreeMap<String, Vec<f64>> = opt
        .state()
        .into_iter()
        .map(|(k, t)| (k, t.to_vec_f64().unwrap()))
        .collect();
    let want = case["state"].as_object().unwrap();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{name}: state entries"
    );
    for (k, w) in want {
        let w = if k == "step" {
            vec![w.as_f64().unwrap()]
        } else {
            floats(w)
        };
        worst.all(&format!("{name} state {k}"), &got[k], &w, rel, floor);
    }
}

#[test]
fn optimisers_match_torch_in_f64() {
    let mut worst = Worst::default();
    let cases = fixture();
    let cases = list(&cases["optimizers"]);
    assert!(cases.len() >= 9);
    for case in cases {
        optimizer_case(
            &Cpu64::new(),
            case,
            F64_REL,
            f64::MIN_POSITIVE,
            true,
            &mut worst,
        );
    }
    worst.report("optimisers (f64)");
}

#[test]
fn optimisers_match_torch_in_f32_to_rounding() {
    // Parameters are O(1) and each update rounds to f32 once (~6e-8 relative); a few steps
    // of momentum 0.99 carry a few of those roundings.
    let mut worst = Worst::default();
    for case in list(&fixture()["optimizers"]) {
        optimizer_case(&Cpu::new(), case, 2e-6, 1e-2, false, &mut worst);
    }
    worst.report("optimisers (f32)");
}

#[test]
fn schedules_match_torch_and_nnunet() {
    let mut worst = Worst::default();
    for case in list(&fixture()["schedules"]) {
        let name = case["name"].as_str().unwrap();
        let mut schedule: LrSchedule = serde_json::from_value(case["spec"].clone()).unwrap();
        schedule.validate().unwrap();
        let base = case["base_lr"].as_f64().unwrap();
        let max_epochs = case["max_epochs"].as_u64().unwrap() as usize;
        let want = floats(&case["lr"]);
        assert_eq!(want.len(), max_epochs + 1, "{name}");
        // Plateau: lr[e] is the rate before observing losses[e] (null is NaN).
        let losses: Vec<f64> = case
            .get("val_losses")
            .map(|l| {
                list(l)
                    .iter()
                    .map(|x| x.as_f64().unwrap_or(f64::NAN))
                    .collect()
            })
            .unwrap_or_default();
        for (e, &w) in want.iter().enumerate() {
            let got = schedule.lr(base, e, max_epochs);
            worst.check(&format!("{name} epoch {e}"), got, w, F64_REL, 0.0);
            if let Some(nnunet) = case.get("nnunet_lr") {
                let w = nnunet[e].as_f64().unwrap();
                worst.check(&format!("{name} nnU-Net epoch {e}"), got, w, F64_REL, 0.0);
            }
            if let Some(&loss) = losses.get(e) {
                schedule.observe(loss);
            }
        }
    }
    worst.report("schedules");
}

/// The fixture's gradient lists as `Gradients` on `B`, with their ids in order.
fn clip_input<B: Backend>(
    b: &B,
    rows: &[Vec<f64>],
) -> (crate::autograd::Gradients<B>, Vec<LeafId>) {
    let ids: Vec<LeafId> = rows.iter().map(|_| LeafId::fresh()).collect();
    let entries: Vec<(LeafId, &[f64])> = ids
        .iter()
        .copied()
        .zip(rows.iter().map(|r| &r[..]))
        .collect();
    (gradients(b, &entries), ids)
}

fn clip_cases<B: Backend>(b: &B, rel: f64, floor: f64, worst: &mut Worst) {
    for case in list(&fixture()["clip"]) {
        let name = case["name"].as_str().unwrap();
        let max_norm = case["max_norm"].as_f64().unwrap();
        let rows: Vec<Vec<f64>> = list(&case["grads"]).iter().map(floats).collect();
        let (mut grads, ids) = clip_input(b, &rows);
        let norm = clip_grad_norm(&mut grads, max_norm).unwrap();
        let torch_norm = case["norm"].as_f64().unwrap();
        worst.check(&format!("{name} norm"), norm, torch_norm, rel, 0.0);
        // voxseg scales by max_norm / norm above the max; torch by max_norm / (norm + 1e-6).
        let ours = if torch_norm > max_norm {
            max_norm / torch_norm
        } else {
            1.0
        };
        let theirs = (max_norm / (torch_norm + 1e-6)).min(1.0);
        for (i, id) in ids.iter().enumerate() {
            let got = grads.get(*id).unwrap().to_vec_f64().unwrap();
            let what = format!("{name} tensor {i}");
            worst.all(&what, &got, &floats(&case["clipped"][i]), rel, floor);
            let as_torch: Vec<f64> = got.iter().map(|g| g / ours * theirs).collect();
            let torch = floats(&case["torch_clipped"][i]);
            worst.all(&format!("{what} (torch)"), &as_torch, &torch, rel, floor);
        }
    }
}

#[test]
fn clipping_matches_torch_up_to_its_epsilon() {
    let mut worst = Worst::default();
    clip_cases(&Cpu64::new(), F64_REL, 0.0, &mut worst);
    worst.report("clipping (f64)");
    let mut worst = Worst::default();
    clip_cases(&Cpu::new(), 1e-6, 0.0, &mut worst);
    worst.report("clipping (f32)");
}

#[test]
fn penalties_match_torch_autograd() {
    let b = Cpu64::new();
    let mut worst = Worst::default();
    for case in list(&fixture()["penalties"]) {
        let (l1, l2) = (case["l1"].as_f64().unwrap(), case["l2"].as_f64().unwrap());
        let params: Vec<Param<Cpu64>> = list(&case["params"])
            .iter()
            .map(|p| {
                Param::new(
                    p["name"].as_str().unwrap(),
                    tensor(&b, &floats(&p["value"])),
                    p["decay"].as_bool().unwrap(),
                )
            })
            .collect();
        let refs: Vec<&Param<Cpu64>> = params.iter().collect();
        let tape = Tape::new();
        let penalty = l1_l2_penalty(&refs, &tape, l1, l2).unwrap();
        let what = format!("penalty l1 {l1} l2 {l2}");
        let want = case["penalty"].as_f64().unwrap();
        worst.check(&what, penalty.value().item().unwrap(), want, F64_REL, 0.0);
        let grads = tape.backward(&penalty).unwrap();
        for (p, want) in params.iter().zip(list(&case["grads"])) {
            let got = grads.get(p.id);
            assert_eq!(
                got.is_some(),
                !want.is_null(),
                "{what} {}: a gradient",
                p.name
            );
            if let Some(g) = got {
                let what = format!("{what} gradient {}", p.name);
                worst.all(&what, &g.to_vec_f64().unwrap(), &floats(want), F64_REL, 0.0);
            }
        }
    }
    worst.report("penalties");
}

/// train::run's step on a linear loss: penalty, backward, clipping, the optimiser with the
/// schedule's rate (one step an epoch).
#[test]
fn train_steps_match_torch() {
    let b = Cpu64::new();
    let mut worst = Worst::default();
    let fixture = fixture();
    let case = &fixture["train_steps"];
    let spec: OptimizerSpec = serde_json::from_value(case["spec"].clone()).unwrap();
    let schedule: LrSchedule = serde_json::from_value(case["schedule"].clone()).unwrap();
    let [base, l1, l2, max_norm] =
        ["base_lr", "l1", "l2", "max_norm"].map(|k| case[k].as_f64().unwrap());
    let max_epochs = case["max_epochs"].as_u64().unwrap() as usize;
    let mut opt = spec.build::<Cpu64>().unwrap();
    let mut params: Vec<Param<Cpu64>> = list(&case["params"])
        .iter()
        .map(|p| {
            Param::new(
                p["name"].as_str().unwrap(),
                tensor(&b, &floats(&p["init"])),
                p["decay"].as_bool().unwrap(),
            )
        })
        .collect();
    let steps = list(&case["steps"]);
    assert_eq!(steps.len(), max_epochs);
    for (epoch, step) in steps.iter().enumerate() {
        let lr = schedule.lr(base, epoch, max_epochs);
        worst.check(
            &format!("epoch {epoch} lr"),
            lr,
            step["lr"].as_f64().unwrap(),
            F64_REL,
            0.0,
        );
        let tape = Tape::new();
        let mut loss = Var::constant(Tensor::scalar(&b, 0.0).unwrap());
        for (p, c) in params.iter().zip(list(&step["loss_coefficients"])) {
            let c = Var::constant(tensor(&b, &floats(c)));
            loss = loss
                .add(&p.var(Some(&tape)).mul(&c).unwrap().sum().unwrap())
                .unwrap();
        }
        let refs: Vec<&Param<Cpu64>> = params.iter().collect();
        loss = loss
            .add(&l1_l2_penalty(&refs, &tape, l1, l2).unwrap())
            .unwrap();
        let mut grads = tape.backward(&loss).unwrap();
        let norm = clip_grad_norm(&mut grads, max_norm).unwrap();
        let want_norm = step["norm"].as_f64().unwrap();
        worst.check(
            &format!("epoch {epoch} norm"),
            norm,
            want_norm,
            F64_REL,
            0.0,
        );
        let mut refs: Vec<&mut Param<Cpu64>> = params.iter_mut().collect();
        opt.step(&mut refs, &grads, lr).unwrap();
        for (p, want) in params.iter().zip(list(&step["params"])) {
            let what = format!("epoch {epoch} {}", p.name);
            worst.all(
                &what,
                &p.value.to_vec_f64().unwrap(),
                &floats(want),
                F64_REL,
                0.0,
            );
        }
    }
    worst.report("train steps");
}
