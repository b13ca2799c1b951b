//! `model.json`: everything `predict` needs besides the weights: the architecture, the
//! modalities in input order, the label convention and target, the preprocessing (with
//! dataset statistics when used) and the patch the model was trained on.
use crate::data::labels::{LabelSpec, TargetSpec};
use crate::data::layout::LayoutKind;
use crate::data::preprocess::PreprocessSpec;
use crate::error::{Error, Result};
use crate::nn::ModelSpec;
use crate::train::plan::Plan;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelCard {
    pub format: String,
    pub model: ModelSpec,
    /// Modality names as the training dataset spells them, in input-channel order.
    pub modalities: Vec<String>,
    /// The layout the model was trained on: predictions are written in its label convention.
    pub layout: LayoutKind,
    pub label_spec: LabelSpec,
    pub target: TargetSpec,
    pub preprocess: PreprocessSpec,
    pub patch: [usize; 3],
    pub plan: Plan,
}

pub const CARD_FORMAT: &str = "voxseg-model-1";

impl ModelCard {
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::file(path, format!("cannot encode: {e}")))?;
        crate::atomic::write_bytes(path, text.as_bytes())
    }
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let card: ModelCard = serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("not a voxseg model description: {e}")))?;
        if card.format != CARD_FORMAT {
            return Err(Error::file(
                path,
                format!("format '{}' is not {CARD_FORMAT}", card.format),
            ));
        }
        Ok(card)
    }
}
