//! `predict`: a trained run applied to new cases. Each case is loaded with the run's
//! modalities, preprocessed as in training, predicted window by window, turned into labels
//! (nnU-Net's region painting or argmax), pasted back into its full volume and written in
//! the label convention of the layout the model was trained on, with the input's header.
//! Reference labels are never needed: a case is predicted from its images alone.
use super::{interleave_channels, predict_logits, probabilities, Postprocess, SlidingWindow};
use crate::backend::Backend;
use crate::data::case::{load_case, load_label, NanPolicy};
use crate::data::labels::{LabelSpec, TargetSpec};
use crate::data::layout::{same_modality, CaseFiles, Dataset, ImageFile, MODALITY_ALIASES};
use crate::data::nifti::{write_label_map, write_probability_map, NiftiFile, NiftiHeaderInfo};
use crate::data::orient::{reorient, AxisMap};
use crate::data::preprocess::{paste_back_probs, preprocess, PreprocessSpec, PreprocessedCase};
use crate::data::split::Split;
use crate::error::{Error, Result};
use crate::log::{captioned_overlay, write_png};
use crate::metrics::evaluate::regions_of;
use crate::nn::Model;
use crate::train::card::{describe_labels, CheckpointIdentity, CHECKPOINT_IDENTITY_KEY};
use crate::train::checkpoint::read_checkpoint_metadata;
use crate::train::run::{load_state, RunDir};
use crate::train::ModelCard;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct PredictOptions {
    /// `best`, `last` or a path to a checkpoint.
    pub checkpoint: String,
    pub overlap: f64,
    pub tta: bool,
    pub probabilities: bool,
    pub png: bool,
    pub replace_nan: bool,
    /// Windows per forward pass.
    pub batch: usize,
    /// Applied to each label map before it is written (not to the probabilities).
    pub postprocess: Postprocess,
}

/// What was written for one case.
#[derive(Clone, Debug)]
pub struct Predicted {
    pub case: String,
    pub labels: PathBuf,
    pub probabilities: Option<PathBuf>,
    pub picture: Option<PathBuf>,
}

/// The files `predict_case` writes for one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputFiles {
    /// `CASE.nii.gz`.
    pub labels: PathBuf,
    /// `CASE_probabilities.nii.gz` and its sidecar `CASE_probabilities.json`.
    pub probabilities: Option<(PathBuf, PathBuf)>,
    /// `CASE.png`.
    pub picture: Option<PathBuf>,
    /// `CASE.nii`: no run writes it, but `evaluate` reads it as the case's labels, so an
    /// earlier one is an output of the case too.
    pub uncompressed_labels: Option<PathBuf>,
}

impl OutputFiles {
    pub fn new(case: &str, out: &Path, opts: &PredictOptions) -> Self {
        Self::with(case, out, opts.probabilities, opts.png)
    }

    fn with(case: &str, out: &Path, probabilities: bool, picture: bool) -> Self {
        OutputFiles {
            uncompressed_labels: None,
            labels: out.join(format!("{case}.nii.gz")),
            probabilities: probabilities.then(|| {
                (
                    out.join(format!("{case}_probabilities.nii.gz")),
                    out.join(format!("{case}_probabilities.json")),
                )
            }),
            picture: picture.then(|| out.join(format!("{case}.png"))),
        }
    }

    /// Every file a predict run may write for `case`, whatever its options, and the labels
    /// `evaluate` would read beside them.
    pub fn every(case: &str, out: &Path) -> Self {
        Self {
            uncompressed_labels: Some(out.join(format!("{case}.nii"))),
            ..Self::with(case, out, true, true)
        }
    }

    /// The files of `case` that some predict run writes but a run with `opts` does not
    /// (probabilities without `--probabilities`, the picture without `--png`): an earlier
    /// run's, which would otherwise sit beside this run's labels as if they belonged to them.
    pub fn not_written(case: &str, out: &Path, opts: &PredictOptions) -> Vec<PathBuf> {
        let written = Self::new(case, out, opts);
        Self::every(case, out)
            .all()
            .into_iter()
            .filter(|p| !written.all().contains(p))
            .map(Path::to_path_buf)
            .collect()
    }

    /// The first input file of `cases`, an image or a reference label, that one of their
    /// outputs in `out` would replace (e.g. a 4D `--input brain.nii.gz` predicted into its
    /// own folder as `brain.nii.gz`, or a manifest's labels stored as `DIR/CASE.nii.gz`
    /// predicted into `DIR`), compared as the file system resolves them. `--force` would
    /// overwrite it, or delete it when the case fails, so predict refuses such an `--out`.
    pub fn over_input(cases: &[CaseFiles], out: &Path) -> Option<PathBuf> {
        let resolved = |p: &Path| -> Option<PathBuf> {
            let dir = std::fs::canonicalize(p.parent()?).ok()?;
            Some(dir.join(p.file_name()?))
        };
        let outputs: std::collections::HashSet<PathBuf> = cases
            .iter()
            .flat_map(|case| {
                Self::every(&case.id, out)
                    .all()
                    .into_iter()
                    .filter_map(resolved)
                    .collect::<Vec<_>>()
            })
            .collect();
        cases
            .iter()
            .flat_map(|case| {
                case.images
                    .iter()
                    .map(|img| &img.path)
                    .chain(case.label.as_ref())
            })
            .find(|input| resolved(input).is_some_and(|r| outputs.contains(&r)))
            .cloned()
    }

    pub fn all(&self) -> Vec<&Path> {
        let mut all = vec![self.labels.as_path()];
        if let Some((image, sidecar)) = &self.probabilities {
            all.extend([image.as_path(), sidecar.as_path()]);
        }
        all.extend(self.picture.as_deref());
        all.extend(self.uncompressed_labels.as_deref());
        all
    }
}

/// A trained model ready to predict, or an ensemble of them (e.g. the folds of a
/// cross-validation) whose probabilities are averaged.
pub struct Predictor<B: Backend> {
    /// The first model's card: its modalities, labels and target are every member's.
    pub card: ModelCard,
    members: Vec<Member<B>>,
    backend: B,
}

/// One model of the ensemble, with its own patch and preprocessing.
struct Member<B: Backend> {
    card: ModelCard,
    model: Model<B>,
}

/// Loads `run`'s model card and a checkpoint (`best`, `last` or a path), refusing a
/// checkpoint of another run (see `check_checkpoint_identity`).
fn open_member<B: Backend>(backend: &B, run: &Path, checkpoint: &str) -> Result<Member<B>> {
    let dir = RunDir {
        root: run.to_path_buf(),
    };
    if !dir.model().is_file() {
        return Err(Error::config(
            "model",
            format!("{} is not a voxseg run (no model.json)", run.display()),
        ));
    }
    let card = ModelCard::load(&dir.model())?;
    let path = match checkpoint {
        "best" | "last" => dir.checkpoint(checkpoint),
        other => PathBuf::from(other),
    };
    if !path.exists() {
        let hint = if checkpoint == "best" && dir.checkpoint("last").exists() {
            "checkpoint not found: no epoch has been validated yet; predict with --checkpoint \
             last, or train further (--resume)"
        } else {
            "checkpoint not found (has the run finished an epoch?)"
        };
        return Err(Error::file(&path, hint));
    }
    let warning = check_checkpoint_identity(&path, &dir, &card)?;
    let mut model = Model::new(backend, &card.model, 0)?;
    load_state(&path, backend, &mut model, None)?;
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    Ok(Member { card, model })
}

/// Refuses a checkpoint whose recorded model card differs from the run's `model.json`
/// (modalities, labels, target, network, preprocessing), or whose run did not hold out the
/// run's test cases; returns a warning for a checkpoint that records no card (written
/// before voxseg stored it).
fn check_checkpoint_identity(
    path: &Path,
    dir: &RunDir,
    card: &ModelCard,
) -> Result<Option<String>> {
    let meta = read_checkpoint_metadata(path)?;
    let Some(json) = meta.get(CHECKPOINT_IDENTITY_KEY) else {
        return Ok(Some(format!(
            "warning: checkpoint {} does not record which model card it was trained with \
             (an older checkpoint); it is used because its tensor shapes fit {}",
            path.display(),
            dir.model().display()
        )));
    };
    let trained: CheckpointIdentity = serde_json::from_str(json).map_err(|e| {
        Error::file(
            path,
            format!("unreadable {CHECKPOINT_IDENTITY_KEY} metadata: {e}"),
        )
    })?;
    let differences = card.identity(None).differences(&trained);
    let another_run = |what: String| {
        Error::file(
            path,
            format!(
                "this checkpoint belongs to another run: {what}; use a checkpoint of {} or that \
                 run's folder as --model",
                dir.root.display()
            ),
        )
    };
    if !differences.is_empty() {
        let what: Vec<String> = differences
            .iter()
            .map(|(field, run, checkpoint)| {
                format!("{field} {checkpoint}, the run's model.json says {run}")
            })
            .collect();
        return Err(another_run(format!(
            "it was trained with {}",
            what.join("; ")
        )));
    }
    // Its weights may have seen the run's test cases: scores of them would be no test.
    if dir.split().is_file() {
        let split = Split::read(&dir.split())?;
        let not_held_out = trained.not_held_out(split.test_ids());
        if let Some(first) = not_held_out.first() {
            return Err(another_run(format!(
                "its run did not hold out {} of the {} test cases of {} (e.g. {first}), so it \
                 may have trained on them",
                not_held_out.len(),
                split.test_ids().len(),
                dir.split().display()
            )));
        }
    }
    Ok(None)
}

/// The model's input slot a file name names by its last `_`/`-`/`.` separated part: a
/// modality name or one of its aliases (`CASE_flair`, `CASE-t2f`), or nnU-Net's 4-digit
/// channel number (`CASE_0003`).
fn named_slot(stem: &str, modalities: &[String]) -> Option<usize> {
    let (_, last) = stem.rsplit_once(['_', '-', '.'])?;
    let last = last.to_ascii_lowercase();
    if last.len() == 4 && last.chars().all(|c| c.is_ascii_digit()) {
        // A number past the model's inputs is part of the case id, not a channel.
        return last.parse().ok().filter(|&c| c < modalities.len());
    }
    modalities.iter().position(|m| same_modality(m, &last))
}

/// Warnings for loose input files whose names suggest another order than the model's
/// (`modalities`): a file named for one modality given in another's slot, or for one the
/// model does not take, or files naming different cases. A single file for a model of
/// several modalities is a 4D image whose channels nothing names: a note says the order
/// they are taken in.
fn input_name_warnings(modalities: &[String], files: &[PathBuf]) -> Vec<String> {
    let mut warnings = Vec::new();
    if let ([file], [_, _, ..]) = (files, modalities) {
        warnings.push(format!(
            "note: {} is taken as one 4D image whose channels are, in order, {}: its file \
             does not name them (an MSD task lists its order under \"modality\" in its \
             dataset.json); reorder the channels, or give one file per modality, if they differ",
            file.display(),
            modalities.join(", ")
        ));
        return warnings;
    }
    for (slot, file) in files.iter().enumerate() {
        let stem = image_stem(file);
        let named = named_slot(&stem, modalities);
        if let (None, Some(other)) = (named, named_brats_modality(&stem)) {
            warnings.push(format!(
                "warning: {} is given as input {} ({}) but its name says {other}, which \
                 the model does not take; it takes {} in this order",
                file.display(),
                slot + 1,
                modalities[slot],
                modalities.join(", ")
            ));
        }
        if let Some(named) = named.filter(|&n| n != slot) {
            warnings.push(format!(
                "warning: {} is given as input {} ({}) but its name says {}; the model \
                 takes {} in this order",
                file.display(),
                slot + 1,
                modalities[slot],
                modalities[named],
                modalities.join(", ")
            ));
        }
    }
    let mut ids: Vec<String> = files.iter().map(|f| case_id_of(f, modalities)).collect();
    ids.dedup();
    if ids.len() > 1 {
        warnings.push(format!(
            "warning: the --input files name different cases ({}); the output is named {}",
            ids.join(", "),
            ids[0]
        ));
    }
    warnings
}

/// The modality a file name names by its last `_`/`-`/`.` separated part when that is a
/// BraTS modality name or alias (`CASE_t1`, `CASE-t2f`), whether or not the model takes it.
fn named_brats_modality(stem: &str) -> Option<String> {
    let (_, last) = stem.rsplit_once(['_', '-', '.'])?;
    let last = last.to_ascii_lowercase();
    MODALITY_ALIASES
        .iter()
        .any(|g| g.contains(&last.as_str()))
        .then_some(last)
}

/// A file's name without its folder and `.nii.gz` / `.nii`.
fn image_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "case".into());
    name.strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
        .unwrap_or(&name)
        .to_string()
}

/// The case id a file name stands for: its stem without a part that names a modality.
fn case_id_of(path: &Path, modalities: &[String]) -> String {
    let stem = image_stem(path);
    let names_modality =
        named_slot(&stem, modalities).is_some() || named_brats_modality(&stem).is_some();
    match stem.rsplit_once(['_', '-', '.']) {
        Some((case, _)) if names_modality && !case.is_empty() => case.to_string(),
        _ => stem,
    }
}

/// Channel names in the order the probabilities file stores them.
fn output_channel_names(card: &ModelCard) -> Vec<String> {
    match &card.target {
        TargetSpec::Regions => card
            .label_spec
            .regions()
            .iter()
            .map(|r| r.name.clone())
            .collect(),
        TargetSpec::Classes => card.label_spec.class_names(),
        TargetSpec::Class(_) => crate::train::run::scored_regions(&card.target, &card.label_spec)
            .into_iter()
            .map(|(name, _)| name)
            .collect(),
    }
}

fn window_for(card: &ModelCard, opts: &PredictOptions) -> Result<SlidingWindow> {
    let window = SlidingWindow {
        patch: card.patch,
        overlap: opts.overlap,
        batch: opts.batch,
        tta: opts.tta,
        pad_value: card.preprocess.background_value,
    };
    window.validate()?;
    Ok(window)
}

/// One case preprocessed as `spec` says, for every ensemble member trained so: the grid,
/// its channels interleaved for the network, and (where the case was reoriented) the grid
/// it was reoriented from with the map back.
struct SharedCase {
    spec: PreprocessSpec,
    prep: PreprocessedCase,
    image: Vec<f32>,
    back: Option<([usize; 3], AxisMap)>,
}

impl<B: Backend> Predictor<B> {
    /// Loads `run`'s model card and a checkpoint (`best`, `last` or a path), refusing a
    /// checkpoint of another run.
    pub fn open(backend: &B, run: &Path, checkpoint: &str) -> Result<Self> {
        let first = open_member(backend, run, checkpoint)?;
        Ok(Self {
            card: first.card.clone(),
            members: vec![first],
            backend: backend.clone(),
        })
    }

    /// Adds another run's model to the ensemble. It must read the same modalities in the
    /// same order and output the same labels and target; its patch and preprocessing may
    /// differ (each model sees the case as it was trained to).
    pub fn add_model(&mut self, run: &Path, checkpoint: &str) -> Result<()> {
        let member = open_member(&self.backend, run, checkpoint)?;
        let (ours, theirs) = (&self.card, &member.card);
        let same_modalities = theirs.modalities.len() == ours.modalities.len()
            && theirs
                .modalities
                .iter()
                .zip(&ours.modalities)
                .all(|(a, b)| same_modality(a, b));
        let differs = if !same_modalities {
            Some(format!(
                "modalities {}, the first model's are {}",
                theirs.modalities.join(","),
                ours.modalities.join(",")
            ))
        } else if theirs.label_spec != ours.label_spec {
            Some(format!(
                "labels {}, the first model's are {}",
                describe_labels(&theirs.label_spec),
                describe_labels(&ours.label_spec)
            ))
        } else if theirs.target != ours.target {
            Some(format!(
                "target {}, the first model's is {}",
                theirs.target, ours.target
            ))
        } else {
            None
        };
        if let Some(why) = differs {
            return Err(Error::config(
                "model",
                format!(
                    "{} cannot join the ensemble: it was trained with {why}",
                    run.display()
                ),
            ));
        }
        self.members.push(member);
        Ok(())
    }

    /// How many models predict together.
    pub fn models(&self) -> usize {
        self.members.len()
    }

    /// A dataset made of loose files, one per modality in the model's input order.
    /// One 4D file holding every modality in the model's order (MSD's images) is read
    /// channel by channel.
    pub fn files_as_dataset(&self, files: &[PathBuf]) -> Result<Dataset> {
        let n = self.card.modalities.len();
        let one_4d = files.len() == 1 && n > 1;
        if files.len() != n && !one_4d {
            return Err(Error::config(
                "input",
                format!(
                    "{} files given; the model takes {n} modalities in this order: {}; give \
                     one file per modality, or one 4D file holding them in that order",
                    files.len(),
                    self.card.modalities.join(", ")
                ),
            ));
        }
        // A 4D file of other channels than the model's (an MSD image of all four for a
        // model of two) names no channel: which of them the model takes is unknown.
        if one_4d {
            let channels = NiftiFile::open(&files[0])?.header().channels;
            if channels != n {
                return Err(Error::file(
                    &files[0],
                    format!(
                        "holds {channels} channel(s); the model takes {n} in this order: {}; \
                         give a 4D file of exactly those, or one file per modality",
                        self.card.modalities.join(", ")
                    ),
                ));
            }
        }
        // `CASE_t1.nii.gz` (BraTS) or `CASE_0000.nii.gz` (nnU-Net) names the case `CASE`.
        let id = case_id_of(&files[0], &self.card.modalities);
        Ok(Dataset {
            layout: self.card.layout,
            root: files[0].parent().map(Path::to_path_buf).unwrap_or_default(),
            modalities: self.card.modalities.clone(),
            label_spec: self.card.label_spec.clone(),
            cases: vec![CaseFiles {
                id,
                images: self
                    .card
                    .modalities
                    .iter()
                    .enumerate()
                    .map(|(i, m)| ImageFile {
                        modality: m.clone(),
                        path: files[if one_4d { 0 } else { i }].clone(),
                        channel: one_4d.then_some(i),
                    })
                    .collect(),
                label: None,
            }],
            test_cases: Vec::new(),
        })
    }

    /// Warnings for loose input files whose names suggest another order than the model's
    /// (see the free function of the same name).
    pub fn input_name_warnings(&self, files: &[PathBuf]) -> Vec<String> {
        input_name_warnings(&self.card.modalities, files)
    }

    /// A warning when `dataset`'s label convention is not the model's: predictions are
    /// written in the model's convention, which `voxseg evaluate --model RUN` reads.
    pub fn convention_warning(&self, dataset: &Dataset, run: &Path) -> Option<String> {
        let model = &self.card.label_spec;
        let data = &dataset.label_spec;
        if scores_alike(model, data) {
            return None;
        }
        Some(format!(
            "warning: {} uses {} labels ({}), the model writes its own {} labels ({}); score \
             these predictions with `voxseg evaluate --model {}`, which reads them in the \
             model's convention",
            dataset.root.display(),
            dataset.layout,
            describe_labels(data),
            self.card.layout,
            describe_labels(model),
            run.display()
        ))
    }

    /// The sliding window `predict_case` uses with `opts` (for the first model), checked.
    pub fn window(&self, opts: &PredictOptions) -> Result<SlidingWindow> {
        window_for(&self.card, opts)
    }

    /// Predicts one case of `dataset` from its images and writes its files into `out`
    /// (see [`OutputFiles`]). The case's reference label is not needed; with `opts.png` it
    /// is drawn when it is readable and in the model's convention.
    pub fn predict_case(
        &mut self,
        dataset: &Dataset,
        case: &CaseFiles,
        out: &Path,
        opts: &PredictOptions,
    ) -> Result<Predicted> {
        let channels = dataset.select_modalities(&self.card.modalities)?;
        let nan = if opts.replace_nan {
            NanPolicy::ReplaceWithZero
        } else {
            NanPolicy::Error
        };
        let images_only = CaseFiles {
            label: None,
            ..case.clone()
        };
        let (data, header) = load_case(dataset, &images_only, &channels, nan)?;
        // A blank or constant image carries nothing to segment; the network's answer for it
        // is not to be trusted (`check` warns of the same).
        for (volume, name) in data.channels.iter().zip(&self.card.modalities) {
            if let Some(first) = volume.constant_value() {
                eprintln!(
                    "warning: case {}: the {name} image is constant ({first}); its \
                     segmentation is not to be trusted",
                    case.id
                );
            }
        }
        if let Some(warning) = spacing_warning(&self.card, &case.id, data.spacing()) {
            eprintln!("{warning}");
        }
        let files = OutputFiles::new(&case.id, out, opts);
        let k = self.card.model.out_channels();
        // Outside the brain crop: background (for classes, certainly class 0).
        let fill: Vec<f32> = match self.card.target {
            TargetSpec::Classes => (0..k).map(|c| if c == 0 { 1.0 } else { 0.0 }).collect(),
            _ => vec![0.0; k],
        };
        // Each model's probabilities on the case's own grid, averaged.
        let share = 1.0 / self.members.len() as f32;
        let mut full_probs = vec![0f32; data.dims().iter().product::<usize>() * k];
        // Members preprocessed alike (the folds of a cross-validation without per-dataset
        // statistics) share the preprocessed case.
        let mut shared: Option<SharedCase> = None;
        for member in &mut self.members {
            let spec = &member.card.preprocess;
            if shared.as_ref().is_none_or(|s| s.spec != *spec) {
                // In the member's training orientation; its probabilities go back from it.
                let moved = reorient(&data, &header, spec.orientation.as_deref())?;
                let prep = preprocess(moved.as_ref().map_or(&data, |(m, _)| m), spec)?;
                shared = Some(SharedCase {
                    spec: spec.clone(),
                    image: interleave_channels(&prep.channels)?,
                    back: moved.map(|(m, map)| (m.dims(), map.inverse())),
                    prep,
                });
            }
            let SharedCase {
                prep, image, back, ..
            } = shared.as_ref().expect("prepared above");
            let [x, y, z] = prep.dims();
            let logits = predict_logits(
                &mut member.model,
                &self.backend,
                image,
                [z, y, x],
                prep.channels.len(),
                &window_for(&member.card, opts)?,
            )?;
            let probs = probabilities(&member.card.target, &logits, k);
            let pasted = paste_back_probs(&probs, k, &fill, &prep.crop)?;
            let pasted = match back {
                Some((dims, inverse)) => inverse.apply(*dims, k, &pasted),
                None => pasted,
            };
            for (mean, p) in full_probs.iter_mut().zip(pasted) {
                *mean += p * share;
            }
        }
        let mut full = self
            .card
            .target
            .decode(&self.card.label_spec, &full_probs)?;
        opts.postprocess.apply(&mut full, data.dims());
        let values = self.card.label_spec.to_file_values(&full)?;
        write_label_map(&files.labels, &header, &values)?;
        if let Some((image, sidecar)) = &files.probabilities {
            let names = output_channel_names(&self.card);
            let activation = match self.card.target {
                TargetSpec::Classes => "softmax",
                _ => "sigmoid",
            };
            let descrip = format!("voxseg {activation} channels: {}", names.join(","));
            write_probability_map(image, &header, k, &full_probs, &descrip)?;
            let about = serde_json::json!({
                "image": image.file_name().map(|n| n.to_string_lossy()),
                "channels": names,
                "activation": activation,
                "target": self.card.target,
                "note": "channel c of the image's 4th dimension is the probability of channels[c]",
                // The label map may differ from these probabilities by the postprocessing.
                "labels_postprocessed_with": opts.postprocess.to_string(),
            });
            let text = serde_json::to_string_pretty(&about)
                .map_err(|e| Error::file(sidecar, e.to_string()))?;
            crate::atomic::write_bytes(sidecar, text.as_bytes())?;
        }
        if let Some(path) = &files.picture {
            let truth = self.readable_reference(dataset, case, &header, &channels);
            let classes = self.card.label_spec.class_names();
            let (rgb, w, h) = captioned_overlay(
                &data.channels[0].data,
                data.dims(),
                data.spacing(),
                Some(&full),
                truth.as_deref(),
                &classes,
            )?;
            write_png(path, &rgb, w, h)?;
        }
        Ok(Predicted {
            case: case.id.clone(),
            labels: files.labels,
            probabilities: files.probabilities.map(|(image, _)| image),
            picture: files.picture,
        })
    }

    /// The case's reference label as internal classes, for the picture only: `None` when
    /// there is none, when its convention is not the model's (the colours would lie), or
    /// with a warning when it cannot be read (a bad reference must not stop prediction).
    fn readable_reference(
        &self,
        dataset: &Dataset,
        case: &CaseFiles,
        grid: &NiftiHeaderInfo,
        channels: &[usize],
    ) -> Option<Vec<u8>> {
        let path = case.label.as_ref()?;
        if dataset.label_spec.classes() != self.card.label_spec.classes() {
            return None;
        }
        let grid_path = &case.images[channels[0]].path;
        load_label(&dataset.label_spec, &case.id, path, grid, grid_path)
            .map(|label| label.data)
            .map_err(|e| eprintln!("warning: reference not drawn in {}.png: {e}", case.id))
            .ok()
    }
}

/// A warning when case `case`'s voxel size (x, y, z, mm) is far from the training cases'
/// and the model does not resample (no `target_spacing`): a network sees structures at the
/// scale it was trained on. The sizes are compared as sorted triples, so that a case stored
/// in another axis order is not flagged for it.
fn spacing_warning(card: &ModelCard, case: &str, spacing: [f64; 3]) -> Option<String> {
    /// A ratio beyond this on any axis is warned of.
    const FAR: f64 = 1.5;
    let trained = card.training_spacing?;
    if card.preprocess.target_spacing.is_some() {
        return None;
    }
    let sorted = |mut s: [f64; 3]| {
        s.sort_by(f64::total_cmp);
        s
    };
    let (a, b) = (sorted(spacing), sorted(trained));
    let far = a.iter().zip(&b).any(|(x, y)| x / y > FAR || y / x > FAR);
    let show = |s: [f64; 3]| s.map(|v| format!("{:.2}", v)).join("x");
    far.then(|| {
        format!(
            "warning: case {case}: voxel size {} mm is far from the training cases' {} mm, \
             and the model does not resample (no target_spacing): resample the case, or \
             train with target_spacing",
            show(spacing),
            show(trained)
        )
    })
}

/// Whether predictions in convention `a` are scored the same read in convention `b`: the
/// same label values, and regions of the same names over the same values (class names may
/// differ: "necrosis" for "NCR").
fn scores_alike(a: &LabelSpec, b: &LabelSpec) -> bool {
    a.file_values() == b.file_values() && regions_of(a) == regions_of(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_voxel_size_far_from_training_is_warned_of_unless_the_model_resamples() {
        use crate::nn::unet::UNetConfig;
        use crate::nn::ModelSpec;
        use crate::train::plan::Plan;
        let unet = UNetConfig::nnunet(1, 3);
        let mut card = ModelCard {
            format: crate::train::card::CARD_FORMAT.into(),
            plan: Plan::of_sizes(
                [8; 3],
                1,
                [unet.base_features, unet.max_features],
                unet.depth,
            ),
            model: ModelSpec::Unet(unet),
            modalities: vec!["t1".into()],
            layout: crate::data::layout::LayoutKind::Brats2021,
            label_spec: LabelSpec::brats2021(),
            target: TargetSpec::Regions,
            preprocess: PreprocessSpec::default(),
            patch: [8; 3],
            training_spacing: Some([1.0; 3]),
        };
        // A card written before the spacing was recorded reads as None: no warning.
        let mut old = serde_json::to_value(&card).unwrap();
        old.as_object_mut().unwrap().remove("training_spacing");
        card = serde_json::from_value(old).unwrap();
        assert_eq!(card.training_spacing, None, "older cards read without it");
        assert_eq!(spacing_warning(&card, "c", [1.0, 1.0, 3.0]), None);
        card.training_spacing = Some([1.0, 1.0, 1.0]);
        let warning = spacing_warning(&card, "c", [1.0, 1.0, 3.0]).unwrap();
        assert!(
            warning.contains(
                "case c: voxel size 1.00x1.00x3.00 mm is far from the training \
                 cases' 1.00x1.00x1.00 mm"
            ),
            "{warning}"
        );
        assert_eq!(spacing_warning(&card, "c", [1.2, 0.9, 1.0]), None);
        // Another axis order of the same voxel size is not flagged.
        card.training_spacing = Some([1.0, 3.0, 1.0]);
        assert_eq!(spacing_warning(&card, "c", [3.0, 1.0, 1.0]), None);
        card.preprocess.target_spacing = Some([1.0; 3]);
        assert_eq!(spacing_warning(&card, "c", [1.0, 1.0, 5.0]), None);
    }

    /// Another dataset's label names over BraTS 2021's values and regions score alike (no
    /// warning needed); other values, or regions over other values, do not.
    #[test]
    fn conventions_score_alike_by_values_and_regions_not_class_names() {
        use crate::data::labels::LabelClass;
        let spec = |names: [&str; 4], values: [u8; 4], regions: &[(&str, &[u8])]| {
            let classes = names
                .iter()
                .zip(values)
                .map(|(&name, file_value)| LabelClass {
                    name: name.into(),
                    file_value,
                })
                .collect();
            let regions = regions
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_vec()))
                .collect();
            LabelSpec::new(classes, regions).unwrap()
        };
        let tumour: &[(&str, &[u8])] = &[("WT", &[1, 2, 3]), ("TC", &[1, 3]), ("ET", &[3])];
        let named = spec(
            ["background", "necrosis", "oedema", "enhancing"],
            [0, 1, 2, 4],
            tumour,
        );
        assert!(scores_alike(&LabelSpec::brats2021(), &named));
        assert!(!scores_alike(
            &LabelSpec::brats2021(),
            &LabelSpec::brats2023()
        ));
        let shifted = spec(["background", "NCR", "ED", "ET"], [0, 1, 2, 3], tumour);
        assert!(!scores_alike(&LabelSpec::brats2021(), &shifted));
        let other_regions: &[(&str, &[u8])] = &[("WT", &[1, 2, 3]), ("TC", &[1]), ("ET", &[3])];
        let regrouped = spec(
            ["background", "NCR", "ED", "ET"],
            [0, 1, 2, 4],
            other_regions,
        );
        assert!(!scores_alike(&LabelSpec::brats2021(), &regrouped));
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|m| m.to_string()).collect()
    }

    #[test]
    fn an_output_that_would_replace_an_input_image_is_found() {
        let dir = std::env::temp_dir().join(format!("voxseg-over-input-{}", std::process::id()));
        let other = dir.join("predictions");
        std::fs::create_dir_all(&other).unwrap();
        let input = dir.join("brain.nii.gz");
        std::fs::write(&input, b"image").unwrap();
        let case = CaseFiles {
            id: "brain".into(),
            images: vec![ImageFile {
                modality: "flair".into(),
                path: input.clone(),
                channel: Some(0),
            }],
            label: None,
        };
        let cases = [case];
        assert_eq!(OutputFiles::over_input(&cases, &dir), Some(input));
        // The same folder spelled another way.
        let dotted = other.join("..");
        assert!(OutputFiles::over_input(&cases, &dotted).is_some());
        assert_eq!(OutputFiles::over_input(&cases, &other), None);
        assert_eq!(OutputFiles::over_input(&cases, &dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A manifest's reference labels stored as `DIR/CASE.nii.gz` are inputs too, and one
    /// case's output may land on another case's file.
    #[test]
    fn an_output_that_would_replace_a_reference_label_is_found() {
        let dir = std::env::temp_dir().join(format!("voxseg-over-label-{}", std::process::id()));
        let labels = dir.join("labels");
        std::fs::create_dir_all(&labels).unwrap();
        let case = |id: &str, label: Option<PathBuf>| CaseFiles {
            id: id.into(),
            images: vec![ImageFile {
                modality: "t1".into(),
                path: dir.join(format!("{id}_t1.nii.gz")),
                channel: None,
            }],
            label,
        };
        let label = labels.join("a.nii.gz");
        let cases = [case("a", Some(label.clone())), case("b", None)];
        assert_eq!(OutputFiles::over_input(&cases, &labels), Some(label));
        assert_eq!(OutputFiles::over_input(&cases, &dir), None);
        // Case a_t1's prediction would be written over case a's image.
        let crossed = [case("a", None), case("a_t1", None)];
        assert_eq!(
            OutputFiles::over_input(&crossed, &dir),
            Some(dir.join("a_t1.nii.gz"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn outputs_not_written_are_the_other_options_files() {
        let opts = |probabilities, png| PredictOptions {
            checkpoint: "best".into(),
            overlap: 0.5,
            tta: false,
            probabilities,
            png,
            replace_nan: false,
            batch: 1,
            postprocess: Postprocess::default(),
        };
        let out = Path::new("o");
        let names = |paths: Vec<PathBuf>| -> Vec<String> {
            paths.iter().map(|p| p.display().to_string()).collect()
        };
        assert_eq!(
            names(OutputFiles::not_written("c1", out, &opts(false, false))),
            [
                "o/c1_probabilities.nii.gz",
                "o/c1_probabilities.json",
                "o/c1.png",
                "o/c1.nii"
            ]
        );
        assert_eq!(
            names(OutputFiles::not_written("c1", out, &opts(true, false))),
            ["o/c1.png", "o/c1.nii"]
        );
        assert_eq!(
            names(OutputFiles::not_written("c1", out, &opts(true, true))),
            ["o/c1.nii"]
        );
        assert_eq!(OutputFiles::every("c1", out).all().len(), 5);
    }

    #[test]
    fn file_names_give_the_modality_slot_and_the_case_id() {
        let brats = names(&["t1", "t1ce", "t2", "flair"]);
        let msd = names(&["FLAIR", "T1w", "t1gd", "T2w"]);
        assert_eq!(named_slot("Case_7_t1ce", &brats), Some(1));
        assert_eq!(named_slot("Case_7_t1", &brats), Some(0));
        assert_eq!(named_slot("sub-01_T1w", &brats), Some(0));
        assert_eq!(named_slot("BraTS-GLI-00001-000-t2f", &msd), Some(0));
        assert_eq!(named_slot("BRATS_001_0002", &msd), Some(2));
        assert_eq!(named_slot("patient_2019", &msd), None);
        assert_eq!(named_slot("brain", &msd), None);
        let id = |p: &str, m: &[String]| case_id_of(Path::new(p), m);
        assert_eq!(id("/d/BRATS_001_0000.nii.gz", &msd), "BRATS_001");
        assert_eq!(
            id("x/SynthBraTS2021_00002_flair.nii.gz", &brats),
            "SynthBraTS2021_00002"
        );
        assert_eq!(
            id("x/BraTS-GLI-00001-000-t1c.nii.gz", &brats),
            "BraTS-GLI-00001-000"
        );
        assert_eq!(id("brain.nii", &brats), "brain");
        assert_eq!(id("x/_t1.nii.gz", &brats), "_t1");
        // A modality the model does not take still names no part of the case id.
        let flair = names(&["flair"]);
        assert_eq!(named_slot("Case_7_t1", &flair), None);
        assert_eq!(named_brats_modality("Case_7_t1").as_deref(), Some("t1"));
        assert_eq!(named_brats_modality("Case_7_0001"), None);
        assert_eq!(id("x/Case_7_t1.nii.gz", &flair), "Case_7");
        assert_eq!(id("x/Case_7_0001.nii.gz", &flair), "Case_7_0001");
    }

    #[test]
    fn an_input_named_for_a_modality_the_model_does_not_take_is_warned_about() {
        let files = |names: &[&str]| -> Vec<PathBuf> {
            names
                .iter()
                .map(|n| PathBuf::from(format!("x/Case_7_{n}.nii.gz")))
                .collect()
        };
        let warnings = input_name_warnings(&names(&["flair"]), &files(&["t1"]));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("Case_7_t1.nii.gz is given as input 1 (flair)")
                && warnings[0].contains("its name says t1, which the model does not take"),
            "{warnings:?}"
        );
        // The case is Case_7 in both files: no warning of different cases.
        let warnings = input_name_warnings(&names(&["flair", "t1ce"]), &files(&["t1", "t1ce"]));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("input 1 (flair)"), "{warnings:?}");
        assert!(input_name_warnings(&names(&["flair"]), &files(&["flair"])).is_empty());
    }

    #[test]
    fn a_single_input_for_several_modalities_says_the_channel_order() {
        let model = names(&["t1", "t1ce", "t2", "flair"]);
        let notes = input_name_warnings(&model, &[PathBuf::from("x/BRATS_001.nii.gz")]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("note: x/BRATS_001.nii.gz is taken as one 4D image")
                && notes[0].contains("in order, t1, t1ce, t2, flair"),
            "{notes:?}"
        );
    }
}
