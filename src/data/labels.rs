//! Label conventions, in one place: which values a dataset's label files hold, what they
//! are called, which internal class each becomes, the named regions (sets of classes such
//! as BraTS's WT/TC/ET) and how a training target is built from a label map and turned
//! back into classes.
//!
//! Internal classes are 0..K-1 with 0 = background, in the order of `LabelSpec::classes`.
use crate::error::{Error, Result};
use std::path::Path;

/// One class: its name and the value that stands for it in label files.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabelClass {
    pub name: String,
    pub file_value: u8,
}

/// A named set of internal classes. `paint` is the class a voxel receives when the region
/// is the most specific one predicted there (the one class of this region that no later
/// region contains), which is how region predictions become a label map.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Region {
    pub name: String,
    pub classes: Vec<u8>,
    pub paint: u8,
}

/// The label convention of a dataset. Built only through `LabelSpec::new`, which checks it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "LabelSpecFields")]
pub struct LabelSpec {
    classes: Vec<LabelClass>,
    regions: Vec<Region>,
    #[serde(skip)]
    class_of_value: Vec<Option<u8>>,
}

#[derive(serde::Deserialize)]
struct LabelSpecFields {
    classes: Vec<LabelClass>,
    regions: Vec<RegionFields>,
}

#[derive(serde::Deserialize)]
struct RegionFields {
    name: String,
    classes: Vec<u8>,
}

impl TryFrom<LabelSpecFields> for LabelSpec {
    type Error = Error;
    fn try_from(f: LabelSpecFields) -> Result<Self> {
        LabelSpec::new(
            f.classes,
            f.regions.into_iter().map(|r| (r.name, r.classes)).collect(),
        )
    }
}

fn class_list(spec: &[(&str, u8)]) -> Vec<LabelClass> {
    spec.iter()
        .map(|(name, value)| LabelClass {
            name: name.to_string(),
            file_value: *value,
        })
        .collect()
}

fn regions(spec: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    spec.iter()
        .map(|(name, classes)| (name.to_string(), classes.to_vec()))
        .collect()
}

impl LabelSpec {
    /// Checks and builds a spec. `classes[0]` is the background; file values and names
    /// must be unique; regions are listed from the largest to the most specific (the order
    /// they are painted in) and each must own exactly one class that no later region has.
    pub fn new(classes: Vec<LabelClass>, regions: Vec<(String, Vec<u8>)>) -> Result<Self> {
        let bad = |msg: String| Error::config("label spec", msg);
        if classes.len() < 2 {
            return Err(bad(format!(
                "needs a background and at least one class, got {} class(es)",
                classes.len()
            )));
        }
        let mut class_of_value = vec![None; 256];
        for (i, c) in classes.iter().enumerate() {
            if class_of_value[c.file_value as usize]
                .replace(i as u8)
                .is_some()
            {
                return Err(bad(format!("file value {} is used twice", c.file_value)));
            }
            if classes[..i]
                .iter()
                .any(|o| o.name.eq_ignore_ascii_case(&c.name))
            {
                return Err(bad(format!("class name '{}' is used twice", c.name)));
            }
        }
        let k = classes.len() as u8;
        let mut checked: Vec<Region> = Vec::with_capacity(regions.len());
        for (i, (name, members)) in regions.iter().enumerate() {
            if members.is_empty() || members.iter().any(|&c| c == 0 || c >= k) {
                return Err(bad(format!(
                    "region '{name}' must list classes among 1..{}, got {members:?}",
                    k - 1
                )));
            }
            if regions[..i]
                .iter()
                .any(|(o, _)| o.eq_ignore_ascii_case(name))
            {
                return Err(bad(format!("region name '{name}' is used twice")));
            }
            let own: Vec<u8> = members
                .iter()
                .copied()
                .filter(|c| !regions[i + 1..].iter().any(|(_, later)| later.contains(c)))
                .collect();
            if own.len() != 1 {
                return Err(bad(format!(
                    "region '{name}' must have exactly one class that no later region has \
                     (to paint predictions), it has {own:?}; list regions from the largest \
                     to the most specific"
                )));
            }
            let mut sorted = members.clone();
            sorted.sort_unstable();
            sorted.dedup();
            checked.push(Region {
                name: name.clone(),
                classes: sorted,
                paint: own[0],
            });
        }
        Ok(Self {
            classes,
            regions: checked,
            class_of_value,
        })
    }

    /// BraTS up to 2021: 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing.
    pub fn brats2021() -> Self {
        Self::new(
            class_list(&[("background", 0), ("NCR", 1), ("ED", 2), ("ET", 4)]),
            regions(&[("WT", &[1, 2, 3]), ("TC", &[1, 3]), ("ET", &[3])]),
        )
        .expect("the BraTS 2021 spec is valid")
    }

    /// BraTS 2023 and later: enhancing is 3; 2024's 4 (resection cavity) is a class in no
    /// region, so it counts as neither WT nor TC.
    pub fn brats2023() -> Self {
        Self::new(
            class_list(&[
                ("background", 0),
                ("NCR", 1),
                ("ED", 2),
                ("ET", 3),
                ("RC", 4),
            ]),
            regions(&[("WT", &[1, 2, 3]), ("TC", &[1, 3]), ("ET", &[3])]),
        )
        .expect("the BraTS 2023 spec is valid")
    }

    /// A spec from named classes; when the names are recognisably the brain-tumour
    /// sub-regions (oedema, non-enhancing/necrotic core, enhancing, or their BraTS
    /// abbreviations ED/SNFH, NCR, ET), WT/TC/ET are added,
    /// as for MSD Task01 (1 oedema, 2 non-enhancing, 3 enhancing -> WT {1,2,3}, TC {2,3},
    /// ET {3}).
    pub fn with_tumour_regions_by_name(classes: Vec<LabelClass>) -> Result<Self> {
        let find = |pred: &dyn Fn(&str) -> bool| -> Option<u8> {
            let hits: Vec<u8> = classes
                .iter()
                .enumerate()
                .skip(1)
                .filter(|(_, c)| pred(&c.name.to_ascii_lowercase().replace(['_', '-'], " ")))
                .map(|(i, _)| i as u8)
                .collect();
            (hits.len() == 1).then(|| hits[0])
        };
        let core = |n: &str| n.contains("non enhancing") || n.contains("necro") || n == "ncr";
        let enhancing = |n: &str| (n.contains("enhancing") && !core(n)) || n == "et";
        let oedema = |n: &str| n.contains("edema") || n == "ed" || n == "snfh";
        let tumour = (find(&oedema), find(&core), find(&enhancing));
        let regions = match tumour {
            (Some(ed), Some(nc), Some(et)) => vec![
                ("WT".to_string(), vec![ed, nc, et]),
                ("TC".to_string(), vec![nc, et]),
                ("ET".to_string(), vec![et]),
            ],
            _ => Vec::new(),
        };
        Self::new(classes, regions)
    }

    pub fn classes(&self) -> &[LabelClass] {
        &self.classes
    }

    /// The class names by internal index, background first.
    pub fn class_names(&self) -> Vec<String> {
        self.classes.iter().map(|c| c.name.clone()).collect()
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// The file values this spec accepts, in class order.
    pub fn file_values(&self) -> Vec<u8> {
        self.classes.iter().map(|c| c.file_value).collect()
    }

    /// The internal class with this name (case-insensitive).
    pub fn class_by_name(&self, name: &str) -> Option<u8> {
        self.classes
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
            .map(|i| i as u8)
    }

    /// The internal class of a label-file value, if the value is one of the spec's.
    pub fn class_of_value(&self, value: f32) -> Option<u8> {
        if value.fract() != 0.0 || !(0.0..=255.0).contains(&value) {
            return None;
        }
        self.class_of_value[value as usize]
    }

    /// Maps the values of a label file (`path`, of case `case`, grid `dims` (x, y, z)) to
    /// internal classes; a value outside the spec is an error naming the case, the file,
    /// the value and its position.
    pub fn to_classes(
        &self,
        values: &[f32],
        dims: [usize; 3],
        case: &str,
        path: &Path,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(values.len());
        for (i, &v) in values.iter().enumerate() {
            match self.class_of_value(v) {
                Some(c) => out.push(c),
                None => {
                    // A float label map written by resampling or arithmetic holds values a
                    // hair off its integers: say so, rather than only that the value is
                    // foreign.
                    let nearest = v.round();
                    let round_off = v.fract() != 0.0
                        && (v - nearest).abs() < 1e-3
                        && self.class_of_value(nearest).is_some();
                    let hint = if round_off {
                        format!(
                            " (float round-off of {nearest}? round the label map to integers \
                             and store it as an integer type)"
                        )
                    } else {
                        String::new()
                    };
                    return Err(Error::file(
                        path,
                        format!(
                            "case {case}: label value {v} at {} is not one of \
                             this layout's values {:?}{hint}",
                            crate::data::grid::position_text(i, dims),
                            self.file_values()
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Maps internal classes back to file values, for writing predictions.
    pub fn to_file_values(&self, classes: &[u8]) -> Result<Vec<u8>> {
        let values = self.file_values();
        classes
            .iter()
            .map(|&c| {
                values.get(c as usize).copied().ok_or_else(|| {
                    Error::data(
                        "label map",
                        format!("class {c} is outside 0..{}", values.len() - 1),
                    )
                })
            })
            .collect()
    }
}

/// A class given by name or by internal index.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum ClassRef {
    Index(usize),
    Name(String),
}

// By hand: the derived untagged form answers anything else with "data did not match any
// variant of untagged enum ClassRef".
impl<'de> serde::Deserialize<'de> for ClassRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let value = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
        let index = value.as_u64().and_then(|i| usize::try_from(i).ok());
        match (value, index) {
            (serde_json::Value::String(name), _) => Ok(ClassRef::Name(name)),
            (_, Some(i)) => Ok(ClassRef::Index(i)),
            (other, None) => Err(serde::de::Error::custom(format!(
                "a class is a name or an index from 1 (0 is the background), not {other}"
            ))),
        }
    }
}

/// What a network is trained to output.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetSpec {
    /// One independent sigmoid channel per region (nnU-Net's region-based training).
    Regions,
    /// A softmax over all classes, background included.
    Classes,
    /// One sigmoid channel: this class against everything else.
    Class(ClassRef),
}

impl std::str::FromStr for TargetSpec {
    type Err = Error;
    /// `regions`, `classes`, `class:NAME` or `class:INDEX`.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "regions" => Ok(TargetSpec::Regions),
            "classes" => Ok(TargetSpec::Classes),
            _ => match s.split_once(':') {
                Some((kind, what)) if kind.eq_ignore_ascii_case("class") && !what.is_empty() => {
                    Ok(TargetSpec::Class(match what.parse::<usize>() {
                        Ok(i) => ClassRef::Index(i),
                        Err(_) => ClassRef::Name(what.to_string()),
                    }))
                }
                _ => Err(Error::config(
                    "target",
                    format!("'{s}': expected regions, classes, class:NAME or class:INDEX"),
                )),
            },
        }
    }
}

/// As a user writes it (`--target`): `regions`, `classes`, `class:NAME` or `class:N`.
impl std::fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetSpec::Regions => f.write_str("regions"),
            TargetSpec::Classes => f.write_str("classes"),
            TargetSpec::Class(ClassRef::Name(name)) => write!(f, "class:{name}"),
            TargetSpec::Class(ClassRef::Index(i)) => write!(f, "class:{i}"),
        }
    }
}

impl TargetSpec {
    /// Number of output channels.
    pub fn channels(&self, spec: &LabelSpec) -> usize {
        match self {
            TargetSpec::Regions => spec.regions.len(),
            TargetSpec::Classes => spec.classes.len(),
            TargetSpec::Class(_) => 1,
        }
    }

    /// Checks that the target fits the spec: regions exist, the class is known.
    pub fn validate(&self, spec: &LabelSpec) -> Result<()> {
        match self {
            TargetSpec::Regions if spec.regions.is_empty() => Err(Error::config(
                "target",
                "this dataset defines no regions; use classes or class:NAME",
            )),
            TargetSpec::Class(r) => self.resolve(spec, r).map(|_| ()),
            _ => Ok(()),
        }
    }

    /// The one foreground class a `class:` target predicts (internal index); None for the
    /// other targets.
    pub fn single_class(&self, spec: &LabelSpec) -> Result<Option<u8>> {
        match self {
            TargetSpec::Class(r) => self.resolve(spec, r).map(Some),
            _ => Ok(None),
        }
    }

    fn resolve(&self, spec: &LabelSpec, r: &ClassRef) -> Result<u8> {
        let found = match r {
            ClassRef::Index(i) => (*i > 0 && *i < spec.classes.len()).then_some(*i as u8),
            ClassRef::Name(n) => spec.class_by_name(n).filter(|&c| c > 0),
        };
        found.ok_or_else(|| {
            let names: Vec<String> = spec
                .classes
                .iter()
                .enumerate()
                .skip(1)
                .map(|(i, c)| format!("{i}={}", c.name))
                .collect();
            let shown = match r {
                ClassRef::Index(i) => i.to_string(),
                ClassRef::Name(n) => format!("'{n}'"),
            };
            // Users often give a label file's value (BraTS's ET is 4 in files, class 3).
            let file_value_hint = match r {
                ClassRef::Index(i) => spec
                    .classes
                    .iter()
                    .enumerate()
                    .skip(1)
                    .find(|(_, c)| c.file_value as usize == *i)
                    .map(|(k, c)| {
                        format!(
                            "; file value {i} is class {k} ({0}): use class:{k} or class:{0}",
                            c.name
                        )
                    })
                    .unwrap_or_default(),
                ClassRef::Name(_) => String::new(),
            };
            Error::config(
                "target",
                format!(
                    "class {shown} is not a foreground class; the classes are {}{file_value_hint}",
                    names.join(", ")
                ),
            )
        })
    }

    /// The target for a patch of internal classes: `channels` values per voxel,
    /// channels last (one-hot for classes, membership for regions).
    pub fn encode(&self, spec: &LabelSpec, labels: &[u8]) -> Result<Vec<f32>> {
        self.validate(spec)?;
        let k = spec.classes.len();
        if let Some(&bad) = labels.iter().find(|&&c| c as usize >= k) {
            return Err(Error::data(
                "target",
                format!("label class {bad} is outside 0..{}", k - 1),
            ));
        }
        Ok(match self {
            TargetSpec::Classes => {
                let mut out = vec![0.0; labels.len() * k];
                for (row, &c) in out.chunks_exact_mut(k).zip(labels) {
                    row[c as usize] = 1.0;
                }
                out
            }
            TargetSpec::Regions => {
                let r = spec.regions.len();
                let member: Vec<Vec<f32>> = (0..k as u8)
                    .map(|c| {
                        spec.regions
                            .iter()
                            .map(|reg| reg.classes.contains(&c) as u8 as f32)
                            .collect()
                    })
                    .collect();
                let mut out = Vec::with_capacity(labels.len() * r);
                for &c in labels {
                    out.extend_from_slice(&member[c as usize]);
                }
                out
            }
            TargetSpec::Class(r) => {
                let class = self.resolve(spec, r)?;
                labels.iter().map(|&c| (c == class) as u8 as f32).collect()
            }
        })
    }

    /// Turns per-voxel channel probabilities (channels last) into internal classes:
    /// argmax for classes; for regions nnU-Net's rule (each region thresholded at 0.5 and
    /// painted in order, WT then TC then ET, later regions overwriting); for one class,
    /// that class where its probability exceeds 0.5.
    pub fn decode(&self, spec: &LabelSpec, probs: &[f32]) -> Result<Vec<u8>> {
        self.validate(spec)?;
        let c = self.channels(spec);
        if !probs.len().is_multiple_of(c) {
            return Err(Error::data(
                "decode",
                format!(
                    "{} probabilities is not a multiple of {c} channels",
                    probs.len()
                ),
            ));
        }
        let rows = probs.chunks_exact(c);
        Ok(match self {
            TargetSpec::Classes => rows
                .map(|row| {
                    let mut best = 0;
                    for (i, &p) in row.iter().enumerate() {
                        if p > row[best] {
                            best = i;
                        }
                    }
                    best as u8
                })
                .collect(),
            TargetSpec::Regions => rows
                .map(|row| {
                    spec.regions
                        .iter()
                        .zip(row)
                        .fold(0, |acc, (reg, &p)| if p > 0.5 { reg.paint } else { acc })
                })
                .collect(),
            TargetSpec::Class(r) => {
                let class = self.resolve(spec, r)?;
                rows.map(|row| if row[0] > 0.5 { class } else { 0 })
                    .collect()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brats_conventions_map_values_and_paint_regions() {
        let s21 = LabelSpec::brats2021();
        assert_eq!(s21.file_values(), vec![0, 1, 2, 4]);
        let paints: Vec<u8> = s21.regions().iter().map(|r| r.paint).collect();
        assert_eq!(
            paints,
            vec![2, 1, 3],
            "WT paints ED, TC paints NCR, ET paints ET"
        );
        let classes = s21
            .to_classes(
                &[0.0, 1.0, 2.0, 4.0],
                [4, 1, 1],
                "c",
                Path::new("seg.nii.gz"),
            )
            .unwrap();
        assert_eq!(classes, vec![0, 1, 2, 3]);
        assert_eq!(s21.to_file_values(&classes).unwrap(), vec![0, 1, 2, 4]);
        let mut values = vec![0.0; 2 * 3 * 4];
        values[2 * 3 + 2 + 1] = 3.0;
        let err = s21
            .to_classes(
                &values,
                [2, 3, 4],
                "BraTS2021_00001",
                Path::new("x_seg.nii.gz"),
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("BraTS2021_00001")
                && err.contains("x_seg.nii.gz")
                && err.contains("value 3 at (x=1, y=1, z=1)"),
            "{err}"
        );
        let err = |v: f32| {
            s21.to_classes(&[v], [1, 1, 1], "c", Path::new("s"))
                .unwrap_err()
                .to_string()
        };
        assert!(!err(1.5).contains("round-off"), "{}", err(1.5));
        assert!(
            err(1.000_000_1).contains("float round-off of 1?"),
            "{}",
            err(1.000_000_1)
        );
        // Near an integer the layout does not use (3): no such hint.
        assert!(
            !err(3.000_000_2).contains("round-off"),
            "{}",
            err(3.000_000_2)
        );

        let s23 = LabelSpec::brats2023();
        assert_eq!(s23.class_of_value(3.0), Some(3));
        assert_eq!(s23.class_of_value(4.0), Some(4));
        let wt = &s23.regions()[0];
        assert_eq!(
            (wt.name.as_str(), wt.classes.clone()),
            ("WT", vec![1, 2, 3])
        );
        assert!(!s23.regions().iter().any(|r| r.classes.contains(&4)));
    }

    #[test]
    fn msd_names_give_msd_regions() {
        let s = LabelSpec::with_tumour_regions_by_name(class_list(&[
            ("background", 0),
            ("edema", 1),
            ("non-enhancing tumor", 2),
            ("enhancing tumour", 3),
        ]))
        .unwrap();
        let r: Vec<(String, Vec<u8>, u8)> = s
            .regions()
            .iter()
            .map(|r| (r.name.clone(), r.classes.clone(), r.paint))
            .collect();
        assert_eq!(
            r,
            vec![
                ("WT".into(), vec![1, 2, 3], 1),
                ("TC".into(), vec![2, 3], 2),
                ("ET".into(), vec![3], 3)
            ]
        );
        // BraTS' abbreviations, in nnU-Net's order of the BraTS conversion.
        let short = LabelSpec::with_tumour_regions_by_name(class_list(&[
            ("background", 0),
            ("ED", 1),
            ("NCR", 2),
            ("ET", 3),
        ]))
        .unwrap();
        let r: Vec<(String, Vec<u8>)> = short
            .regions()
            .iter()
            .map(|r| (r.name.clone(), r.classes.clone()))
            .collect();
        assert_eq!(
            r,
            vec![
                ("WT".into(), vec![1, 2, 3]),
                ("TC".into(), vec![2, 3]),
                ("ET".into(), vec![3])
            ]
        );
        let plain = LabelSpec::with_tumour_regions_by_name(class_list(&[
            ("background", 0),
            ("liver", 1),
            ("tumour", 2),
        ]))
        .unwrap();
        assert!(plain.regions().is_empty());
        let err = TargetSpec::Regions
            .validate(&plain)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no regions"), "{err}");
    }

    #[test]
    fn invalid_specs_are_refused() {
        let c = class_list(&[("background", 0), ("a", 1), ("b", 2)]);
        assert!(LabelSpec::new(class_list(&[("background", 0), ("a", 0)]), vec![]).is_err());
        assert!(LabelSpec::new(c.clone(), regions(&[("r", &[0, 1])])).is_err());
        let err = LabelSpec::new(c.clone(), regions(&[("both", &[1, 2])]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly one class"), "{err}");
        assert!(LabelSpec::new(c, regions(&[("both", &[1, 2]), ("b", &[2])])).is_ok());
    }

    #[test]
    fn targets_encode_and_decode() {
        let s = LabelSpec::brats2021();
        let labels = [0u8, 1, 2, 3];
        let regions = TargetSpec::Regions.encode(&s, &labels).unwrap();
        #[rustfmt::skip]
        assert_eq!(regions, vec![
            0.0, 0.0, 0.0,
            1.0, 1.0, 0.0,
            1.0, 0.0, 0.0,
            1.0, 1.0, 1.0,
        ]);
        assert_eq!(
            TargetSpec::Regions.decode(&s, &regions).unwrap(),
            labels.to_vec()
        );
        // nnU-Net's painting: ET above 0.5 wins even where WT is below 0.5.
        assert_eq!(
            TargetSpec::Regions.decode(&s, &[0.2, 0.3, 0.9]).unwrap(),
            vec![3]
        );
        assert_eq!(
            TargetSpec::Regions.decode(&s, &[0.6, 0.4, 0.1]).unwrap(),
            vec![2]
        );

        let onehot = TargetSpec::Classes.encode(&s, &[2, 0]).unwrap();
        assert_eq!(onehot, vec![0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
        let dec = TargetSpec::Classes
            .decode(&s, &[0.1, 0.2, 0.6, 0.1, 0.4, 0.3, 0.2, 0.1])
            .unwrap();
        assert_eq!(dec, vec![2, 0]);
        assert_eq!(TargetSpec::Classes.channels(&s), 4);

        let et: TargetSpec = "class:et".parse().unwrap();
        assert_eq!(et, TargetSpec::Class(ClassRef::Name("et".into())));
        assert_eq!(et.encode(&s, &labels).unwrap(), vec![0.0, 0.0, 0.0, 1.0]);
        assert_eq!(et.decode(&s, &[0.7, 0.2]).unwrap(), vec![3, 0]);
        let by_index: TargetSpec = "class:2".parse().unwrap();
        assert_eq!(
            by_index.encode(&s, &labels).unwrap(),
            vec![0.0, 0.0, 1.0, 0.0]
        );
        assert!("class:9"
            .parse::<TargetSpec>()
            .unwrap()
            .validate(&s)
            .is_err());
        assert!("softmax".parse::<TargetSpec>().is_err());
        assert!(TargetSpec::Classes.encode(&s, &[7]).is_err());
    }

    #[test]
    fn targets_print_as_the_flag_spells_them() {
        for text in ["regions", "classes", "class:tumor", "class:2"] {
            let target: TargetSpec = text.parse().unwrap();
            assert_eq!(target.to_string(), text);
        }
    }

    #[test]
    fn spec_and_target_round_trip_through_json() {
        let s = LabelSpec::brats2023();
        let json = serde_json::to_string(&s).unwrap();
        let back: LabelSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.class_of_value(3.0), Some(3));
        let t = TargetSpec::Class(ClassRef::Name("ET".into()));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"class":"ET"}"#);
        assert_eq!(serde_json::from_str::<TargetSpec>(&json).unwrap(), t);
        assert_eq!(
            serde_json::to_string(&TargetSpec::Regions).unwrap(),
            r#""regions""#
        );
    }

    #[test]
    fn an_unknown_target_class_is_named_plainly_with_the_file_value_hint() {
        let spec = LabelSpec::brats2021();
        let err = |t: &str| {
            t.parse::<TargetSpec>()
                .unwrap()
                .validate(&spec)
                .unwrap_err()
                .to_string()
        };
        let four = err("class:4");
        assert!(
            four.contains("class 4 is not a foreground class")
                && four.contains("file value 4 is class 3 (ET): use class:3 or class:ET")
                && !four.contains("Index"),
            "{four}"
        );
        let foo = err("class:foo");
        assert!(
            foo.contains("class 'foo' is not a foreground class") && !foo.contains("Name("),
            "{foo}"
        );
        assert!(!err("class:9").contains("file value"));
    }
}
