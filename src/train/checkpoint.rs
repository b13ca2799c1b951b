//! Checkpoints as safetensors files: named F32 little-endian tensors plus string metadata,
//! readable by the Python `safetensors` package. Which tensors and keys a checkpoint holds
//! is the trainer's business; this module only stores and checks them.
use crate::atomic;
use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// A tensor as stored: name, shape, row-major values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

struct F32View<'a> {
    shape: &'a [usize],
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            Cow::Borrowed(bytemuck::cast_slice(self.data))
        } else {
            Cow::Owned(self.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
    }
    fn data_len(&self) -> usize {
        4 * self.data.len()
    }
}

/// Writes `tensors` and `metadata` to `path` atomically (a crash leaves the old checkpoint).
pub fn save_checkpoint(
    path: &Path,
    tensors: &[NamedTensor],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut names = BTreeSet::new();
    for (name, shape, data) in tensors {
        if name.is_empty() || !names.insert(name.as_str()) {
            return Err(Error::file(
                path,
                format!("checkpoint tensor names must be unique and non-empty, got {name:?} twice or empty"),
            ));
        }
        let elements: usize = shape.iter().product();
        if elements != data.len() {
            return Err(Error::file(
                path,
                format!(
                    "tensor {name}: shape {shape:?} holds {elements} values, got {}",
                    data.len()
                ),
            ));
        }
    }
    let views = tensors
        .iter()
        .map(|(name, shape, data)| (name.as_str(), F32View { shape, data }));
    let info: HashMap<String, String> = metadata.clone().into_iter().collect();
    let bytes = safetensors::serialize(views, Some(info))
        .map_err(|e| Error::file(path, format!("encoding checkpoint: {e}")))?;
    atomic::write_bytes(path, &bytes)
}

/// Reads a checkpoint written by `save_checkpoint` (or any safetensors file of F32
/// tensors): the tensors sorted by name, and the metadata.
pub fn load_checkpoint(path: &Path) -> Result<(Vec<NamedTensor>, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::io(format!("reading checkpoint {}", path.display()), e))?;
    let corrupt = |e: safetensors::SafeTensorError| {
        Error::file(path, format!("not a valid safetensors checkpoint: {e}"))
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(corrupt)?;
    let file = SafeTensors::deserialize(&bytes).map_err(corrupt)?;
    let mut tensors = Vec::with_capacity(file.len());
    for (name, view) in file.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(Error::file(
                path,
                format!(
                    "tensor {name} is {:?}, checkpoints hold F32 only",
                    view.dtype()
                ),
            ));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.push((name, view.shape().to_vec(), values));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok((tensors, metadata))
}

/// Largest header `read_checkpoint_metadata` accepts (the safetensors format's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Reads only the metadata of a checkpoint (its JSON header), not the tensors: cheap even
/// for a large checkpoint, so it can be checked before the weights are loaded.
pub fn read_checkpoint_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    use std::io::Read;
    let read_err = |e| Error::io(format!("reading checkpoint {}", path.display()), e);
    let corrupt =
        |msg: String| Error::file(path, format!("not a valid safetensors checkpoint: {msg}"));
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| corrupt("shorter than its 8-byte header length".into()))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER_BYTES {
        return Err(corrupt(format!("header length {len} is implausible")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|_| corrupt(format!("truncated inside its {len}-byte header")))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| corrupt(format!("header: {e}")))?;
    match json.get("__metadata__") {
        None | Some(serde_json::Value::Null) => Ok(BTreeMap::new()),
        Some(meta) => serde_json::from_value(meta.clone())
            .map_err(|e| corrupt(format!("metadata is not a string map: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("voxseg-ckpt-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sample() -> (Vec<NamedTensor>, BTreeMap<String, String>) {
        let tensors = vec![
            (
                "enc.0.weight".to_string(),
                vec![2, 3],
                vec![1.0, -2.5, 3.25, 0.0, 1e-30, -7.0],
            ),
            ("enc.0.bias".to_string(), vec![3], vec![0.5, 0.25, -0.125]),
            ("step".to_string(), vec![], vec![42.0]),
        ];
        let meta = [("epoch", "3"), ("model", "{\"stages\":[32,64]}")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        (tensors, meta)
    }

    #[test]
    fn round_trip_keeps_names_shapes_values_and_metadata() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("last.safetensors");
        let (tensors, meta) = sample();
        save_checkpoint(&path, &tensors, &meta).unwrap();
        let (back, back_meta) = load_checkpoint(&path).unwrap();
        let mut want = tensors.clone();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(back, want);
        assert_eq!(back_meta, meta);
        assert_eq!(read_checkpoint_metadata(&path).unwrap(), meta);
        // The bytes are F32 little-endian at the offsets the header states.
        let bytes = std::fs::read(&path).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let bias = file.tensor("enc.0.bias").unwrap();
        assert_eq!(bias.dtype(), Dtype::F32);
        assert_eq!(&bias.data()[4..8], &0.25f32.to_le_bytes());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_missing_and_wrong_dtype_files_are_clear_errors() {
        let dir = temp_dir("bad");
        let path = dir.join("c.safetensors");
        let (tensors, meta) = sample();
        save_checkpoint(&path, &tensors, &meta).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let err = load_checkpoint(&path).unwrap_err().to_string();
        assert!(
            err.contains("c.safetensors") && err.contains("not a valid safetensors"),
            "{err}"
        );
        std::fs::write(&path, b"garbage").unwrap();
        let err = read_checkpoint_metadata(&path).unwrap_err().to_string();
        assert!(
            err.contains("c.safetensors") && err.contains("shorter"),
            "{err}"
        );
        assert!(load_checkpoint(&path)
            .unwrap_err()
            .to_string()
            .contains("not a valid"));

        let err = load_checkpoint(&dir.join("absent.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("reading checkpoint") && err.contains("absent.safetensors"),
            "{err}"
        );

        let half = [0u8; 4];
        let view = TensorView::new(Dtype::F16, vec![2], &half).unwrap();
        std::fs::write(&path, safetensors::serialize([("w", view)], None).unwrap()).unwrap();
        let err = load_checkpoint(&path).unwrap_err().to_string();
        assert!(err.contains("tensor w is F16"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn inconsistent_tensors_are_refused_and_the_old_file_kept() {
        let dir = temp_dir("refuse");
        let path = dir.join("c.safetensors");
        let (tensors, meta) = sample();
        save_checkpoint(&path, &tensors, &meta).unwrap();
        let bad_shape = vec![("w".to_string(), vec![2, 2], vec![0.0; 3])];
        let err = save_checkpoint(&path, &bad_shape, &meta)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tensor w: shape [2, 2] holds 4 values, got 3"),
            "{err}"
        );
        let twice = vec![
            ("w".to_string(), vec![1], vec![0.0]),
            ("w".to_string(), vec![1], vec![1.0]),
        ];
        assert!(save_checkpoint(&path, &twice, &meta).is_err());
        assert_eq!(load_checkpoint(&path).unwrap().0.len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
