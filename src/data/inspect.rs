//! `voxseg inspect`: a JSON summary of a NIfTI file (shape, voxel size, type, affine and
//! intensity statistics after scaling).
use crate::data::nifti::NiftiFile;
use crate::error::Result;
use serde_json::{json, Value};
use std::path::Path;

/// Summarises one file: `path`, `shape` (3 or 4 sizes), `voxel_size` (mm, x y z),
/// `datatype`, `scl_slope`/`scl_inter`, `qform_code`/`sform_code`, `affine` (4x4, mm,
/// row-major: the sform when sform_code > 0, else the qform), and `min`, `max`, `mean` of
/// the finite voxels after scaling, with `non_finite` counting the others.
pub fn inspect_file(path: &Path) -> Result<Value> {
    let file = NiftiFile::open(path)?;
    let h = file.header();
    let mut shape = h.dims.to_vec();
    if h.channels > 1 {
        shape.push(h.channels);
    }
    let (mut min, mut max, mut sum, mut finite, mut non_finite) =
        (f64::INFINITY, f64::NEG_INFINITY, 0.0f64, 0usize, 0usize);
    for c in 0..h.channels {
        for v in file.channel(c)? {
            if v.is_finite() {
                let v = v as f64;
                min = min.min(v);
                max = max.max(v);
                sum += v;
                finite += 1;
            } else {
                non_finite += 1;
            }
        }
    }
    let stat = |v: f64| if finite > 0 { json!(v) } else { Value::Null };
    Ok(json!({
        "path": path.display().to_string(),
        "shape": shape,
        "voxel_size": h.spacing,
        "datatype": h.datatype.name(),
        "scl_slope": h.scl_slope,
        "scl_inter": h.scl_inter,
        "qform_code": h.qform_code,
        "sform_code": h.sform_code,
        "affine": h.affine(),
        "min": stat(min),
        "max": stat(max),
        "mean": stat(sum / finite.max(1) as f64),
        "non_finite": non_finite,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::nifti::{write_nifti, NiftiHeaderInfo, VoxelData};

    #[test]
    fn reports_shape_scaled_statistics_and_the_sform() {
        let dir = std::env::temp_dir().join(format!("voxseg-inspect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut h = NiftiHeaderInfo::new([2, 2, 1], [0.5, 1.0, 2.0]);
        h.srow[0][3] = -7.0;
        let path = dir.join("a.nii.gz");
        write_nifti(&path, &h, 1, VoxelData::Int16(&[0, 2, 4, 10]), (0.5, 1.0)).unwrap();
        let v = inspect_file(&path).unwrap();
        assert_eq!(v["shape"], json!([2, 2, 1]));
        assert_eq!(v["voxel_size"], json!([0.5, 1.0, 2.0]));
        assert_eq!(v["datatype"], "int16");
        assert_eq!(v["min"], json!(1.0));
        assert_eq!(v["max"], json!(6.0));
        assert_eq!(v["mean"], json!(3.0));
        assert_eq!(v["affine"][0], json!([0.5, 0.0, 0.0, -7.0]));
        assert_eq!(v["affine"][3], json!([0.0, 0.0, 0.0, 1.0]));
        assert_eq!(v["non_finite"], 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
