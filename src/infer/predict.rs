//! `predict`: a trained run applied to new cases. Each case is loaded with the run's
//! modalities, preprocessed as in training, predicted window by window, turned into labels
//! (nnU-Net's region painting or argmax), pasted back into its full volume and written in
//! the label convention of the layout the model was trained on, with the input's header.
use super::{interleave_channels, predict_logits, probabilities, SlidingWindow};
use crate::backend::Backend;
use crate::data::case::{load_case, NanPolicy};
use crate::data::layout::{CaseFiles, Dataset, ImageFile};
use crate::data::nifti::{write_label_map, write_probability_map};
use crate::data::preprocess::{paste_back_labels, paste_back_probs, preprocess};
use crate::error::{Error, Result};
use crate::log::{overlay_slices, write_png};
use crate::nn::Model;
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
}

/// What was written for one case.
#[derive(Clone, Debug)]
pub struct Predicted {
    pub case: String,
    pub labels: PathBuf,
    pub probabilities: Option<PathBuf>,
    pub picture: Option<PathBuf>,
}

/// A trained model ready to predict.
pub struct Predictor<B: Backend> {
    pub card: ModelCard,
    model: Model<B>,
    backend: B,
}

impl<B: Backend> Predictor<B> {
    pub fn open(backend: &B, run: &Path, checkpoint: &str) -> Result<Self> {
        let dir = RunDir {
            root: run.to_path_buf(),
        };
        let card = ModelCard::load(&dir.model())?;
        let path = match checkpoint {
            "best" | "last" => dir.checkpoint(checkpoint),
            other => PathBuf::from(other),
        };
        if !path.exists() {
            return Err(Error::file(
                &path,
                "checkpoint not found (has the run finished an epoch?)",
            ));
        }
        let mut model = Model::new(backend, &card.model, 0)?;
        load_state(&path, backend, &mut model, None)?;
        Ok(Self {
            card,
            model,
            backend: backend.clone(),
        })
    }

    /// A dataset made of loose files, one per modality in the model's input order.
    pub fn files_as_dataset(&self, files: &[PathBuf]) -> Result<Dataset> {
        if files.len() != self.card.modalities.len() {
            return Err(Error::config(
                "input",
                format!(
                    "{} files given; the model takes {} modalities in this order: {}",
                    files.len(),
                    self.card.modalities.len(),
                    self.card.modalities.join(", ")
                ),
            ));
        }
        let name = files[0]
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "case".into());
        let stem = name.trim_end_matches(".gz").trim_end_matches(".nii");
        // `CASE_t1.nii.gz` (BraTS) or `CASE_0000.nii.gz` (nnU-Net) names the case `CASE`.
        let id = stem
            .rsplit_once(['_', '-'])
            .filter(|(_, suffix)| {
                (suffix.len() == 4 && suffix.chars().all(|c| c.is_ascii_digit()))
                    || suffix.eq_ignore_ascii_case(&self.card.modalities[0])
            })
            .map_or(stem, |(case, _)| case)
            .to_string();
        Ok(Dataset {
            layout: self.card.layout,
            root: files[0].parent().map(Path::to_path_buf).unwrap_or_default(),
            modalities: self.card.modalities.clone(),
            label_spec: self.card.label_spec.clone(),
            cases: vec![CaseFiles {
                id,
                images: files
                    .iter()
                    .zip(&self.card.modalities)
                    .map(|(p, m)| ImageFile {
                        modality: m.clone(),
                        path: p.clone(),
                        channel: None,
                    })
                    .collect(),
                label: None,
            }],
            test_cases: Vec::new(),
        })
    }

    /// Predicts one case of `dataset` and writes its files into `out`.
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
        let (data, header) = load_case(dataset, case, &channels, nan)?;
        let prep = preprocess(&data, &self.card.preprocess)?;
        let [x, y, z] = prep.dims();
        let image = interleave_channels(&prep.channels)?;
        let window = SlidingWindow {
            patch: self.card.patch,
            overlap: opts.overlap,
            batch: opts.batch,
            tta: opts.tta,
        };
        let k = self.card.model.out_channels();
        let logits = predict_logits(
            &mut self.model,
            &self.backend,
            &image,
            [z, y, x],
            prep.channels.len(),
            &window,
        )?;
        let probs = probabilities(&self.card.target, &logits, k);
        let classes = self.card.target.decode(&self.card.label_spec, &probs)?;
        let full = paste_back_labels(&classes, &prep.crop)?;
        let values = self.card.label_spec.to_file_values(&full.data)?;
        let labels_path = out.join(format!("{}.nii.gz", case.id));
        write_label_map(&labels_path, &header, &values)?;
        let probabilities = if opts.probabilities {
            let fill: Vec<f32> = match self.card.target {
                crate::data::labels::TargetSpec::Classes => {
                    (0..k).map(|c| if c == 0 { 1.0 } else { 0.0 }).collect()
                }
                _ => vec![0.0; k],
            };
            let full_probs = paste_back_probs(&probs, k, &fill, &prep.crop)?;
            let path = out.join(format!("{}_probabilities.nii.gz", case.id));
            write_probability_map(&path, &header, k, &full_probs)?;
            Some(path)
        } else {
            None
        };
        let picture = if opts.png {
            let truth = data.label.as_ref().map(|l| l.data.as_slice());
            let (rgb, w, h) = overlay_slices(
                &data.channels[0].data,
                data.dims(),
                Some(&full.data),
                truth,
                None,
            )?;
            let path = out.join(format!("{}.png", case.id));
            write_png(&path, &rgb, w, h)?;
            Some(path)
        } else {
            None
        };
        Ok(Predicted {
            case: case.id.clone(),
            labels: labels_path,
            probabilities,
            picture,
        })
    }
}
