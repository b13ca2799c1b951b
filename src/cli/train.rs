use clap::Args as ClapArgs;
use std::path::PathBuf;
use voxseg::backend::cuda::conv_plan::ConvPrecision;
use voxseg::data::labels::TargetSpec;
use voxseg::nn::layers::NormKind;
use voxseg::optim::{LrSchedule, OptimizerSpec};
use voxseg::train::config::ModelKind;
use voxseg::train::run::Ending;
use voxseg::train::{RunOptions, TrainConfig};

/// Every flag is optional: unset flags keep the config file's value, then the default.
#[derive(ClapArgs)]
pub struct Args {
    /// Dataset: a BraTS, MSD or nnU-Net folder, or a JSON manifest.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run folder: config, split, checkpoints, metrics and TensorBoard logs.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A JSON training config (its relative paths are taken from its folder); flags
    /// override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Convolution arithmetic: fp32, tf32 or bf16 on CUDA (tensor cores, f32 accumulation);
    /// fp32 or bf16 (f32 accumulation) on CPUs with AVX512-BF16.
    #[arg(long)]
    precision: Option<ConvPrecision>,
    /// Modalities in input order, e.g. t1,t1ce,t2,flair.
    #[arg(long, value_delimiter = ',')]
    modalities: Option<Vec<String>>,
    /// regions, classes, class:NAME or class:N [default: regions (BraTS WT, TC, ET), or
    /// classes for a dataset without regions].
    #[arg(long)]
    target: Option<TargetSpec>,
    /// Network [default: unet].
    #[arg(long, value_enum)]
    model: Option<ModelArg>,
    /// Width of the first stage [default: from `voxseg plan`: 32 on a GPU, 8 on a CPU].
    #[arg(long)]
    features: Option<usize>,
    /// Widest stage [default: from `voxseg plan`: 320 on a GPU, 64 on a CPU].
    #[arg(long)]
    max_features: Option<usize>,
    /// Resolution stages of the U-Net (FCN: levels + 1, at most 6) [default: from the
    /// patch, as nnU-Net].
    #[arg(long)]
    depth: Option<usize>,
    /// Normalisation after each convolution [default: instance].
    #[arg(long, value_enum)]
    norm: Option<NormArg>,
    /// Turn deep supervision off.
    #[arg(long)]
    no_deep_supervision: bool,
    /// Dropout probability after each block's convolutions [default: 0].
    #[arg(long)]
    dropout: Option<f64>,
    /// dice_ce, dice, bce, wbce[:POS_WEIGHT], ce, mse, mae, ssim [default: dice_ce].
    #[arg(long)]
    loss: Option<String>,
    /// [default: sgd, Nesterov momentum 0.99, nnU-Net's recipe].
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerArg>,
    /// Initial learning rate [default: 0.01 for SGD, 0.001 for Adam, AdamW and lazy Adam].
    #[arg(long)]
    lr: Option<f64>,
    /// constant, poly, cosine[:WARMUP_EPOCHS], step[:EVERY:GAMMA] (30, 0.1),
    /// plateau[:FACTOR:PATIENCE] (0.1, 10) [default: poly].
    #[arg(long)]
    schedule: Option<String>,
    /// Weight decay: added to the gradient for SGD and Adam, decoupled for AdamW; lazy Adam
    /// takes none [default: SGD 3e-5, Adam 0, AdamW 0.004].
    #[arg(long)]
    weight_decay: Option<f64>,
    /// L1 penalty on the weights, added to the loss [default: 0].
    #[arg(long)]
    l1: Option<f64>,
    /// L2 penalty on the weights, added to the loss [default: 0].
    #[arg(long)]
    l2: Option<f64>,
    /// Gradient-norm clipping; 0 disables [default: 12].
    #[arg(long)]
    grad_clip: Option<f64>,
    /// [default: 50].
    #[arg(long)]
    epochs: Option<usize>,
    /// Training steps per epoch [default: 250].
    #[arg(long)]
    iters_per_epoch: Option<usize>,
    /// Patches per step [default: from `voxseg plan`].
    #[arg(long)]
    batch: Option<usize>,
    /// Patch D,H,W (or one number for a cube) [default: from `voxseg plan`].
    #[arg(long, value_parser = super::triple, allow_hyphen_values = true)]
    patch: Option<[usize; 3]>,
    /// Validate every this many epochs [default: 1].
    #[arg(long)]
    val_every: Option<usize>,
    /// Stop cleanly after this many minutes (positive), saving `last`; an epoch cut short
    /// is validated when resumed. On --resume a new budget for this invocation [default:
    /// none, or the run's].
    #[arg(long)]
    time_limit: Option<f64>,
    /// Stop once this many validations in a row bring no new best mean validation Dice
    /// (Keras' EarlyStopping patience; a validation runs every --val-every epochs);
    /// checkpoints/best keeps the best epoch. May change on --resume, where 0 turns it off
    /// [default: none].
    #[arg(long, value_name = "PATIENCE")]
    early_stop: Option<usize>,
    /// Seed of the split, initialisation, sampling and augmentation [default: 42].
    #[arg(long)]
    seed: Option<u64>,
    /// Data-loading threads, at most 256 [default: 2].
    #[arg(long)]
    workers: Option<usize>,
    /// Normalise with statistics over the training cases instead of per case.
    #[arg(long)]
    dataset_statistics: bool,
    /// Replace NaN/Inf voxels with 0 instead of refusing the case.
    #[arg(long)]
    replace_nan: bool,
    /// Stream cases from a `voxseg preprocess` cache instead of loading them into memory.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Train fold K (from 0) of k-fold cross-validation over the cases outside the test set
    /// (which every fold shares), nnU-Net style.
    #[arg(long)]
    fold: Option<usize>,
    /// Number of cross-validation folds [default: the config's, else 5].
    #[arg(long, requires = "fold")]
    folds: Option<usize>,
    /// Use this split (JSON lists "train", "val", "test" of case ids, as a run's split.json)
    /// instead of making one; with --fold K, nnU-Net's splits_final.json (a list of
    /// {"train", "val"}), entry K (the test set is then empty).
    #[arg(long)]
    split_file: Option<PathBuf>,
    /// Turn data augmentation off.
    #[arg(long)]
    no_augment: bool,
    /// Continue the run in --out from its last checkpoint, with its config.json; only
    /// --epochs, --time-limit, --early-stop, --workers, --val-every, --device and --precision
    /// may change.
    #[arg(long)]
    resume: bool,
    /// Start over in an --out that holds another run.
    #[arg(long)]
    force: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModelArg {
    Unet,
    Fcn,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum NormArg {
    Instance,
    Batch,
    None,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OptimizerArg {
    Sgd,
    Adam,
    Adamw,
    LazyAdam,
}

fn parse_loss(s: &str) -> anyhow::Result<voxseg::loss::LossSpec> {
    let (kind, arg) = s.split_once(':').map_or((s, None), |(k, a)| (k, Some(a)));
    let mut json = serde_json::json!({ "kind": kind });
    let plain = ["dice_ce", "dice", "bce", "ce", "mse", "mae", "ssim"];
    if arg.is_some() && plain.contains(&kind) {
        anyhow::bail!(
            "invalid --loss: '{s}': {kind} takes no parameter (only wbce:POS_WEIGHT does)"
        );
    }
    if let (Some(arg), "wbce") = (arg, kind) {
        let w: f64 = arg
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid --loss: '{s}': wbce takes wbce:POS_WEIGHT"))?;
        json["pos_weight"] = serde_json::json!(w);
    } else if kind == "ssim" {
        json = serde_json::to_value(voxseg::loss::LossSpec::Ssim(Default::default()))?;
    }
    serde_json::from_value(json).map_err(|_| {
        anyhow::anyhow!(
            "invalid --loss: '{s}': expected dice_ce, dice, bce, wbce[:W], ce, mse, mae or ssim"
        )
    })
}

fn parse_schedule(s: &str) -> anyhow::Result<LrSchedule> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || {
        anyhow::anyhow!("invalid --schedule: '{s}': expected constant, poly, cosine[:WARMUP_EPOCHS], step[:EVERY:GAMMA] or plateau[:FACTOR:PATIENCE]")
    };
    let schedule = match parts.as_slice() {
        ["constant"] => LrSchedule::Constant,
        ["poly"] => LrSchedule::nnunet(),
        // The configuration's bare names, with the same defaults.
        ["step"] => serde_json::from_value(serde_json::json!({"kind": "step"}))?,
        ["plateau"] => serde_json::from_value(serde_json::json!({"kind": "reduce_on_plateau"}))?,
        ["cosine"] => LrSchedule::Cosine { warmup_epochs: 0 },
        ["cosine", w] => LrSchedule::Cosine {
            warmup_epochs: w.parse().map_err(|_| bad())?,
        },
        ["step", e, g] => LrSchedule::Step {
            every: e.parse().map_err(|_| bad())?,
            gamma: g.parse().map_err(|_| bad())?,
        },
        ["plateau", f, p] => LrSchedule::ReduceOnPlateau {
            factor: f.parse().map_err(|_| bad())?,
            patience: p.parse().map_err(|_| bad())?,
            min_lr: 0.0,
            state: Default::default(),
        },
        _ => return Err(bad()),
    };
    schedule.validate()?;
    Ok(schedule)
}

impl Args {
    /// The configuration (defaults, then the --config file, then the flags) and the run
    /// options; on --resume the options name every setting the user set, which the run's
    /// saved configuration is checked against.
    pub fn into_config(self) -> anyhow::Result<(TrainConfig, RunOptions)> {
        let (mut c, mut requested) = match &self.config {
            Some(p) => TrainConfig::from_file_with_keys(p)?,
            None => (TrainConfig::default(), Vec::new()),
        };
        // A learning rate the file sets is kept when --optimizer changes the optimiser.
        let lr_from_file = requested.iter().any(|k| k == "lr");
        let mut asked = |key: &str| requested.push(key.to_string());
        macro_rules! set {
            ($field:ident) => {
                if let Some(v) = self.$field {
                    c.$field = v;
                    asked(stringify!($field));
                }
            };
            ($field:ident, some) => {
                if let Some(v) = self.$field {
                    c.$field = Some(v);
                    asked(stringify!($field));
                }
            };
        }
        set!(data);
        set!(out);
        set!(device);
        set!(precision, some);
        set!(modalities);
        set!(target);
        set!(features, some);
        set!(max_features, some);
        set!(depth, some);
        set!(dropout);
        set!(l1);
        set!(l2);
        set!(grad_clip);
        set!(epochs);
        set!(iters_per_epoch);
        set!(batch, some);
        set!(patch, some);
        set!(val_every);
        set!(seed);
        set!(workers);
        if let Some(m) = self.model {
            c.model = match m {
                ModelArg::Unet => ModelKind::Unet,
                ModelArg::Fcn => ModelKind::Fcn,
            };
            asked("model");
        }
        if let Some(n) = self.norm {
            c.norm = match n {
                NormArg::Instance => NormKind::Instance,
                NormArg::Batch => NormKind::Batch,
                NormArg::None => NormKind::None,
            };
            asked("norm");
        }
        if self.no_deep_supervision {
            c.deep_supervision = false;
            asked("deep_supervision");
        }
        if let Some(l) = &self.loss {
            c.loss = parse_loss(l)?;
            asked("loss");
        }
        if let Some(o) = self.optimizer {
            c.optimizer = match o {
                OptimizerArg::Sgd => OptimizerSpec::nnunet_sgd(),
                OptimizerArg::Adam => OptimizerSpec::keras_adam(),
                OptimizerArg::Adamw => {
                    serde_json::from_value(serde_json::json!({"kind": "adamw"}))?
                }
                OptimizerArg::LazyAdam => {
                    serde_json::from_value(serde_json::json!({"kind": "lazy_adam"}))?
                }
            };
            asked("optimizer");
            if self.lr.is_none() && !lr_from_file {
                c.lr = c.optimizer.default_lr();
            }
        }
        if let Some(wd) = self.weight_decay {
            c.optimizer = c.optimizer.with_weight_decay(wd)?;
            // Its own key: on resume only the decay is compared, not the optimiser it was
            // applied to here (the default one, unless --optimizer or the config names one).
            asked("weight_decay");
        }
        if let Some(lr) = self.lr {
            c.lr = lr;
            asked("lr");
        }
        if let Some(s) = &self.schedule {
            c.schedule = parse_schedule(s)?;
            asked("schedule");
        }
        if let Some(t) = self.time_limit {
            c.time_limit_minutes = Some(t);
            asked("time_limit_minutes");
        }
        if let Some(p) = self.early_stop {
            c.early_stop_patience = (p > 0).then_some(p);
            asked("early_stop_patience");
        }
        if self.dataset_statistics {
            c.dataset_statistics = true;
            asked("dataset_statistics");
        }
        if self.replace_nan {
            c.replace_nan = true;
            asked("replace_nan");
        }
        if let Some(cache) = self.cache {
            c.cache = Some(cache);
            asked("cache");
        }
        if let Some(index) = self.fold {
            c.folds = Some(asked_folds(index, self.folds, c.folds));
            asked("folds");
        }
        if let Some(path) = self.split_file {
            c.split_file = Some(path);
            asked("split_file");
        }
        if self.no_augment {
            c.augment = voxseg::data::augment::AugmentSpec::none();
            asked("augment");
        }
        if c.data.as_os_str().is_empty() && !self.resume {
            anyhow::bail!("--data is required (a dataset folder or a manifest)");
        }
        if !self.resume && !requested.iter().any(|k| k == "target") {
            default_target(&mut c);
        }
        if c.out.as_os_str().is_empty() {
            anyhow::bail!("--out is required (the run directory)");
        }
        Ok((
            c,
            RunOptions {
                resume: self.resume,
                force: self.force,
                requested,
            },
        ))
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (cfg, opts) = a.into_config()?;
    let summary = voxseg::train::train(cfg, opts)?;
    let run = &summary.run.root;
    let (done, total) = (summary.state.epoch, summary.epochs);
    if !summary.trained && !summary.resume_changes.is_empty() {
        eprintln!(
            "note: nothing was trained, so these were not applied (nor written to config.json): {}",
            summary.resume_changes.join(", ")
        );
    }
    if summary.ending == Ending::AlreadyComplete {
        say!(
            "{} is already complete ({done}/{total} epochs): raise --epochs to continue",
            run.display()
        );
        print_best(&summary);
        return Ok(());
    }
    say!("run: {}", run.display());
    if summary.trained {
        say!("device: {}", summary.device);
    }
    say!("epochs done: {done}/{total}, steps: {}", summary.state.step);
    if let Some(v) = &summary.last_validation {
        let dice: Vec<String> = v.dice.iter().map(|(k, d)| format!("{k} {d:.3}")).collect();
        say!(
            "last validation: loss {:.4}, Dice {}",
            v.loss,
            dice.join(", ")
        );
    }
    print_best(&summary);
    if let Some(peak) = summary.memory_peak_bytes {
        say!(
            "device memory: at most {:.2} GiB in tensors (the CUDA context and the pool's \
             cached blocks take more)",
            voxseg::train::run::gib(peak)
        );
    }
    say!("checkpoints: {}", summary.run.checkpoints().display());
    say!(
        "tensorboard: tensorboard --logdir {}",
        summary.run.tensorboard().display()
    );
    let resume = format!("voxseg train --out {} --resume", run.display());
    match summary.ending {
        Ending::Interrupted => {
            say!(
                "interrupted at epoch {done}, step {} (saved in {}); continue with: {resume}",
                summary.state.step,
                summary.run.checkpoint("last").display()
            );
            // 128 + the signal, as a shell reports a command it stopped.
            std::process::exit(voxseg::interrupt::exit_status());
        }
        Ending::TimeLimit => say!(
            "stopped by the time limit at epoch {done}, step {}; continue with: {resume} \
             [--time-limit MIN]",
            summary.state.step
        ),
        Ending::EarlyStopped => say!(
            "stopped early after epoch {}: {} validation(s) in a row brought no new best; to \
             train on: {resume} --early-stop N (N above {})",
            done.saturating_sub(1),
            summary.state.validations_since_best,
            summary.state.validations_since_best
        ),
        Ending::Finished | Ending::AlreadyComplete => {}
    }
    Ok(())
}

/// Without a target from the user, a dataset that defines no regions trains `classes`
/// (the default `regions` is BraTS's). A dataset that cannot be read is left to training,
/// which reports it after the checks that come first.
fn default_target(c: &mut TrainConfig) {
    let Ok(dataset) = voxseg::data::layout::detect(&c.data) else {
        return;
    };
    if dataset.label_spec.regions().is_empty() {
        c.target = TargetSpec::Classes;
        eprintln!(
            "note: {} defines no regions: target classes (a softmax over all its classes); \
             pass --target to choose another",
            c.data.display()
        );
    }
}

/// Which checkpoint is "best" and why: `predict` uses it unless told otherwise.
fn print_best(summary: &voxseg::train::TrainSummary) {
    match (summary.state.best_epoch, summary.state.best_score) {
        (Some(epoch), Some(dice)) => say!(
            "best: {} (epoch {epoch}: the highest mean validation Dice, {dice:.4}; predict uses it)",
            summary.run.checkpoint("best").display()
        ),
        (Some(epoch), None) => say!(
            "best: {} (no validation cases: a copy of last, from epoch {epoch}; predict uses it)",
            summary.run.checkpoint("best").display()
        ),
        (None, Some(dice)) => say!(
            "best: {} (the highest mean validation Dice, {dice:.4}; predict uses it)",
            summary.run.checkpoint("best").display()
        ),
        _ => say!("best: none yet (no validation has run)"),
    }
}

#[derive(ClapArgs)]
pub struct PlanArgs {
    /// Dataset: a BraTS, MSD or nnU-Net folder, or a JSON manifest.
    #[arg(long)]
    data: Option<PathBuf>,
    /// A JSON training config (as for train); flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// auto, cpu, cuda or cuda:N [default: auto].
    #[arg(long)]
    device: Option<String>,
    /// Modalities in input order, e.g. t1,t1ce,t2,flair [default: all the dataset has].
    #[arg(long, value_delimiter = ',')]
    modalities: Option<Vec<String>>,
    /// regions, classes, class:NAME or class:N [default: regions, or classes for a dataset
    /// without regions].
    #[arg(long)]
    target: Option<TargetSpec>,
    /// The seed of the split train would make: the plan comes from the cases outside its
    /// test set, the same for every --fold [default: 42, as train].
    #[arg(long)]
    seed: Option<u64>,
    /// Plan from this split file's train and val cases, as train --split-file does.
    #[arg(long)]
    split_file: Option<PathBuf>,
    /// Plan fold K (from 0), as train --fold does: with --split-file, entry K of nnU-Net's
    /// splits_final.json; otherwise every fold plans alike (from the cases outside the
    /// shared test set).
    #[arg(long)]
    fold: Option<usize>,
    /// Number of cross-validation folds [default: the config's, else 5].
    #[arg(long, requires = "fold")]
    folds: Option<usize>,
}

/// The folds `--fold K [--folds N]` ask for: fold K of N, else of the configuration's
/// count, else of 5.
fn asked_folds(
    index: usize,
    count: Option<usize>,
    configured: Option<voxseg::train::config::Folds>,
) -> voxseg::train::config::Folds {
    voxseg::train::config::Folds {
        count: count.or(configured.map(|f| f.count)).unwrap_or(5),
        index,
    }
}

/// Prints the plan `train` with the same data, config, seed and device would use.
pub fn plan(a: PlanArgs) -> anyhow::Result<()> {
    let (mut c, keys) = match &a.config {
        Some(p) => TrainConfig::from_file_with_keys(p)?,
        None => (TrainConfig::default(), Vec::new()),
    };
    let target_given = a.target.is_some() || keys.iter().any(|k| k == "target");
    if let Some(d) = a.data {
        c.data = d;
    }
    if let Some(d) = a.device {
        c.device = d;
    }
    if let Some(m) = a.modalities {
        c.modalities = m;
    }
    if let Some(t) = a.target {
        c.target = t;
    }
    if let Some(s) = a.seed {
        c.seed = s;
    }
    if let Some(path) = a.split_file {
        c.split_file = Some(path);
    }
    if let Some(index) = a.fold {
        c.folds = Some(asked_folds(index, a.folds, c.folds));
    }
    if c.data.as_os_str().is_empty() {
        anyhow::bail!("--data is required (a dataset folder or a manifest)");
    }
    if !target_given {
        default_target(&mut c);
    }
    let (plan, memory, device) = voxseg::train::run::plan_for_config(&c)?;
    // Standard output is the plan's JSON; why this device, as train says it, goes beside.
    eprintln!("device: {}", device.describe());
    // With the memory one step takes at its peak on the device, by the planner's models.
    let mut shown = serde_json::to_value(&plan)?;
    shown["step_memory_bytes"] = serde_json::json!(memory);
    say!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(())
}
