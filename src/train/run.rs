//! One training run, start to finish: the run directory, data, planning, the model, the
//! loop with validation, logs and checkpoints, resuming, time limits and Ctrl-C.
use super::card::{CheckpointIdentity, ModelCard, CARD_FORMAT, CHECKPOINT_IDENTITY_KEY};
use super::checkpoint::{load_checkpoint, save_checkpoint};
use super::config::{ModelKind, TrainConfig, RESUMABLE_SETTINGS};
use super::lock::{is_temp_file, remove_stale_temp_files, RunLock, LOCK_FILE};
use super::plan::{
    gpu_step_peak_bytes, min_patch_for_depth, model_estimate, model_parameters, plan, stages_for,
    step_memory_bytes, DataSummary, Plan, PlanDevice,
};
use crate::autograd::{Gradients, Tape, Var};
use crate::backend::cpu::Cpu;
use crate::backend::cuda::conv_plan::ConvPrecision;
use crate::backend::device::{resolve, Device, DeviceRequest};
use crate::backend::Backend;
use crate::data::case::{load_case, NanPolicy};
use crate::data::check::{grid_warnings, ORIENTATIONS_DIFFER};
use crate::data::labels::{LabelSpec, TargetSpec};
use crate::data::layout::{list, Dataset};
use crate::data::loader::{Batch, Loader, LoaderOptions};
use crate::data::nifti::NiftiHeaderInfo;
use crate::data::orient::{majority, orientation, reorient, training_orientation};
use crate::data::preprocess::{dataset_stats, preprocess, PreprocessedCase, Statistics};
use crate::data::sampler::{InMemoryCase, PatchSource};
use crate::data::split::Split;
use crate::data::CaseData;
use crate::error::{few, Error, Result};
use crate::infer::{interleave_channels, predict_volume, probabilities, SlidingWindow};
use crate::log::{captioned_overlay, EventWriter, JsonlWriter, Progress};
use crate::loss::{check_finite, LossSpec, Target};
use crate::nn::fcn::{self, FcnConfig};
use crate::nn::layers::Activation;
use crate::nn::unet::{Downsample, Stages, UNetConfig, Upsample};
use crate::nn::{Ctx, Init, Model, ModelSpec, Module};
use crate::optim::{clip_grad_norm, l1_l2_penalty, LrSchedule, Optimizer};
use crate::rng::philox4x32;
use crate::tensor::Tensor;
use crate::tensor_ops::confusion::{ConfusionSpec, Decision};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a run keeps its files.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    pub fn split(&self) -> PathBuf {
        self.root.join("split.json")
    }
    pub fn model(&self) -> PathBuf {
        self.root.join("model.json")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    pub fn checkpoint(&self, which: &str) -> PathBuf {
        self.checkpoints().join(format!("{which}.safetensors"))
    }
    pub fn tensorboard(&self) -> PathBuf {
        self.root.join("tb")
    }
    /// The files a run writes (`--force` removes them), then its folders.
    fn own_entries(&self) -> ([PathBuf; 4], [PathBuf; 2]) {
        (
            [self.config(), self.split(), self.model(), self.metrics()],
            [self.checkpoints(), self.tensorboard()],
        )
    }
}

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Continue the run in `out`: its `config.json` is the configuration (see `requested`).
    pub resume: bool,
    /// Start over in a directory that holds another run.
    pub force: bool,
    /// With `resume`: the settings the caller set, as `TrainConfig` field names (the CLI
    /// passes its flags and its `--config` file's keys), and `weight_decay` for the weight
    /// decay of the optimiser alone. Those in [`RESUMABLE_SETTINGS`] are applied (`epochs`
    /// raises or lowers the run's count; below the epochs already done is an error); any
    /// other whose value differs from the run's is refused; settings not named keep the
    /// run's values.
    pub requested: Vec<String>,
}

/// Where the loop stands; saved in every checkpoint so `--resume` continues exactly.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TrainState {
    pub epoch: usize,
    /// Iterations already done in `epoch`.
    pub iter: usize,
    pub step: u64,
    /// The highest mean validation Dice so far: the `best` checkpoint's.
    pub best_score: Option<f64>,
    /// The epoch whose validation gave `best_score`; without validation cases (no score),
    /// the last epoch trained, whose weights `best` then holds as `last` does.
    pub best_epoch: Option<usize>,
    /// Validations since the one that gave `best_score`, for early stopping.
    pub validations_since_best: usize,
    pub schedule: Option<LrSchedule>,
    pub seconds: f64,
    /// Sum and count of the training losses of the `iter` steps done in `epoch`, so that an
    /// epoch resumed part-way reports the mean over all its steps.
    pub epoch_loss_sum: f64,
    pub epoch_loss_steps: usize,
}

/// How a call to [`train`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Every epoch is done.
    Finished,
    /// A resumed run had already done every epoch: nothing was trained.
    AlreadyComplete,
    /// The time limit stopped it; `--resume` continues.
    TimeLimit,
    /// Ctrl-C stopped it; `--resume` continues.
    Interrupted,
    /// `early_stop_patience` validations in a row brought no new best (or had already, on
    /// resume: nothing was trained); `--resume --early-stop` with a larger patience continues.
    EarlyStopped,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Validation {
    pub loss: f64,
    /// Dice per region (or class), by name, in the label convention's order.
    pub dice: Vec<(String, f64)>,
    pub mean_dice: f64,
}

#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub run: RunDir,
    pub device: String,
    pub state: TrainState,
    /// The run's epoch count.
    pub epochs: usize,
    pub last_validation: Option<Validation>,
    pub ending: Ending,
    /// On resume: the resumable settings asked to change, as "name old -> new"; applied
    /// (and written to `config.json`) only where the call `trained`.
    pub resume_changes: Vec<String>,
    /// Whether this call trained (false where the run was complete or had stopped early:
    /// then `device` is where it would have run).
    pub trained: bool,
    /// The most device memory the run's tensors held at once, where the backend counts it
    /// (a GPU).
    pub memory_peak_bytes: Option<u64>,
}

/// Trains as `cfg` says on the device it names (on resume: as the run's `config.json` says,
/// with the settings `opts.requested` may change). Every check runs before anything is
/// written to the run directory.
pub fn train(cfg: TrainConfig, opts: RunOptions) -> Result<TrainSummary> {
    if !opts.resume {
        cfg.validate()?;
    }
    let start = prepare_run_dir(&cfg, &opts)?;
    start.cfg.validate()?;
    crate::data::out_dir::refuse_inside("--out", &start.run.root, "--data", &start.cfg.data)?;
    let mut device = resolve(start.cfg.device.parse::<DeviceRequest>()?)?;
    if let (true, Device::Cpu { why }) = (
        start.resume && !opts.requested.iter().any(|k| k == "device"),
        &mut device,
    ) {
        *why = "as the run's config.json records".into();
    }
    match &device {
        Device::Cpu { .. } => train_on(&Cpu::at_precision(start.cfg.precision)?, &device, start),
        Device::Cuda { ordinal, .. } => {
            let cuda = crate::backend::cuda::Cuda::new(*ordinal)?;
            if let Some(p) = start.cfg.precision {
                cuda.set_conv_precision(p);
            }
            train_on(&cuda, &device, start)
        }
    }
}

/// The run directory and the configuration a call trains with, before anything is written.
struct RunStart {
    run: RunDir,
    cfg: TrainConfig,
    /// On resume: the state in `last`, when there is one.
    resumed: Option<TrainState>,
    /// On resume: the resumable settings that changed, as "name old -> new".
    changes: Vec<String>,
    /// `--force` over an existing run: its files go once every check has passed.
    replace: bool,
    /// Continuing the run: its `split.json` holds the split.
    resume: bool,
}

/// Refuses to mix runs: a directory holding a run needs `--resume` or `--force`.
fn prepare_run_dir(cfg: &TrainConfig, opts: &RunOptions) -> Result<RunStart> {
    let run = RunDir {
        root: cfg.out.clone(),
    };
    if opts.resume && opts.force {
        return Err(Error::config(
            "resume",
            "--resume continues the run and --force deletes it to start over: pass one of them",
        ));
    }
    let has_run = run.config().exists();
    if opts.resume {
        if !has_run {
            return Err(Error::config(
                "resume",
                format!("{} holds no run to resume", run.root.display()),
            ));
        }
        let saved = TrainConfig::from_run_file(&run.config())?;
        let last = run.checkpoint("last");
        let resumed = if last.exists() {
            Some(read_state(&last)?)
        } else {
            None
        };
        let done = resumed.as_ref().map_or(0, |s| s.epoch);
        let (cfg, changes) = resume_config(&run, saved, cfg, opts, done)?;
        return Ok(RunStart {
            run,
            cfg,
            resumed,
            changes,
            replace: false,
            resume: true,
        });
    }
    refuse_dataset_as_out(&run.root)?;
    if !has_run {
        refuse_foreign_files(&run)?;
    }
    if has_run && !opts.force {
        return Err(Error::config(
            "out",
            format!(
                "{} already holds a run; use --resume to continue it or --force to start over",
                run.root.display()
            ),
        ));
    }
    Ok(RunStart {
        run,
        cfg: cfg.clone(),
        resumed: None,
        changes: Vec::new(),
        replace: has_run,
        resume: false,
    })
}

/// Refuses an `--out` folder that holds a dataset: a run's files (and `--force`'s removal of
/// an older run's) would land among its cases and make it unreadable.
fn refuse_dataset_as_out(out: &Path) -> Result<()> {
    if !out.is_dir() {
        return Ok(());
    }
    match list(out) {
        Ok(crate::data::layout::Listing { dataset, .. }) => Err(Error::config(
            "--out",
            format!(
                "{} is a dataset ({} layout, {} cases), not a run folder: the run's files would \
                 be mixed with its cases; choose a new or empty folder",
                out.display(),
                dataset.layout,
                dataset.cases.len() + dataset.test_cases.len()
            ),
        )),
        Err(_) => Ok(()),
    }
}

/// Refuses an `--out` folder that holds no run (no `config.json`) but files other than a
/// run's own (what an older voxseg left when a run failed before writing its config): the
/// run's files would be mixed with them, and replace any of the same name (`--force` starts
/// a run over, it does not take over a folder of other files).
fn refuse_foreign_files(run: &RunDir) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(&run.root) else {
        return Ok(());
    };
    let (files, dirs) = run.own_entries();
    let own: Vec<PathBuf> = files.into_iter().chain(dirs).collect();
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| !own.contains(&e.path()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != LOCK_FILE && !is_temp_file(name))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    Err(Error::config(
        "--out",
        format!(
            "{} holds files that are not a run's ({}) and no run (no config.json): the run's \
             files would be mixed with these; choose a new or empty folder",
            run.root.display(),
            few(&names)
        ),
    ))
}

/// How a user sets a configuration key: its flag, or the config file for the keys that
/// have none.
fn flag_name(key: &str) -> String {
    match key {
        "time_limit_minutes" => "--time-limit".into(),
        "early_stop_patience" => "--early-stop".into(),
        "deep_supervision" => "--no-deep-supervision".into(),
        "augment" => "--no-augment".into(),
        "folds" => "--fold/--folds".into(),
        "queue_depth" | "foreground_fraction" | "preprocess" | "split" | "val_overlap" => {
            format!("the config's {key}")
        }
        _ => format!("--{}", key.replace('_', "-")),
    }
}

/// A setting's value as a user writes it: strings bare, lists comma-separated, `null` as
/// none, `{"kind": K, ..}` as K and its other fields, other objects as their fields.
fn show(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "none".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(show).collect::<Vec<_>>().join(","),
        Value::Object(o) => {
            let fields = o
                .iter()
                .filter(|(k, _)| *k != "kind")
                .map(|(k, v)| match v {
                    Value::Object(_) => format!("{k} ({})", show(v)),
                    _ => format!("{k} {}", show(v)),
                })
                .collect::<Vec<_>>()
                .join(", ");
            match (o.get("kind"), fields.is_empty()) {
                (Some(kind), true) => show(kind),
                (Some(kind), false) => format!("{} ({fields})", show(kind)),
                (None, _) => fields,
            }
        }
        other => other.to_string(),
    }
}

/// Two objects reduced to the fields in which they differ (a `kind` stays, to name what
/// they are); anything else as it is.
fn differing(
    was: &serde_json::Value,
    now: &serde_json::Value,
) -> (serde_json::Value, serde_json::Value) {
    use serde_json::{Map, Value};
    let (Value::Object(a), Value::Object(b)) = (was, now) else {
        return (was.clone(), now.clone());
    };
    if a.get("kind") != b.get("kind") {
        let kind = |o: &Map<String, Value>| o.get("kind").cloned().unwrap_or(Value::Null);
        return (kind(a), kind(b));
    }
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let (mut x, mut y) = (Map::new(), Map::new());
    for k in keys {
        let (va, vb) = (a.get(k), b.get(k));
        let same = match (va, vb) {
            (Some(va), Some(vb)) => same_json(va, vb),
            _ => false,
        };
        if k == "kind" || !same {
            let (da, db) = differing(va.unwrap_or(&Value::Null), vb.unwrap_or(&Value::Null));
            x.insert(k.clone(), da);
            y.insert(k.clone(), db);
        }
    }
    (Value::Object(x), Value::Object(y))
}

/// A refused change of `key`, as the user asked for it and as the run has it.
fn refusal(key: &str, was: &serde_json::Value, now: &serde_json::Value) -> String {
    use serde_json::Value;
    let on_off = |v: &Value| {
        if v.as_bool() == Some(true) {
            "on"
        } else {
            "off"
        }
    };
    match (key, now) {
        ("folds", Value::Object(f)) => {
            let fold = |v: &Value| match (v.get("index"), v.get("count")) {
                (Some(i), Some(n)) => format!("fold {i} of {n}"),
                _ => "no folds".into(),
            };
            format!(
                "--fold {} --folds {} (the run has {})",
                f.get("index").unwrap_or(&Value::Null),
                f.get("count").unwrap_or(&Value::Null),
                fold(was)
            )
        }
        ("augment", _)
            if serde_json::to_value(crate::data::augment::AugmentSpec::none())
                .ok()
                .as_ref()
                == Some(now) =>
        {
            "--no-augment (the run augments its patches)".into()
        }
        ("deep_supervision", Value::Bool(false))
        | ("dataset_statistics" | "replace_nan", Value::Bool(true)) => {
            format!("{} (the run has it {})", flag_name(key), on_off(was))
        }
        (_, Value::Bool(b)) => format!(
            "the config's {key} {} (the run has it {})",
            if *b { "on" } else { "off" },
            on_off(was)
        ),
        _ => {
            let (was, now) = differing(was, now);
            format!(
                "{} {} (the run has {})",
                flag_name(key),
                show(&now),
                show(&was)
            )
        }
    }
}

/// Equal settings, with floats equal to 12 digits (a value read back from JSON may differ
/// in its last bit from the same value parsed from a flag).
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| same_json(a, b)))
        }
        _ => a == b,
    }
}

/// Whether a requested setting equals the run's: paths compare absolute, modality names
/// without case.
fn same_setting(key: &str, run: &serde_json::Value, asked: &serde_json::Value) -> bool {
    let absolute = |v: &serde_json::Value| {
        v.as_str()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| PathBuf::from(p)))
    };
    match key {
        "data" | "cache" | "split_file" if run.is_string() && asked.is_string() => {
            absolute(run) == absolute(asked)
        }
        "modalities" => {
            let lower = |v: &serde_json::Value| {
                v.as_array().map(|a| {
                    a.iter()
                        .map(|m| m.as_str().unwrap_or_default().to_lowercase())
                        .collect::<Vec<_>>()
                })
            };
            lower(run) == lower(asked)
        }
        _ => same_json(run, asked),
    }
}

/// The run's value of a requested setting and the value asked for. `weight_decay` is the
/// optimiser's; when it is requested, `optimizer` is compared without it.
fn setting_pair(
    key: &str,
    run: &serde_json::Value,
    asked: &serde_json::Value,
    requested: &[String],
) -> (serde_json::Value, serde_json::Value) {
    let get = |v: &serde_json::Value| match key {
        "weight_decay" => v["optimizer"]["weight_decay"].clone(),
        "optimizer" if requested.iter().any(|k| k == "weight_decay") => {
            let mut o = v["optimizer"].clone();
            if let Some(o) = o.as_object_mut() {
                o.remove("weight_decay");
            }
            o
        }
        _ => v.get(key).cloned().unwrap_or_default(),
    };
    let (run, mut asked) = (get(run), get(asked));
    // What training filled in (the orientation it chose, per-dataset statistics from
    // `dataset_statistics`) is not a change where the request leaves it open.
    if let ("preprocess", Some(a), Some(r)) = (key, asked.as_object_mut(), run.as_object()) {
        for (field, open) in [
            ("orientation", serde_json::Value::Null),
            ("statistics", "per_case".into()),
        ] {
            if a.get(field).is_none_or(|v| *v == open) {
                if let Some(v) = r.get(field) {
                    a.insert(field.to_string(), v.clone());
                }
            }
        }
    }
    (run, asked)
}

/// The configuration of a resumed run: the saved one, with the resumable settings the caller
/// asked for; a request to change any other setting is refused, naming each.
fn resume_config(
    run: &RunDir,
    saved: TrainConfig,
    asked: &TrainConfig,
    opts: &RunOptions,
    epochs_done: usize,
) -> Result<(TrainConfig, Vec<String>)> {
    let encode = |c: &TrainConfig| {
        serde_json::to_value(c).map_err(|e| Error::file(run.config(), e.to_string()))
    };
    let (run_json, asked_json) = (encode(&saved)?, encode(asked)?);
    let mut differ = Vec::new();
    let mut keys: Vec<&String> = opts.requested.iter().collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let (was, now) = setting_pair(key, &run_json, &asked_json, &opts.requested);
        // `out` is where the run is; a null asks for the planned value, which the run has.
        if key == "out" || RESUMABLE_SETTINGS.contains(&key.as_str()) || now.is_null() {
            continue;
        }
        if !same_setting(key, &was, &now) {
            differ.push(refusal(key, &was, &now));
        }
    }
    if !differ.is_empty() {
        return Err(Error::config(
            "resume",
            format!(
                "{} cannot change mid-run: {}; resume without them, or start over with --force \
                 instead of --resume",
                run.root.display(),
                differ.join(", ")
            ),
        ));
    }
    let mut cfg = saved.clone();
    cfg.out = asked.out.clone();
    let asks = |key: &str| opts.requested.iter().any(|k| k == key);
    if asks("time_limit_minutes") {
        cfg.time_limit_minutes = asked.time_limit_minutes;
    }
    if asks("early_stop_patience") {
        cfg.early_stop_patience = asked.early_stop_patience;
    }
    if asks("workers") {
        cfg.workers = asked.workers;
    }
    if asks("queue_depth") {
        cfg.queue_depth = asked.queue_depth;
    }
    if asks("val_every") {
        cfg.val_every = asked.val_every;
    }
    if asks("device") {
        cfg.device = asked.device.clone();
    }
    if asks("precision") {
        cfg.precision = asked.precision;
    }
    if asks("epochs") {
        let epochs = asked.epochs;
        if epochs < epochs_done {
            return Err(Error::config(
                "epochs",
                format!(
                    "{epochs} is below the {epochs_done} epochs {} has done: pass --epochs {epochs_done} or more",
                    run.root.display()
                ),
            ));
        }
        cfg.epochs = epochs;
    }
    let new_json = encode(&cfg)?;
    let changes = RESUMABLE_SETTINGS
        .iter()
        .filter(|k| !same_json(&run_json[**k], &new_json[**k]))
        .map(|k| {
            format!(
                "{} {} -> {}",
                flag_name(k),
                show(&run_json[*k]),
                show(&new_json[*k])
            )
        })
        .collect();
    Ok((cfg, changes))
}

/// The training state in a checkpoint's metadata, read from its header alone.
fn read_state(path: &Path) -> Result<TrainState> {
    let bad = |msg: String| Error::file(path, format!("not a voxseg checkpoint: {msg}"));
    let metadata = crate::train::checkpoint::read_checkpoint_metadata(path)?;
    let state = metadata
        .get("state")
        .ok_or_else(|| bad("no training state in the metadata".into()))?;
    serde_json::from_str(state).map_err(|e| bad(format!("training state unreadable: {e}")))
}

/// Removes the files of the run `--force` replaces.
fn remove_run(run: &RunDir) -> Result<()> {
    let (files, dirs) = run.own_entries();
    for file in files {
        remove_if_present(&file)?;
    }
    for dir in dirs {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| Error::io(format!("removing {}", dir.display()), e))?;
        }
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("removing {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))
}

/// The training data in memory, preprocessed.
struct Prepared {
    dataset: Dataset,
    modalities: Vec<String>,
    /// Training cases as patch sources: in memory, or memory-mapped from a cache.
    train: Vec<Arc<dyn PatchSource>>,
    /// Grid (x, y, z) and voxel size of each training case, for planning.
    train_grids: Vec<([usize; 3], [f64; 3])>,
    val: Vec<PreprocessedCase>,
    preprocess: crate::data::preprocess::PreprocessSpec,
}

/// Training cases as patch sources.
type Sources = Vec<Arc<dyn PatchSource>>;
/// Grid (x, y, z) and voxel size per case.
type Grids = Vec<([usize; 3], [f64; 3])>;

/// The file in a cache folder naming the modalities it holds, in channel order.
pub const CACHE_MODALITIES: &str = "modalities.json";

fn in_memory(cases: Vec<PreprocessedCase>) -> Result<(Sources, Grids)> {
    let grids = cases.iter().map(|c| (c.dims(), c.spacing)).collect();
    let sources = cases
        .into_iter()
        .map(|c| InMemoryCase::new(c).map(|s| Arc::new(s) as Arc<dyn PatchSource>))
        .collect::<Result<_>>()?;
    Ok((sources, grids))
}

/// Training and validation cases from a `voxseg preprocess` cache of the dataset in the
/// folder `data`, checked against the run.
fn from_cache(
    dir: &Path,
    data: &Path,
    modalities: &[String],
    train_ids: &[String],
    val_ids: &[String],
) -> Result<CacheParts> {
    let names_path = dir.join(CACHE_MODALITIES);
    let names: Vec<String> = serde_json::from_slice(
        &std::fs::read(&names_path)
            .map_err(|e| Error::io(format!("reading {}", names_path.display()), e))?,
    )
    .map_err(|e| Error::file(&names_path, format!("not a modality list: {e}")))?;
    if names != modalities {
        return Err(Error::config(
            "cache",
            format!(
                "{} holds modalities {names:?}, the run asks for {modalities:?}",
                dir.display()
            ),
        ));
    }
    let (spec, cases) = crate::data::cache::open_cache(dir, data)?;
    let mut by_id: std::collections::HashMap<String, crate::data::cache::CachedCase> = cases
        .into_iter()
        .map(|c| (c.sidecar().id.clone(), c))
        .collect();
    let mut take = |id: &String| {
        by_id
            .remove(id)
            .ok_or_else(|| Error::data(id.as_str(), format!("not in the cache {}", dir.display())))
    };
    let train_cached = train_ids
        .iter()
        .map(&mut take)
        .collect::<Result<Vec<_>>>()?;
    let val_cached = val_ids.iter().map(&mut take).collect::<Result<Vec<_>>>()?;
    let cases_orientation = if spec.orientation.is_none() {
        cases_orientation(dir, train_cached.iter().chain(&val_cached))?
    } else {
        None
    };
    let grids = train_cached
        .iter()
        .map(|c| (c.sidecar().dims, c.sidecar().spacing))
        .collect();
    let train = train_cached
        .into_iter()
        .map(|c| Arc::new(c) as Arc<dyn PatchSource>)
        .collect();
    let val = val_cached.iter().map(|c| c.to_preprocessed()).collect();
    Ok((train, grids, val, spec, cases_orientation))
}

/// The orientation of cases a cache made without a named one kept as stored: the one they
/// share, or an error when they differ, as they would be trained on together with their
/// axes mixed (training without a cache reorients them itself). None when a case's is not
/// recorded (caches from before orientations were).
fn cases_orientation<'a>(
    dir: &Path,
    cases: impl Iterator<Item = &'a crate::data::cache::CachedCase>,
) -> Result<Option<String>> {
    let mut codes = Vec::new();
    let mut unrecorded = false;
    for case in cases {
        match &case.sidecar().orientation {
            Some(code) => codes.push(code.clone()),
            None => unrecorded = true,
        }
    }
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for code in &codes {
        *counts.entry(code).or_default() += 1;
    }
    if counts.len() > 1 {
        let found: Vec<String> = counts
            .iter()
            .map(|(code, n)| format!("{code} ({n})"))
            .collect();
        // The orientation training without the cache would choose.
        let most = majority(&codes).unwrap_or_default();
        return Err(Error::config(
            "cache",
            format!(
                "{} keeps its cases as stored, in orientations {}: training on them together \
                 would mix their axes. Remake it with \"preprocess\": {{\"orientation\": \
                 \"{most}\"}} in the --config of `voxseg preprocess` and of the run, or train \
                 without --cache (it then reorients the cases itself)",
                dir.display(),
                found.join(", ")
            ),
        ));
    }
    Ok(codes.into_iter().next().filter(|_| !unrecorded))
}

/// A cache holds cases already preprocessed: the run's own preprocessing settings must be
/// the ones the cache was made with, or the run would silently train on something else.
/// `cached` is the cache's own preprocessing, `recorded` the same with the orientation its
/// cases share filled in: a run resumed after recording it asks for `recorded`.
fn check_cache_preprocessing(
    cfg: &TrainConfig,
    dir: &Path,
    cached: &crate::data::preprocess::PreprocessSpec,
    recorded: &crate::data::preprocess::PreprocessSpec,
) -> Result<()> {
    if cfg.dataset_statistics {
        return Err(Error::config(
            "cache",
            format!(
                "{} holds cases already normalised; per-dataset statistics \
                 (--dataset-statistics) are computed from the training cases themselves: \
                 drop --cache or --dataset-statistics",
                dir.display()
            ),
        ));
    }
    if cached != &cfg.preprocess && recorded != &cfg.preprocess {
        let json = |s: &crate::data::preprocess::PreprocessSpec| {
            serde_json::to_string(s).unwrap_or_else(|e| e.to_string())
        };
        return Err(Error::config(
            "cache",
            format!(
                "{} was preprocessed with {}, the run asks for {}: make the cache with \
                 `voxseg preprocess --config` and the run's config, or train without --cache",
                dir.display(),
                json(cached),
                json(&cfg.preprocess)
            ),
        ));
    }
    Ok(())
}

/// The training cases, their grids, the validation cases, the cache's preprocessing and,
/// when it names no orientation, the one its cases share.
type CacheParts = (
    Sources,
    Grids,
    Vec<PreprocessedCase>,
    crate::data::preprocess::PreprocessSpec,
    Option<String>,
);

fn load_cases(
    dataset: &Dataset,
    ids: &[String],
    channels: &[usize],
    nan: NanPolicy,
) -> Result<Vec<(crate::data::CaseData, NiftiHeaderInfo)>> {
    ids.par_iter()
        .map(|id| {
            let files = dataset.cases.iter().find(|c| &c.id == id).ok_or_else(|| {
                Error::data(id.as_str(), "listed in split.json but not in the dataset")
            })?;
            load_case(dataset, files, channels, nan)
        })
        .collect()
}

/// (id, orientation, spacing) of loaded cases, for [`grid_warnings`].
fn grids_of(
    ids: &[String],
    cases: &[(CaseData, NiftiHeaderInfo)],
) -> Vec<(String, String, [f64; 3])> {
    ids.iter()
        .zip(cases)
        .map(|(id, (case, header))| (id.clone(), orientation(&header.affine()), case.spacing()))
        .collect()
}

/// Warns (one line each) when the cases differ in spacing, unless they are resampled to
/// one, and notes that they are reoriented to `orientation` when they differ in that.
fn warn_of_mixed_grids(
    grids: &[(String, String, [f64; 3])],
    resampled: bool,
    orientation: Option<&str>,
) {
    let grids: Vec<(&str, &str, [f64; 3])> = grids
        .iter()
        .map(|(id, code, spacing)| (id.as_str(), code.as_str(), *spacing))
        .collect();
    for w in grid_warnings(&grids, orientation) {
        match orientation {
            Some(code) if w.starts_with(ORIENTATIONS_DIFFER) => {
                eprintln!("note: {w}; this run trains in {code}")
            }
            _ if resampled && w.contains("target_spacing") => {}
            _ => eprintln!("warning: {w}"),
        }
    }
}

/// The labelled dataset, the channels the run reads and their modality names.
fn open_dataset(cfg: &TrainConfig) -> Result<(Dataset, Vec<usize>, Vec<String>)> {
    let listing = list(&cfg.data)?;
    let channels = listing.dataset.modalities_or_all(&cfg.modalities)?;
    let dataset = listing.require(&channels)?;
    dataset.require_labels()?;
    cfg.target.validate(&dataset.label_spec)?;
    let modalities = channels
        .iter()
        .map(|&i| dataset.modalities[i].clone())
        .collect();
    Ok((dataset, channels, modalities))
}

/// The split of a new run (a split file, a cross-validation fold, or the seed and fractions),
/// or a resumed run's `split.json`.
fn run_split(cfg: &TrainConfig, dataset: &Dataset, saved: Option<&Path>) -> Result<Split> {
    let ids: Vec<String> = dataset.cases.iter().map(|c| c.id.clone()).collect();
    if ids.len() < 2 {
        return Err(Error::data(
            cfg.data.display().to_string(),
            format!(
                "{} case(s): training needs at least 2 (train and validation)",
                ids.len()
            ),
        ));
    }
    match (
        saved.filter(|p| p.exists()),
        cfg.split_file.as_deref(),
        cfg.folds,
    ) {
        (Some(path), _, _) => Split::load(path, &ids),
        (None, Some(path), fold) => {
            let fold = fold.map(|f| f.index);
            let (split, notes) =
                Split::from_split_file(path, &ids, fold, dataset.test_cases.len())?;
            for note in notes {
                eprintln!("note: {note}");
            }
            Ok(split)
        }
        (None, None, Some(f)) => Split::fold(&ids, cfg.split, cfg.seed, f.count, f.index),
        (None, None, None) => Split::by_fractions(&ids, cfg.split, cfg.seed),
    }
}

/// Reads and prepares the training and validation cases; the split is written later, with
/// the rest of the run's files.
fn prepare_data(cfg: &TrainConfig, saved_split: Option<&Path>) -> Result<(Prepared, Split)> {
    let (dataset, channels, modalities) = open_dataset(cfg)?;
    let split = run_split(cfg, &dataset, saved_split)?;
    // Only the training and validation ids are handed on: the test cases are never read here.
    let tv = split.train_val();
    if let Some(dir) = &cfg.cache {
        let (train, train_grids, val, stored, cases_orientation) =
            from_cache(dir, &dataset.root, &modalities, tv.train(), tv.val())?;
        // Cases kept as stored, all in one orientation: the run records it, as training
        // without the cache does, so that prediction brings inputs stored otherwise to it.
        let preprocess = crate::data::preprocess::PreprocessSpec {
            orientation: stored.orientation.clone().or(cases_orientation),
            ..stored.clone()
        };
        check_cache_preprocessing(cfg, dir, &stored, &preprocess)?;
        return Ok((
            Prepared {
                dataset,
                modalities,
                train,
                train_grids,
                val,
                preprocess,
            },
            split,
        ));
    }
    let nan = if cfg.replace_nan {
        NanPolicy::ReplaceWithZero
    } else {
        NanPolicy::Error
    };
    let mut spec = cfg.preprocess.clone();
    // The orientation comes from the training and validation cases together (the same for
    // every fold), so the validation cases are read first and kept until the end. A run
    // resumed from a config.json of before orientations were recorded keeps its cases as
    // stored, as it started.
    let val_loaded = load_cases(&dataset, tv.val(), &channels, nan)?;
    let train_loaded = load_cases(&dataset, tv.train(), &channels, nan)?;
    let mut grids = grids_of(tv.train(), &train_loaded);
    let val_grids = grids_of(tv.val(), &val_loaded);
    let codes: Vec<String> = grids
        .iter()
        .chain(&val_grids)
        .map(|(_, code, _)| code.clone())
        .collect();
    let requested = cfg.preprocess.orientation.as_deref();
    if saved_split.is_none() || requested.is_some() {
        spec.orientation = training_orientation(&codes, requested);
    }
    let train_raw = train_loaded
        .into_par_iter()
        .map(|(case, header)| {
            let moved = reorient(&case, &header, spec.orientation.as_deref())?;
            Ok(moved.map_or(case, |(moved, _)| moved))
        })
        .collect::<Result<Vec<CaseData>>>()?;
    if cfg.dataset_statistics {
        spec.statistics = Statistics::PerDataset(dataset_stats(train_raw.iter())?);
    }
    let train_cases = train_raw
        .par_iter()
        .map(|c| preprocess(c, &spec))
        .collect::<Result<Vec<_>>>()?;
    drop(train_raw);
    let (train, train_grids) = in_memory(train_cases)?;
    let val = val_loaded
        .into_par_iter()
        .map(|(case, header)| {
            let moved = reorient(&case, &header, spec.orientation.as_deref())?;
            preprocess(moved.as_ref().map_or(&case, |(moved, _)| moved), &spec)
        })
        .collect::<Result<Vec<_>>>()?;
    grids.extend(val_grids);
    warn_of_mixed_grids(
        &grids,
        spec.target_spacing.is_some(),
        spec.orientation.as_deref(),
    );
    Ok((
        Prepared {
            dataset,
            modalities,
            train,
            train_grids,
            val,
            preprocess: spec,
        },
        split,
    ))
}

fn median(mut v: Vec<usize>) -> usize {
    v.sort_unstable();
    v[v.len() / 2]
}

fn summarise(
    grids: &[([usize; 3], [f64; 3])],
    in_channels: usize,
    out_channels: usize,
) -> DataSummary {
    let axis = |a: usize| grids.iter().map(|(d, _)| d[2 - a]).collect::<Vec<_>>();
    let spacing = |a: usize| {
        let mut v: Vec<f64> = grids.iter().map(|(_, s)| s[2 - a]).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(1.0)
    };
    DataSummary {
        median_shape: [median(axis(0)), median(axis(1)), median(axis(2))],
        min_shape: [0, 1, 2].map(|a| axis(a).into_iter().min().unwrap_or(0)),
        median_spacing: [spacing(0), spacing(1), spacing(2)],
        in_channels,
        out_channels,
    }
}

fn plan_device(device: &Device, precision: Option<ConvPrecision>) -> Result<PlanDevice> {
    Ok(match device {
        // About 2 s per step on a 2-core machine with AVX-512 at the conv speeds measured.
        Device::Cpu { .. } => PlanDevice::Cpu {
            step_gflop_budget: 12.0 * rayon::current_num_threads() as f64,
        },
        Device::Cuda { ordinal, .. } => {
            let cuda = crate::backend::cuda::Cuda::new(*ordinal)?;
            let precision = precision.map_or_else(|| cuda.conv_precision(), Ok)?;
            PlanDevice::Gpu {
                free_bytes: cuda.free_memory()?,
                packed_bytes: precision.packed_bytes().unwrap_or(0) as u32,
            }
        }
    })
}

/// The largest cropped size (D, H, W) over the training cases.
fn largest_grid(grids: &[([usize; 3], [f64; 3])]) -> [usize; 3] {
    [2, 1, 0].map(|a| grids.iter().map(|(d, _)| d[a]).max().unwrap_or(0))
}

/// Fills the planned values the configuration left open, and checks the patch and depth.
/// Returns the plan and, when the patch leaves the U-Net shallower than planned, a note
/// that says so.
fn resolve_plan(
    cfg: &mut TrainConfig,
    data: &DataSummary,
    largest: [usize; 3],
    device: &Device,
) -> Result<(Plan, Option<String>)> {
    let mut p = plan(data, &plan_device(device, cfg.precision)?)?;
    let planned_depth = p.depth;
    let mut stages = p.stages();
    if let Some(patch) = cfg.patch {
        // Smaller cases are padded, but a patch larger than every case is a mistake.
        if (0..3).any(|a| patch[a] > largest[a]) {
            return Err(Error::config(
                "patch",
                format!("{patch:?} is larger than every cropped case (the largest is {largest:?})"),
            ));
        }
        p.patch = patch;
        stages = stages_for(patch, data.median_spacing);
    }
    let fits = stages.depth();
    let min_patch = |d: usize| match min_patch_for_depth(d, data.median_spacing) {
        [a, b, c] if a == b && b == c => a.to_string(),
        [a, b, c] => format!("{a},{b},{c}"),
    };
    let mut note = None;
    match cfg.depth {
        Some(d) if cfg.model == ModelKind::Unet && d > fits => {
            return Err(Error::config(
                "depth",
                format!(
                    "{d} does not fit the patch {:?}: each downsampling halves the axes it pools \
                     and the deepest stage needs at least 4 voxels on them, so it allows depth \
                     {fits}; use --patch >= {} for depth {d}, or a lower --depth",
                    p.patch,
                    min_patch(d)
                ),
            ));
        }
        Some(d) if cfg.model == ModelKind::Fcn && d > fcn::depth_for_patch(p.patch) => {
            return Err(Error::config(
                "depth",
                format!(
                    "{d} does not fit the patch {:?}: the FCN halves every axis at each of its \
                     {} levels and the deepest needs at least 4 voxels on each, so it allows \
                     depth {}; use --patch >= {} for depth {d}, or a lower --depth",
                    p.patch,
                    d - 1,
                    fcn::depth_for_patch(p.patch),
                    4 << (d - 1)
                ),
            ));
        }
        // The FCN halves every axis, so its shortest one may allow less than the U-Net's.
        None if cfg.model == ModelKind::Fcn => {
            cfg.depth = Some(fits.min(fcn::depth_for_patch(p.patch)));
        }
        None if fits < planned_depth => {
            let downsamplings = match fits - 1 {
                0 => "no downsampling".to_string(),
                1 => "1 downsampling".to_string(),
                n => format!("{n} downsamplings"),
            };
            note = Some(format!(
                "depth {fits}: a patch of {:?} allows {downsamplings}; use --patch >= {} for depth {planned_depth}",
                p.patch,
                min_patch(planned_depth)
            ));
        }
        _ => {}
    }
    stages = match cfg.depth {
        Some(d) if d <= fits => stages.truncated(d),
        // Only the FCN gets here; it halves every axis at each level.
        Some(d) => Stages::isotropic(d),
        None => stages,
    };
    p.set_stages(&stages);
    cfg.patch = Some(p.patch);
    p.batch = *cfg.batch.get_or_insert(p.batch);
    // Explicit widths win over planned ones: a planned first stage never exceeds an
    // explicit widest one, and a planned widest stage never narrows an explicit first
    // one (`validate` refuses an explicit pair that disagrees).
    if let Some(max) = cfg.max_features {
        p.base_features = p.base_features.min(max);
    }
    p.base_features = *cfg.features.get_or_insert(p.base_features);
    p.max_features = cfg
        .max_features
        .unwrap_or(p.max_features)
        .max(p.base_features);
    cfg.max_features = Some(p.max_features);
    p.depth = *cfg.depth.get_or_insert(p.depth);
    let spec = model_spec(cfg, &p, data.in_channels, data.out_channels);
    (p.step_gflop, p.activation_bytes) = model_estimate(&spec, p.patch, p.batch);
    Ok((p, note))
}

/// A resumed run keeps the U-Net stages its checkpoints were written with: a run started
/// before per-axis pooling was planned has isotropic ones whatever its data's spacing.
/// Returns whether the stages changed (the plan's estimates are then stale).
fn keep_checkpoint_stages(p: &mut Plan, model_card: &Path) -> bool {
    if let Ok(ModelCard {
        model: ModelSpec::Unet(net),
        ..
    }) = ModelCard::load(model_card)
    {
        if net.depth == p.depth && net.stages() != p.stages() {
            p.set_stages(&net.stages());
            return true;
        }
    }
    false
}

/// Free memory as Linux counts it (`MemAvailable`), in bytes; `None` elsewhere.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One training step's peak memory on `device`, by the planner's models: on a GPU the
/// pool's peak (`gpu_step_peak_bytes`) and the weights with their gradients and optimiser
/// values; on the CPU `step_memory_bytes`, the loader's queued batches included.
fn step_memory(cfg: &TrainConfig, p: &Plan, spec: &ModelSpec, device: &PlanDevice) -> u64 {
    let slots = optimizer_slots(cfg);
    match device {
        PlanDevice::Gpu { packed_bytes, .. } => {
            let weights = model_parameters(spec) * 4.0 * (2 + slots) as f64;
            (gpu_step_peak_bytes(p.activation_bytes, *packed_bytes) + weights).min(u64::MAX as f64)
                as u64
        }
        PlanDevice::Cpu { .. } => {
            let queued = cfg
                .queue_depth
                .saturating_add(cfg.workers)
                .saturating_add(1);
            step_memory_bytes(p, spec, slots, queued)
        }
    }
}

/// On the CPU, refuses a step that would not fit in the machine's available memory, before
/// the model or the loader allocate anything (a GPU run fails cleanly on its own). It runs
/// once the cases are loaded (planning needs their sizes), so the memory they take is
/// already out of what is available.
fn check_memory(cfg: &TrainConfig, p: &Plan, spec: &ModelSpec, device: &Device) -> Result<()> {
    let (Device::Cpu { .. }, Some(available)) = (device, available_memory()) else {
        return Ok(());
    };
    let need = step_memory(cfg, p, spec, &plan_device(device, cfg.precision)?);
    if need > available {
        return Err(Error::config(
            "batch",
            format!(
                "{} need about {:.1} GiB; this machine has {:.1} GiB available: lower --batch, \
                 --patch or --features",
                step_sizes(p),
                gib(need),
                gib(available)
            ),
        ));
    }
    Ok(())
}

/// Values the optimiser keeps per parameter: SGD's momentum, or Adam's two moments.
fn optimizer_slots(cfg: &TrainConfig) -> usize {
    match cfg.optimizer {
        crate::optim::OptimizerSpec::Sgd { .. } => 1,
        _ => 2,
    }
}

/// On a GPU, a warning when the step's pool peak, as the planner models it
/// (`gpu_step_peak_bytes`), would not fit in the device's free memory: a patch, batch or
/// width given on the command line can ask for more than the plan would have chosen. A
/// warning, not a refusal: the model is an estimate, and the run may still fit.
fn gpu_memory_warning(
    cfg: &TrainConfig,
    p: &Plan,
    spec: &ModelSpec,
    device: &Device,
) -> Result<Option<String>> {
    let gpu = plan_device(device, cfg.precision)?;
    let PlanDevice::Gpu { free_bytes, .. } = gpu else {
        return Ok(None);
    };
    Ok(memory_shortfall(
        p,
        step_memory(cfg, p, spec, &gpu),
        free_bytes,
    ))
}

/// The warning of `gpu_memory_warning` for a step needing `need` bytes of `free`.
fn memory_shortfall(p: &Plan, need: u64, free: u64) -> Option<String> {
    if need <= free {
        return None;
    }
    Some(format!(
        "{} need about {:.1} GiB of GPU memory; the GPU has {:.1} GiB free, so training may \
         run out of memory: lower --batch, --patch or --features (`voxseg plan` shows what \
         the planner fits)",
        step_sizes(p),
        gib(need),
        gib(free)
    ))
}

/// The sizes of `p` that set a step's memory, as the memory messages name them.
fn step_sizes(p: &Plan) -> String {
    format!(
        "batch {}, patch {:?} and widths {} to {}",
        p.batch, p.patch, p.base_features, p.max_features
    )
}

/// Why turning deep supervision off changes nothing, where it does not: a U-Net of fewer
/// than 4 stages has no auxiliary outputs (they come from the decoder's stages 1 to
/// depth - 3), and the FCN has none at all.
fn deep_supervision_note(cfg: &TrainConfig, spec: &ModelSpec) -> Option<String> {
    if cfg.deep_supervision {
        return None;
    }
    match spec {
        ModelSpec::Unet(net) if net.depth < 4 => Some(format!(
            "deep supervision off changes nothing here: a U-Net of {} stages has no auxiliary \
             outputs (they start at 4 stages, --depth)",
            net.depth
        )),
        ModelSpec::Unet(_) => None,
        ModelSpec::Fcn(_) => Some(
            "deep supervision off changes nothing here: the FCN has no auxiliary outputs".into(),
        ),
    }
}

fn model_spec(cfg: &TrainConfig, p: &Plan, in_channels: usize, out_channels: usize) -> ModelSpec {
    let features = cfg.features.unwrap_or(32);
    match cfg.model {
        ModelKind::Unet => ModelSpec::Unet(UNetConfig {
            in_channels,
            out_channels,
            base_features: features,
            max_features: cfg.max_features.unwrap_or(320).max(features),
            depth: cfg.depth.unwrap_or(5),
            convs_per_stage: 2,
            norm: cfg.norm,
            activation: Activation::LeakyRelu { slope: 0.01 },
            downsample: Downsample::StridedConv,
            upsample: Upsample::TransposedConv,
            deep_supervision: cfg.deep_supervision,
            dropout: cfg.dropout,
            init: Init::HeNormal,
            strides: p.strides.clone(),
            kernels: p.kernels.clone(),
        }),
        ModelKind::Fcn => ModelSpec::Fcn(FcnConfig {
            in_channels,
            out_channels,
            features,
            levels: cfg.depth.unwrap_or(3).saturating_sub(1),
            blocks_per_level: 2,
            norm: cfg.norm,
            activation: Activation::LeakyRelu { slope: 0.01 },
            dropout: cfg.dropout,
            init: Init::HeNormal,
        }),
    }
}

/// The label map of a batch at an auxiliary output's resolution: output voxel i takes input
/// voxel floor((i + 0.5) * from / to), the centre of its block (PyTorch's 'nearest-exact',
/// as nnU-Net downsamples its deep-supervision targets). The block's first voxel would sit
/// 1, 3 and 7 voxels from where the Keras-padded strided convolutions centre the 2x, 4x and
/// 8x outputs' voxels (on the block's last voxel); its centre sits 0, 1 and 3 away.
fn downsample_labels(labels: &[u8], n: usize, from: [usize; 3], to: [usize; 3]) -> Vec<u8> {
    if from == to {
        return labels.to_vec();
    }
    let pick = |i: usize, a: usize| ((2 * i + 1) * from[a] / (2 * to[a])).min(from[a] - 1);
    let mut out = Vec::with_capacity(n * to.iter().product::<usize>());
    for b in 0..n {
        for z in 0..to[0] {
            for y in 0..to[1] {
                for x in 0..to[2] {
                    out.push(
                        labels[((b * from[0] + pick(z, 0)) * from[1] + pick(y, 1)) * from[2]
                            + pick(x, 2)],
                    );
                }
            }
        }
    }
    out
}

fn make_target<B: Backend>(
    backend: &B,
    target: &TargetSpec,
    spec: &LabelSpec,
    labels: &[u8],
    n: usize,
    dhw: [usize; 3],
) -> Result<Target<B>> {
    let shape = [n, dhw[0], dhw[1], dhw[2]];
    Ok(match target {
        TargetSpec::Classes => {
            let idx: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
            Target::Classes(Tensor::from_f32(backend, shape, &idx)?)
        }
        _ => {
            let k = target.channels(spec);
            Target::Regions(Tensor::from_f32(
                backend,
                [n, dhw[0], dhw[1], dhw[2], k],
                &target.encode(spec, labels)?,
            )?)
        }
    })
}

/// SSIM's window must fit inside every output the loss scores ('valid' positions only):
/// checked before the run's files are written, not at the first step.
fn check_ssim_window(cfg: &TrainConfig, plan: &Plan, spec: &ModelSpec) -> Result<()> {
    let LossSpec::Ssim(opts) = &cfg.loss else {
        return Ok(());
    };
    let sizes = match spec {
        ModelSpec::Unet(net) => net.supervised_sizes(plan.patch),
        ModelSpec::Fcn(_) => vec![plan.patch],
    };
    let window = opts.window_size();
    let Some(small) = sizes.iter().find(|s| s.iter().any(|&a| a < window)) else {
        return Ok(());
    };
    let fit = sizes.iter().flatten().min().copied().unwrap_or(0);
    let deep = if sizes.len() > 1 {
        ", or --no-deep-supervision (the smaller outputs' loss)"
    } else {
        ""
    };
    Err(Error::config(
        "loss.window.size",
        format!(
            "a window of {window} voxels does not fit an output of {small:?} the loss scores \
             (patch {:?}): use a window of at most {fit}, a larger --patch{deep}",
            plan.patch
        ),
    ))
}

/// Deep-supervision weights: 1/2^i over the outputs, normalised (nnU-Net).
fn supervision_weights(outputs: usize) -> Vec<f64> {
    let raw: Vec<f64> = (0..outputs).map(|i| 0.5f64.powi(i as i32)).collect();
    let sum: f64 = raw.iter().sum();
    raw.into_iter().map(|w| w / sum).collect()
}

struct Stepper<'a, B: Backend> {
    backend: &'a B,
    cfg: &'a TrainConfig,
    label_spec: &'a LabelSpec,
}

impl<B: Backend> Stepper<'_, B> {
    /// One optimisation step on `batch`; returns the loss and the gradients it applied.
    fn step(
        &self,
        model: &mut Model<B>,
        opt: &mut dyn Optimizer<B>,
        batch: &Batch,
        step: u64,
        lr: f64,
    ) -> Result<(f64, Gradients<B>)> {
        let [d, h, w] = batch.patch;
        let x = Tensor::from_f32(
            self.backend,
            [batch.n, d, h, w, batch.channels],
            &batch.images,
        )?;
        let tape = Tape::new();
        let w_seed = philox4x32(
            [step as u32, (step >> 32) as u32, 0xD2, 0],
            [self.cfg.seed as u32, (self.cfg.seed >> 32) as u32],
        );
        let ctx = Ctx::train(
            tape.clone(),
            (w_seed[0] as u64) | ((w_seed[1] as u64) << 32),
        );
        let outputs = model.forward(&Var::constant(x), &ctx)?;
        let weights = supervision_weights(outputs.len());
        let mut total: Option<Var<B>> = None;
        for (out, wt) in outputs.iter().zip(weights) {
            let [_, od, oh, ow, _] = out.shape().ndhwc("train")?;
            let labels = downsample_labels(&batch.labels, batch.n, batch.patch, [od, oh, ow]);
            let target = make_target(
                self.backend,
                &self.cfg.target,
                self.label_spec,
                &labels,
                batch.n,
                [od, oh, ow],
            )?;
            let term = self.cfg.loss.compute(out, &target)?.scale(wt)?;
            total = Some(match total {
                Some(t) => t.add(&term)?,
                None => term,
            });
        }
        let mut loss =
            total.ok_or_else(|| Error::shape("train", "the model produced no output"))?;
        if self.cfg.l1 > 0.0 || self.cfg.l2 > 0.0 {
            let params = model.params();
            loss = loss.add(&l1_l2_penalty(&params, &tape, self.cfg.l1, self.cfg.l2)?)?;
        }
        let loss = check_finite("training loss", loss)?;
        let value = loss.value().item()?;
        let mut grads = tape.backward(&loss)?;
        if self.cfg.grad_clip > 0.0 {
            clip_grad_norm(&mut grads, self.cfg.grad_clip)?;
        }
        let mut params = model.params_mut();
        opt.step(&mut params, &grads, lr)?;
        Ok((value, grads))
    }
}

/// The names of the scored regions when no validation case holds a voxel of any of them
/// (each case's Dice is then 1 for an empty prediction and 0 for any other), else none.
fn without_foreground(
    val: &[PreprocessedCase],
    target: &TargetSpec,
    spec: &LabelSpec,
) -> Option<String> {
    let regions = scored_regions(target, spec);
    let foreground = |c: &u8| regions.iter().any(|(_, classes)| classes.contains(c));
    let empty = val.iter().all(|case| {
        case.label
            .as_ref()
            .is_none_or(|l| !l.data.iter().any(foreground))
    });
    empty.then(|| {
        regions
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join("/")
    })
}

/// Regions (or classes) scored in validation, as sets of internal classes.
pub fn scored_regions(target: &TargetSpec, spec: &LabelSpec) -> Vec<(String, Vec<u8>)> {
    match target {
        TargetSpec::Regions => spec
            .regions()
            .iter()
            .map(|r| (r.name.clone(), r.classes.clone()))
            .collect(),
        TargetSpec::Classes => spec
            .classes()
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, c)| (c.name.clone(), vec![i as u8]))
            .collect(),
        TargetSpec::Class(_) => {
            let probe = target.decode(spec, &[1.0]).unwrap_or_default();
            let class = probe.first().copied().unwrap_or(1);
            vec![(spec.classes()[class as usize].name.clone(), vec![class])]
        }
    }
}

/// The device-side decision and counts that reproduce `target.decode` on the probabilities
/// of `k` logit channels, scored over `regions` (see [`scored_regions`]).
fn confusion_spec(
    target: &TargetSpec,
    spec: &LabelSpec,
    regions: &[(String, Vec<u8>)],
    k: usize,
) -> Result<ConfusionSpec> {
    let decision = match target {
        TargetSpec::Classes => Decision::Argmax,
        // Sigmoid channels over 0.5 paint in order: each channel's paint is what decode
        // gives a voxel where only that channel is on.
        TargetSpec::Regions | TargetSpec::Class(_) => Decision::Paint(
            (0..k)
                .map(|ch| {
                    let mut row = vec![0.0; k];
                    row[ch] = 1.0;
                    Ok(target.decode(spec, &row)?[0])
                })
                .collect::<Result<_>>()?,
        ),
    };
    let classes: Vec<Vec<u8>> = regions.iter().map(|(_, c)| c.clone()).collect();
    ConfusionSpec::new(decision, k, &classes)
}

/// An RGB image with its width and height.
type Picture = (Vec<u8>, usize, usize);

struct Validator<'a, B: Backend> {
    backend: &'a B,
    cfg: &'a TrainConfig,
    label_spec: &'a LabelSpec,
    window: SlidingWindow,
}

impl<B: Backend> Validator<'_, B> {
    /// Sliding-window prediction of every validation case; Dice per region, the loss over
    /// whole cases, and a picture of the first case.
    fn run(
        &self,
        model: &mut Model<B>,
        cases: &[PreprocessedCase],
    ) -> Result<(Validation, Option<Picture>)> {
        let regions = scored_regions(&self.cfg.target, self.label_spec);
        let k = model.spec().out_channels();
        let confusion = confusion_spec(&self.cfg.target, self.label_spec, &regions, k)?;
        let mut dice_sums = vec![0.0; regions.len()];
        let mut loss_sum = 0.0;
        let mut picture = None;
        for (i, case) in cases.iter().enumerate() {
            let label = case
                .label
                .as_ref()
                .ok_or_else(|| Error::data(case.id.as_str(), "validation case has no label"))?;
            let [x, y, z] = case.dims();
            let image = interleave_channels(&case.channels)?;
            let image = Tensor::from_f32(self.backend, [1, z, y, x, case.channels.len()], &image)?;
            // Prediction, decisions and counts on the backend: from a device only the
            // counts and the loss return (and the first case's logits, for its picture).
            let logits_t = predict_volume(model, &image, &self.window)?;
            let classes: Vec<f32> = label.data.iter().map(|&c| f32::from(c)).collect();
            let classes = Tensor::from_f32(self.backend, [z * y * x], &classes)?;
            let counts =
                self.backend
                    .region_confusion(logits_t.storage(), classes.storage(), &confusion)?;
            for (sum, c) in dice_sums.iter_mut().zip(&counts) {
                // Confusion::dice scores both-empty as 1 (the BraTS rule).
                *sum += c.dice();
            }
            let target = make_target(
                self.backend,
                &self.cfg.target,
                self.label_spec,
                &label.data,
                1,
                [z, y, x],
            )?;
            loss_sum += self
                .cfg
                .loss
                .compute(&Var::constant(logits_t.clone()), &target)?
                .value()
                .item()?;
            if i == 0 {
                let logits = logits_t.to_vec_f32()?;
                let probs = probabilities(&self.cfg.target, &logits, k);
                let pred = self.cfg.target.decode(self.label_spec, &probs)?;
                let classes = self.label_spec.class_names();
                picture = Some(captioned_overlay(
                    &case.channels[0].data,
                    case.dims(),
                    case.spacing,
                    Some(&pred),
                    Some(&label.data),
                    &classes,
                )?);
            }
        }
        let n = cases.len().max(1) as f64;
        let dice: Vec<(String, f64)> = regions
            .iter()
            .zip(&dice_sums)
            .map(|((name, _), s)| (name.clone(), s / n))
            .collect();
        let mean_dice = dice.iter().map(|(_, d)| d).sum::<f64>() / dice.len().max(1) as f64;
        Ok((
            Validation {
                loss: loss_sum / n,
                dice,
                mean_dice,
            },
            picture,
        ))
    }
}

fn save_state<B: Backend>(
    path: &Path,
    identity: &CheckpointIdentity,
    model: &Model<B>,
    opt: &dyn Optimizer<B>,
    state: &TrainState,
) -> Result<()> {
    let mut tensors = Vec::new();
    for (name, t) in model.named_tensors() {
        tensors.push((format!("model/{name}"), t.dims().to_vec(), t.to_vec_f32()?));
    }
    for (name, t) in opt.state() {
        tensors.push((format!("optim/{name}"), t.dims().to_vec(), t.to_vec_f32()?));
    }
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), CARD_FORMAT.to_string());
    meta.insert(
        "model".to_string(),
        serde_json::to_string(&model.spec()).map_err(|e| Error::file(path, e.to_string()))?,
    );
    meta.insert(
        "state".to_string(),
        serde_json::to_string(state).map_err(|e| Error::file(path, e.to_string()))?,
    );
    meta.insert("optimizer".to_string(), opt.kind().to_string());
    meta.insert(
        CHECKPOINT_IDENTITY_KEY.to_string(),
        serde_json::to_string(identity).map_err(|e| Error::file(path, e.to_string()))?,
    );
    save_checkpoint(path, &tensors, &meta)
}

/// Loads the model weights of a checkpoint written by training (and, when given, the
/// optimiser state); returns the training state it recorded.
pub fn load_state<B: Backend>(
    path: &Path,
    backend: &B,
    model: &mut Model<B>,
    opt: Option<&mut dyn Optimizer<B>>,
) -> Result<TrainState> {
    let (tensors, meta) = load_checkpoint(path)?;
    let mut weights = Vec::new();
    let mut optim = Vec::new();
    for (name, shape, data) in tensors {
        let t = Tensor::from_f32(backend, crate::Shape::new(&shape), &data)?;
        if let Some(n) = name.strip_prefix("model/") {
            weights.push((n.to_string(), t));
        } else if let Some(n) = name.strip_prefix("optim/") {
            optim.push((n.to_string(), t));
        } else {
            return Err(Error::file(
                path,
                format!("tensor '{name}' is neither model/ nor optim/: not a voxseg checkpoint"),
            ));
        }
    }
    model
        .load_named_tensors(weights)
        .map_err(|e| Error::file(path, e.to_string()))?;
    if let Some(opt) = opt {
        opt.load_state(optim)
            .map_err(|e| Error::file(path, e.to_string()))?;
    }
    let state = meta
        .get("state")
        .ok_or_else(|| Error::file(path, "no training state in the metadata"))?;
    serde_json::from_str(state)
        .map_err(|e| Error::file(path, format!("training state unreadable: {e}")))
}

fn histograms<B: Backend>(
    tb: &mut EventWriter,
    model: &Model<B>,
    grads: &Gradients<B>,
    step: u64,
) -> Result<()> {
    for p in model.params() {
        tb.add_histogram(&format!("weights/{}", p.name), &p.value.to_vec_f32()?, step)?;
        if let Some(g) = grads.get(p.id) {
            tb.add_histogram(&format!("grads/{}", p.name), &g.to_vec_f32()?, step)?;
        }
    }
    Ok(())
}

/// The plan a new run with `cfg` would use: planned, as training plans, from the cropped
/// cases outside the test set of the split it would make (its seed and fractions, or its
/// split file; every fold of a cross-validation has the same), with the values `cfg` sets
/// filled in; and one step's peak memory on the device by the planner's models
/// (`step_memory`); and the device planned for, with why it was chosen.
pub fn plan_for_config(cfg: &TrainConfig) -> Result<(Plan, u64, Device)> {
    cfg.validate()?;
    let device = resolve(cfg.device.parse::<DeviceRequest>()?)?;
    let (dataset, channels, _) = open_dataset(cfg)?;
    let split = run_split(cfg, &dataset, None)?;
    let nan = if cfg.replace_nan {
        NanPolicy::ReplaceWithZero
    } else {
        NanPolicy::Error
    };
    // One case at a time: only the cropped size, the voxel size and the orientation are
    // kept. Planned, as training plans, from every case outside the test set, in the
    // orientation training would choose: when that is not the cases' own, a second pass.
    let tv = split.train_val();
    let ids: Vec<String> = tv.train().iter().chain(tv.val()).cloned().collect();
    let grids_in = |target: Option<&str>| {
        ids.par_iter()
            .map(|id| {
                let mut case = load_cases(&dataset, std::slice::from_ref(id), &channels, nan)?;
                let (case, header) = case.remove(0);
                let code = orientation(&header.affine());
                let moved = reorient(&case, &header, target)?;
                let c = preprocess(moved.as_ref().map_or(&case, |(m, _)| m), &cfg.preprocess)?;
                Ok(((c.dims(), c.spacing), code))
            })
            .collect::<Result<Vec<_>>>()
    };
    let requested = cfg.preprocess.orientation.as_deref();
    let mut planned = grids_in(requested)?;
    let codes: Vec<String> = planned.iter().map(|(_, code)| code.clone()).collect();
    let chosen = training_orientation(&codes, requested);
    if requested.is_none() && codes.iter().any(|c| Some(c) != chosen.as_ref()) {
        planned = grids_in(chosen.as_deref())?;
    }
    let grids: Vec<([usize; 3], [f64; 3])> = planned.into_iter().map(|(g, _)| g).collect();
    let summary = summarise(
        &grids,
        channels.len(),
        cfg.target.channels(&dataset.label_spec),
    );
    let mut cfg = cfg.clone();
    let (p, _) = resolve_plan(&mut cfg, &summary, largest_grid(&grids), &device)?;
    let spec = model_spec(&cfg, &p, summary.in_channels, summary.out_channels);
    let memory = step_memory(&cfg, &p, &spec, &plan_device(&device, cfg.precision)?);
    Ok((p, memory, device))
}

/// The run's configuration as `config.json` records it: paths absolute (so that `--resume`
/// works from any folder), the modalities and the device resolved.
fn recorded_config(cfg: &TrainConfig, modalities: &[String], device: &Device) -> TrainConfig {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut rec = cfg.clone();
    rec.data = absolute(&cfg.data);
    rec.out = absolute(&cfg.out);
    rec.cache = cfg.cache.as_deref().map(absolute);
    rec.split_file = cfg.split_file.as_deref().map(absolute);
    rec.modalities = modalities.to_vec();
    rec.device = match device {
        Device::Cpu { .. } => "cpu".into(),
        Device::Cuda { ordinal, .. } => format!("cuda:{ordinal}"),
    };
    rec
}

fn train_on<B: Backend>(backend: &B, device: &Device, start: RunStart) -> Result<TrainSummary> {
    let started = Instant::now();
    let RunStart {
        run,
        mut cfg,
        resumed,
        changes,
        replace,
        resume,
    } = start;
    let from_checkpoint = resumed.is_some();
    let mut state = resumed.unwrap_or_else(|| TrainState {
        schedule: Some(cfg.schedule.clone()),
        ..TrainState::default()
    });
    let patience = cfg.early_stop_patience;
    let early_stopped =
        move |s: &TrainState| patience.is_some_and(|p| s.validations_since_best >= p);
    let untrained = if state.epoch >= cfg.epochs {
        Some(Ending::AlreadyComplete)
    } else if early_stopped(&state) {
        Some(Ending::EarlyStopped)
    } else {
        None
    };
    if let Some(ending) = untrained {
        return Ok(TrainSummary {
            run,
            device: device.describe_at(cfg.precision.unwrap_or_default()),
            epochs: cfg.epochs,
            state,
            last_validation: None,
            ending,
            resume_changes: changes,
            trained: false,
            memory_peak_bytes: None,
        });
    }
    let saved_split = resume.then(|| run.split());
    let (data, split) = prepare_data(&cfg, saved_split.as_deref())?;
    let label_spec = data.dataset.label_spec.clone();
    let out_channels = cfg.target.channels(&label_spec);
    let in_channels = data.modalities.len();
    // Planned from every case outside the test set, so that the folds of one
    // cross-validation (and `plan`) agree on the patch and the network.
    let grids: Grids = data
        .train_grids
        .iter()
        .cloned()
        .chain(data.val.iter().map(|c| (c.dims(), c.spacing)))
        .collect();
    let summary = summarise(&grids, in_channels, out_channels);
    let (mut plan, depth_note) = resolve_plan(&mut cfg, &summary, largest_grid(&grids), device)?;
    let kept_stages = from_checkpoint && keep_checkpoint_stages(&mut plan, &run.model());
    let spec = model_spec(&cfg, &plan, in_channels, out_channels);
    if kept_stages {
        (plan.step_gflop, plan.activation_bytes) = model_estimate(&spec, plan.patch, plan.batch);
    }
    check_memory(&cfg, &plan, &spec, device)?;
    check_ssim_window(&cfg, &plan, &spec)?;
    if let Some(warning) = gpu_memory_warning(&cfg, &plan, &spec, device)? {
        eprintln!("warning: {warning}");
    }
    cfg.preprocess = data.preprocess.clone();
    let validates = !data.val.is_empty();
    if !validates && matches!(cfg.schedule, LrSchedule::ReduceOnPlateau { .. }) {
        return Err(Error::config(
            "schedule",
            "plateau lowers the rate when the validation loss stalls, and the split has no \
             validation cases: use poly, cosine or step, or give the split validation cases",
        ));
    }
    if !validates && cfg.early_stop_patience.is_some() {
        return Err(Error::config(
            "early-stop",
            "early stopping waits for validations without a new best, and the split has no \
             validation cases: leave --early-stop out, or give the split validation cases",
        ));
    }

    // Every check has passed: the run's files are written from here on, by this process
    // alone (the lock lives until training returns).
    create_dir(&run.root)?;
    let _lock = RunLock::acquire(&run.root)?;
    if replace {
        remove_run(&run)?;
    }
    remove_stale_temp_files(&run.root)?;
    remove_stale_temp_files(&run.checkpoints())?;
    // config.json first: it marks the folder as a run's, which --force and --resume accept,
    // whatever else fails to be written after it.
    let recorded = recorded_config(&cfg, &data.modalities, device);
    let config_text = serde_json::to_string_pretty(&recorded)
        .map_err(|e| Error::file(run.config(), e.to_string()))?;
    crate::atomic::write_bytes(&run.config(), config_text.as_bytes())?;
    // A new run's split is the one it trains on, whatever file an older run left; a
    // resumed run read its own (or, if it had none, made the same one again).
    if !resume || !run.split().exists() {
        split.save(&run.split())?;
    }
    let card = ModelCard {
        format: CARD_FORMAT.into(),
        model: spec.clone(),
        modalities: data.modalities.clone(),
        layout: data.dataset.layout,
        label_spec: label_spec.clone(),
        target: cfg.target.clone(),
        preprocess: data.preprocess.clone(),
        patch: plan.patch,
        plan: plan.clone(),
        // The summary's spacing runs (z, y, x), as planning's shapes do.
        training_spacing: Some([2, 1, 0].map(|a| summary.median_spacing[a])),
    };
    card.save(&run.model())?;
    let identity = card.identity(Some(split.test_ids()));
    create_dir(&run.checkpoints())?;

    let mut model = Model::new(backend, &spec, cfg.seed)?;
    let mut opt = cfg.optimizer.build::<B>()?;
    if from_checkpoint {
        state = load_state(
            &run.checkpoint("last"),
            backend,
            &mut model,
            Some(opt.as_mut()),
        )?;
        repair_best(&run, &state)?;
    }
    let mut schedule = state
        .schedule
        .clone()
        .unwrap_or_else(|| cfg.schedule.clone());
    let mut jsonl = JsonlWriter::open(&run.metrics())?;
    // Rows after the last checkpoint go, and so does the row of an epoch it stopped part-way
    // through: the resumed epoch writes one row for all its steps.
    jsonl.truncate_after_step(state.step - state.iter as u64)?;
    create_dir(&run.tensorboard())?;
    let mut tb = EventWriter::create(&run.tensorboard())?;

    let train_cases = data.train.len();
    let sources = data.train;
    let batch_size = plan.batch;
    let mut loader = Loader::new(
        sources,
        LoaderOptions {
            batch_size,
            patch: plan.patch,
            foreground_fraction: cfg.foreground_fraction,
            augment: cfg.augment,
            seed: cfg.seed,
            workers: cfg.workers,
            queue_depth: cfg.queue_depth,
            first_batch: state.step,
        },
    )?;
    let stepper = Stepper {
        backend,
        cfg: &cfg,
        label_spec: &label_spec,
    };
    let validator = Validator {
        backend,
        cfg: &cfg,
        label_spec: &label_spec,
        window: SlidingWindow {
            patch: plan.patch,
            overlap: cfg.val_overlap,
            batch: batch_size,
            tta: false,
            pad_value: cfg.preprocess.background_value,
        },
    };
    // Ctrl-C ends the epoch's loop, which saves `last` and returns.
    crate::interrupt::install();
    let interrupt = crate::interrupt::Polling::start();
    // Validated to fit; a limit that still does not fit an Instant is no limit.
    let deadline = cfg.time_limit_minutes.and_then(|m| {
        Duration::try_from_secs_f64(m * 60.0)
            .ok()
            .and_then(|d| started.checked_add(d))
    });
    let total_iters = (cfg.epochs * cfg.iters_per_epoch) as u64;
    let mut progress = Progress::new(total_iters, state.step, Duration::from_secs(15));
    if resume {
        let applied = if changes.is_empty() {
            String::new()
        } else {
            format!("; changed: {}", changes.join(", "))
        };
        progress.println(&format!(
            "resuming {} at epoch {}, step {}{applied}",
            run.root.display(),
            state.epoch,
            state.step
        ));
    }
    if let Some(note) = deep_supervision_note(&cfg, &spec) {
        eprintln!("note: {note}");
    }
    if !validates {
        eprintln!(
            "note: the split has no validation cases: no validation runs, and checkpoints/best \
             is a copy of last (predict's default); to select the best epoch, give the split \
             validation cases (a \"val\" list in --split-file, the config's split.val, or --fold)"
        );
    } else if let Some(names) = without_foreground(&data.val, &cfg.target, &label_spec) {
        eprintln!(
            "warning: the {} validation case(s) hold no {names} voxel: their Dice is 1 only for \
             an empty prediction, so `best` favours a model that predicts nothing; give the \
             split validation cases with foreground, or predict with --checkpoint last",
            data.val.len()
        );
    }
    progress.println(&format!(
        "training on {} | {} parameters | patch {:?} batch {} | {} train / {} val cases{}",
        device.describe_at(cfg.precision.unwrap_or_default()),
        model.parameter_count(),
        plan.patch,
        batch_size,
        train_cases,
        data.val.len(),
        depth_note.map_or(String::new(), |n| format!(" | {n}"))
    ));
    let base_seconds = state.seconds;
    let mut last_validation = None;
    let mut ending = Ending::Finished;
    while state.epoch < cfg.epochs {
        let epoch_start = Instant::now();
        let lr = schedule.lr(cfg.lr, state.epoch, cfg.epochs);
        // Steps of this epoch in this call; the loss sum covers the epoch's earlier steps too.
        let mut steps_now = 0usize;
        let mut last_grads = None;
        // Whether this epoch's validation set a new best (`best` is then written after `last`).
        let mut new_best = false;
        while state.iter < cfg.iters_per_epoch {
            if interrupt.requested() {
                ending = Ending::Interrupted;
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                ending = Ending::TimeLimit;
                break;
            }
            let batch = loader.next()?;
            let (loss, grads) = stepper.step(&mut model, opt.as_mut(), &batch, state.step, lr)?;
            state.iter += 1;
            state.step += 1;
            state.epoch_loss_sum += loss;
            state.epoch_loss_steps += 1;
            steps_now += 1;
            tb.add_scalar("train/loss", loss as f32, state.step)?;
            progress.update(state.step, loss, batch.n as u64);
            loader.recycle(batch);
            last_grads = Some(grads);
        }
        let stopped = ending != Ending::Finished;
        let epoch_done = state.iter >= cfg.iters_per_epoch;
        let train_loss = if state.epoch_loss_steps > 0 {
            state.epoch_loss_sum / state.epoch_loss_steps as f64
        } else {
            f64::NAN
        };
        let patches_per_s =
            (steps_now * batch_size) as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
        let due = epoch_done
            && ((state.epoch + 1).is_multiple_of(cfg.val_every) || state.epoch + 1 == cfg.epochs);
        // One record per epoch; the val_* keys on epochs that were validated. An epoch cut
        // short is marked partial (a resume replaces its row).
        let mut record = serde_json::json!({
            "epoch": state.epoch,
            "step": state.step,
            "train_loss": train_loss,
            "lr": lr,
            "seconds": base_seconds + started.elapsed().as_secs_f64(),
            "patches_per_second": patches_per_s,
        });
        if !epoch_done {
            record["partial"] = serde_json::json!(true);
        }
        let reports = (due || stopped) && steps_now > 0;
        if reports {
            if let Some(g) = &last_grads {
                histograms(&mut tb, &model, g, state.step)?;
            }
        }
        // An epoch cut short is not validated: the resumed epoch validates at its end, as an
        // uninterrupted run does, so a plateau schedule and the best checkpoint see the same
        // losses either way (and Ctrl-C does not wait for a sliding-window pass).
        if reports && !(due && validates) {
            progress.println(&format!(
                "epoch {} step {} train_loss {train_loss:.4}",
                state.epoch, state.step
            ));
        }
        if reports && due && validates {
            let (val, picture) = validator.run(&mut model, &data.val)?;
            schedule.observe(val.loss);
            tb.add_scalar("val/loss", val.loss as f32, state.step)?;
            // What `best` is chosen on.
            tb.add_scalar("val/mean_dice", val.mean_dice as f32, state.step)?;
            for (name, d) in &val.dice {
                tb.add_scalar(&format!("val/dice_{name}"), *d as f32, state.step)?;
            }
            if let Some((rgb, w, h)) = picture {
                tb.add_image("val/segmentation", &rgb, w, h, state.step)?;
            }
            record["val_loss"] = serde_json::json!(val.loss);
            record["val_mean_dice"] = serde_json::json!(val.mean_dice);
            for (name, d) in &val.dice {
                record[format!("val_dice_{name}")] = serde_json::json!(d);
            }
            progress.println(&format!(
                "epoch {} step {} train_loss {train_loss:.4} val_loss {:.4} dice {}",
                state.epoch,
                state.step,
                val.loss,
                val.dice
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.3}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            if state.best_score.is_none_or(|b| val.mean_dice > b) {
                state.best_score = Some(val.mean_dice);
                state.best_epoch = Some(state.epoch);
                state.validations_since_best = 0;
                new_best = true;
            } else {
                state.validations_since_best += 1;
            }
            // On the last epoch the run ends anyway: it finished, nothing was cut short.
            if early_stopped(&state) && state.epoch + 1 < cfg.epochs {
                ending = Ending::EarlyStopped;
                progress.println(&format!(
                    "early stop: {} validation(s) in a row without a better mean Dice than \
                     epoch {}'s {:.4}",
                    state.validations_since_best,
                    state.best_epoch.unwrap_or(0),
                    state.best_score.unwrap_or(f64::NAN)
                ));
            }
            last_validation = Some(val);
        }
        let device_peak = backend.memory_peak_bytes();
        if steps_now > 0 {
            record["seconds"] = serde_json::json!(base_seconds + started.elapsed().as_secs_f64());
            if let Some(peak) = device_peak {
                record["device_peak_bytes"] = serde_json::json!(peak);
            }
            jsonl.write(&record)?;
        }
        tb.add_scalar("lr", lr as f32, state.step)?;
        tb.add_scalar("perf/patches_per_second", patches_per_s as f32, state.step)?;
        if let Some(peak) = device_peak {
            tb.add_scalar("perf/device_peak_gib", gib(peak) as f32, state.step)?;
        }
        tb.flush()?;
        if !validates && steps_now > 0 {
            state.best_epoch = Some(state.epoch);
        }
        state = advance(&state, epoch_done);
        state.seconds = base_seconds + started.elapsed().as_secs_f64();
        state.schedule = Some(schedule.clone());
        save_state(
            &run.checkpoint("last"),
            &identity,
            &model,
            opt.as_ref(),
            &state,
        )?;
        if new_best || !validates {
            // Byte for byte `last`, written after it: a process killed in between leaves a
            // `last` whose state names this epoch best, which a resume repairs
            // (`repair_best`); without validation there is nothing to choose.
            copy_last_to_best(&run)?;
        }
        if ending != Ending::Finished {
            break;
        }
    }
    progress.finish();
    Ok(TrainSummary {
        run,
        device: device.describe_at(cfg.precision.unwrap_or_default()),
        epochs: cfg.epochs,
        state,
        last_validation,
        ending,
        resume_changes: changes,
        trained: true,
        memory_peak_bytes: backend.memory_peak_bytes(),
    })
}

/// Bytes in GiB, as the memory messages and logs give them.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// `best` as a copy of `last`, the file the epoch just saved.
fn copy_last_to_best(run: &RunDir) -> Result<()> {
    let last = run.checkpoint("last");
    let bytes =
        std::fs::read(&last).map_err(|e| Error::io(format!("reading {}", last.display()), e))?;
    crate::atomic::write_bytes(&run.checkpoint("best"), &bytes)
}

/// Where `last` was saved at the end of the epoch its state names best but `best` is not
/// that epoch's (a process killed between the two writes), `best` becomes `last` again.
fn repair_best(run: &RunDir, last: &TrainState) -> Result<()> {
    let best_is_last = last.iter == 0 && last.best_epoch.is_some_and(|e| e + 1 == last.epoch);
    if !best_is_last {
        return Ok(());
    }
    let best = run.checkpoint("best");
    let same = best.exists() && read_state(&best).is_ok_and(|b| b.step == last.step);
    if !same {
        eprintln!(
            "note: {} was not the best epoch's ({}, as last records); made it a copy of last",
            best.display(),
            last.epoch - 1
        );
        copy_last_to_best(run)?;
    }
    Ok(())
}

/// The state after an epoch: the next epoch when it was complete, else where it stopped.
fn advance(state: &TrainState, epoch_done: bool) -> TrainState {
    let mut next = state.clone();
    if epoch_done {
        next.epoch += 1;
        next.iter = 0;
        next.epoch_loss_sum = 0.0;
        next.epoch_loss_steps = 0;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Confusion;

    /// A step the GPU's free memory cannot hold, by the planner's model, is warned of with
    /// the numbers and the flags that lower it; one that fits is not.
    #[test]
    fn a_step_larger_than_the_gpus_free_memory_is_warned_of() {
        let p = Plan::of_sizes([160, 192, 160], 4, [32, 320], 6);
        let w = memory_shortfall(&p, 41 << 29, 12 << 30).unwrap();
        for part in [
            "batch 4",
            "[160, 192, 160]",
            "32 to 320",
            "20.5 GiB",
            "12.0 GiB free",
        ] {
            assert!(w.contains(part), "{part} missing from {w}");
        }
        assert!(w.contains("--batch, --patch or --features"), "{w}");
        assert_eq!(memory_shortfall(&p, 23 << 29, 12 << 30), None);
    }

    /// Turning deep supervision off is noted where it changes nothing: U-Nets of fewer
    /// than 4 stages and the FCN.
    #[test]
    fn deep_supervision_off_is_noted_where_it_changes_nothing() {
        let unet = |depth| {
            ModelSpec::Unet(UNetConfig {
                depth,
                ..UNetConfig::nnunet(4, 3)
            })
        };
        let off = TrainConfig {
            deep_supervision: false,
            ..TrainConfig::default()
        };
        let note = deep_supervision_note(&off, &unet(3)).unwrap();
        assert!(note.contains("3 stages"), "{note}");
        assert_eq!(deep_supervision_note(&off, &unet(4)), None);
        assert_eq!(
            deep_supervision_note(&TrainConfig::default(), &unet(3)),
            None
        );
        let fcn = ModelSpec::Fcn(FcnConfig::of_sizes([4, 3], 8, 2, 2));
        assert!(deep_supervision_note(&off, &fcn).unwrap().contains("FCN"));
    }

    /// The backend's counts against a host decode of the probabilities, for every kind of
    /// target: the validator's Dice must not change by moving the decision.
    #[test]
    fn backend_counts_equal_host_decode_counts() {
        use crate::data::labels::ClassRef;
        use crate::tensor_ops::ConfusionKernel;
        let spec = LabelSpec::brats2021();
        let voxels = 2000;
        let labels: Vec<u8> = (0..voxels).map(|i| ((i * 7 + i / 13) % 4) as u8).collect();
        let truth: Vec<f32> = labels.iter().map(|&c| f32::from(c)).collect();
        for target in [
            TargetSpec::Regions,
            TargetSpec::Classes,
            TargetSpec::Class(ClassRef::Index(3)),
        ] {
            let k = target.channels(&spec);
            let mut logits: Vec<f32> = (0..voxels * k)
                .map(|i| (i as f32 * 0.618).sin() * 3.0)
                .collect();
            // Exact ties and zero logits (sigmoid exactly 0.5) in some voxels.
            for row in logits.chunks_exact_mut(k).step_by(17) {
                row.fill(0.0);
            }
            let regions = scored_regions(&target, &spec);
            let cs = confusion_spec(&target, &spec, &regions, k).unwrap();
            let got = Cpu::new().region_confusion(&logits, &truth, &cs).unwrap();
            let pred = target
                .decode(&spec, &probabilities(&target, &logits, k))
                .unwrap();
            assert_eq!(got.len(), regions.len());
            for (c, (name, classes)) in got.iter().zip(&regions) {
                let mask = |v: &[u8]| v.iter().map(|x| classes.contains(x)).collect::<Vec<_>>();
                let want = Confusion::count(&mask(&pred), &mask(&labels));
                assert_eq!(*c, want, "{target:?} {name}");
                assert!(want.true_pos > 0 && want.false_pos + want.false_neg > 0);
            }
        }
    }

    #[test]
    fn labels_downsample_to_block_centres_and_weights_halve() {
        // Each voxel's own index, so the picked source voxels can be read off.
        let index = |n: usize| (0..n).collect::<Vec<usize>>();
        let labels = index(2 * 4 * 4 * 4);
        let pick = |labels: &[usize], n, from: [usize; 3], to: [usize; 3]| {
            let bytes: Vec<u8> = labels.iter().map(|&i| i as u8).collect();
            downsample_labels(&bytes, n, from, to)
                .into_iter()
                .map(usize::from)
                .collect::<Vec<_>>()
        };
        let down = pick(&labels, 2, [4, 4, 4], [2, 2, 2]);
        assert_eq!(down.len(), 16);
        // (z, y, x) = (1, 1, 1), (1, 1, 3): the second voxel of each pair.
        assert_eq!(&down[..2], &[21, 23]);
        assert_eq!(down[8], 64 + 21);
        // 8 -> 2 takes voxels 2 and 6 (the block centres); an axis kept whole keeps every
        // voxel; 5 -> 3 (an odd patch) takes 0, 2 and 4.
        assert_eq!(pick(&index(8), 1, [1, 1, 8], [1, 1, 2]), [2, 6]);
        assert_eq!(pick(&index(6), 1, [1, 3, 2], [1, 3, 1]), [1, 3, 5]);
        assert_eq!(pick(&index(5), 1, [1, 1, 5], [1, 1, 3]), [0, 2, 4]);
        let w = supervision_weights(3);
        assert!((w[0] - 4.0 / 7.0).abs() < 1e-12 && (w[2] - 1.0 / 7.0).abs() < 1e-12);
    }
}
