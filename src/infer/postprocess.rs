//! Postprocessing of predicted label maps: the connected-component filters nnU-Net and
//! MONAI apply after prediction, and the BraTS rule that drops a region predicted too
//! small to trust. A spec is a comma-separated list of steps, applied in order:
//!
//! - `largest[:NAME]`: keep only the largest connected component (every one of that size
//!   on a tie, as nnU-Net does; MONAI keeps one);
//! - `min-component[:NAME]:N`: remove the connected components of fewer than N voxels;
//! - `min-volume[:NAME]:N`: remove all of it when it holds fewer than N voxels in all;
//! - `none`: nothing;
//! - `connectivity:6|18|26`: which voxels touch, for every step of the spec: 6 share a
//!   face, 18 a face or an edge, 26 any corner. 26 is the default, as in nnU-Net and
//!   MONAI's `KeepLargestConnectedComponent`; MONAI's `RemoveSmallObjects` and
//!   scikit-image's `remove_small_objects` use 6.
//!
//! Without NAME a step acts on the whole foreground: with regions, their union (the
//! tumour; a class in no region, such as BraTS 2024's resection cavity, is left alone),
//! else every class but background; its removed voxels become background. NAME is a region
//! (BraTS's WT, TC, ET; nnU-Net's spelled-out "tumor core" names the same) or a foreground
//! class. A removed voxel keeps the regions around what it is removed from: a removed
//! region voxel takes the class the nearest enclosing region is painted with (ET -> NCR,
//! still tumour core; TC -> ED), a removed class voxel the class of the most specific region
//! around it that another class paints (NCR -> ED), and background where there is none.
//! nnU-Net sets removed voxels to background, which punches holes in the regions around.
//! (Regions that overlap without nesting, which an nnU-Net `dataset.json` may declare,
//! cannot all be kept this way: the voxel takes the enclosing region's class.) For a model
//! of one class (`class:NAME`) every removed voxel becomes background.
use super::components::{label_components, Connectivity};
use crate::data::labels::{LabelSpec, TargetSpec};
use crate::error::{Error, Result};
use crate::metrics::evaluate::same_region_name;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Filter {
    Largest,
    MinComponent(usize),
    MinVolume(usize),
}

/// One step, resolved against a label convention.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Step {
    filter: Filter,
    /// The region or class the step acts on, as the spec named it; None: all foreground.
    name: Option<String>,
    /// Per internal class: whether its voxels belong to the mask the step filters.
    member: Vec<bool>,
    /// The class a removed voxel takes.
    replacement: u8,
}

/// A parsed postprocessing spec for one label convention (see the module docs); the
/// default does nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Postprocess {
    steps: Vec<Step>,
    connectivity: Connectivity,
}

impl Default for Postprocess {
    fn default() -> Self {
        Self {
            steps: Vec::new(),
            connectivity: Connectivity::Corners,
        }
    }
}

const GRAMMAR: &str = "largest[:NAME], min-component[:NAME]:N, min-volume[:NAME]:N, \
                       connectivity:6|18|26 or none, comma-separated";

/// What a map of predicted classes can hold, which decides what a removed voxel becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Predicts {
    /// Any class of the convention.
    AnyClass,
    /// Background and this one class (a model trained on `class:NAME`).
    OneClass(u8),
}

impl Predicts {
    /// What a model trained on `target` predicts.
    pub fn of(target: &TargetSpec, spec: &LabelSpec) -> Result<Self> {
        Ok(target
            .single_class(spec)?
            .map_or(Predicts::AnyClass, Predicts::OneClass))
    }
}

impl Postprocess {
    /// Parses `text` for maps of label convention `spec` that hold what `predicts` says; an
    /// unknown step, name or size is an error that lists what is allowed.
    pub fn parse(text: &str, spec: &LabelSpec, predicts: Predicts) -> Result<Self> {
        let bad = |msg: String| Error::config("postprocess", msg);
        let mut parsed = Self::default();
        for item in text.split(',').map(str::trim) {
            if item.eq_ignore_ascii_case("none") {
                continue;
            }
            if item.is_empty() {
                return Err(bad(format!(
                    "'{text}' has an empty step (a doubled or trailing comma); steps are {GRAMMAR}"
                )));
            }
            let parts: Vec<&str> = item.split(':').map(str::trim).collect();
            let size = |s: &str| -> Result<usize> {
                match s.parse::<i128>() {
                    Ok(n) if n > 0 && n <= usize::MAX as i128 => Ok(n as usize),
                    Ok(_) => Err(bad(format!(
                        "'{item}': {s} is not a voxel count (1 or more)"
                    ))),
                    Err(_) => Err(bad(format!(
                        "'{item}' needs a voxel count: {}[:NAME]:N",
                        parts[0]
                    ))),
                }
            };
            let (filter, name) = match (parts[0].to_ascii_lowercase().as_str(), &parts[1..]) {
                ("connectivity", [n]) => {
                    parsed.connectivity = match *n {
                        "6" => Connectivity::Faces,
                        "18" => Connectivity::Edges,
                        "26" => Connectivity::Corners,
                        _ => return Err(bad(format!("'{item}': connectivity is 6, 18 or 26"))),
                    };
                    continue;
                }
                ("largest", []) => (Filter::Largest, None),
                ("largest", [name]) => (Filter::Largest, Some(*name)),
                ("min-component", [n]) => (Filter::MinComponent(size(n)?), None),
                ("min-component", [name, n]) => (Filter::MinComponent(size(n)?), Some(*name)),
                ("min-volume", [n]) => (Filter::MinVolume(size(n)?), None),
                ("min-volume", [name, n]) => (Filter::MinVolume(size(n)?), Some(*name)),
                _ => return Err(bad(format!("'{item}' is not a step; steps are {GRAMMAR}"))),
            };
            parsed
                .steps
                .push(Step::resolve(filter, name, spec, predicts)?);
        }
        Ok(parsed)
    }

    /// Whether the spec does nothing.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Applies the steps in order to a map of internal classes on a grid of `dims` voxels
    /// (first axis fastest).
    pub fn apply(&self, classes: &mut [u8], dims: [usize; 3]) {
        for step in &self.steps {
            step.apply(classes, dims, self.connectivity);
        }
    }

    /// `apply` to a label map of `spec`'s file values (already checked to be the spec's),
    /// as they are read from and written to files.
    pub fn apply_to_file_values(
        &self,
        spec: &LabelSpec,
        values: &[u8],
        dims: [usize; 3],
    ) -> Result<Vec<u8>> {
        let mut classes: Vec<u8> = values
            .iter()
            .map(|&v| spec.class_of_value(v as f32).unwrap_or(0))
            .collect();
        self.apply(&mut classes, dims);
        spec.to_file_values(&classes)
    }

    /// This spec followed by `other`'s steps, at this spec's connectivity.
    pub fn then(&self, other: &Postprocess) -> Postprocess {
        Postprocess {
            steps: self.steps.iter().chain(&other.steps).cloned().collect(),
            connectivity: self.connectivity,
        }
    }
}

impl fmt::Display for Postprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps.is_empty() {
            return f.write_str("none");
        }
        let mut items: Vec<String> = match self.connectivity {
            Connectivity::Faces => vec!["connectivity:6".into()],
            Connectivity::Edges => vec!["connectivity:18".into()],
            Connectivity::Corners => Vec::new(),
        };
        items.extend(self.steps.iter().map(Step::to_string));
        f.write_str(&items.join(","))
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (filter, size) = match self.filter {
            Filter::Largest => ("largest", None),
            Filter::MinComponent(n) => ("min-component", Some(n)),
            Filter::MinVolume(n) => ("min-volume", Some(n)),
        };
        f.write_str(filter)?;
        if let Some(name) = &self.name {
            write!(f, ":{name}")?;
        }
        if let Some(n) = size {
            write!(f, ":{n}")?;
        }
        Ok(())
    }
}

impl Step {
    fn resolve(
        filter: Filter,
        name: Option<&str>,
        spec: &LabelSpec,
        predicts: Predicts,
    ) -> Result<Self> {
        let k = spec.num_classes() as u8;
        let regions = spec.regions();
        let (name, member, replacement) = match name {
            // The foreground: with regions, their union (a class in none, such as BraTS
            // 2024's resection cavity, is another structure, not part of the tumour).
            None => {
                let in_foreground = |c: u8| {
                    c > 0 && (regions.is_empty() || regions.iter().any(|r| r.classes.contains(&c)))
                };
                (None, (0..k).map(in_foreground).collect(), 0)
            }
            Some(name) => {
                if let Some(i) = regions.iter().position(|r| same_region_name(&r.name, name)) {
                    let own = &regions[i].classes;
                    // The nearest region listed before it that holds all of its classes.
                    let replacement = regions[..i]
                        .iter()
                        .rev()
                        .find(|r| own.iter().all(|c| r.classes.contains(c)))
                        .map_or(0, |r| r.paint);
                    let member = (0..k).map(|c| own.contains(&c)).collect();
                    (Some(regions[i].name.clone()), member, replacement)
                } else if let Some(class) = spec.class_by_name(name).filter(|&c| c > 0) {
                    // The most specific region around the class that another class paints.
                    let replacement = regions
                        .iter()
                        .rev()
                        .find(|r| r.classes.contains(&class) && r.paint != class)
                        .map_or(0, |r| r.paint);
                    let member = (0..k).map(|c| c == class).collect();
                    let name = spec.classes()[class as usize].name.clone();
                    (Some(name), member, replacement)
                } else {
                    return Err(unknown_name(name, spec));
                }
            }
        };
        Ok(match predicts {
            Predicts::AnyClass => Step {
                filter,
                name,
                member,
                replacement,
            },
            // Nothing else can be written: the model's one class, filtered, or background.
            Predicts::OneClass(class) => Step {
                filter,
                name,
                member: (0..k).map(|c| c == class).collect(),
                replacement: 0,
            },
        })
    }

    fn apply(&self, classes: &mut [u8], dims: [usize; 3], connectivity: Connectivity) {
        let mask: Vec<bool> = classes.iter().map(|&c| self.member[c as usize]).collect();
        let remove: Vec<bool> = match self.filter {
            Filter::MinVolume(n) => {
                let total = mask.iter().filter(|&&m| m).count();
                if total >= n {
                    return;
                }
                mask
            }
            Filter::Largest | Filter::MinComponent(_) => {
                let found = label_components(&mask, dims, connectivity);
                let Some(&largest) = found.sizes.iter().max() else {
                    return;
                };
                let removed: Vec<bool> = found
                    .sizes
                    .iter()
                    .map(|&s| match self.filter {
                        Filter::MinComponent(n) => s < n,
                        _ => s < largest,
                    })
                    .collect();
                found
                    .labels
                    .iter()
                    .map(|&l| l != 0 && removed[l as usize - 1])
                    .collect()
            }
        };
        for (c, r) in classes.iter_mut().zip(remove) {
            if r {
                *c = self.replacement;
            }
        }
    }
}

/// The error for a step naming no region or class of `spec`, with the names there are (and
/// which class a label file's value stands for, as nnU-Net users name labels by value).
fn unknown_name(name: &str, spec: &LabelSpec) -> Error {
    let mut names: Vec<String> = spec.regions().iter().map(|r| r.name.clone()).collect();
    for class in spec.class_names().into_iter().skip(1) {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(&class)) {
            names.push(class);
        }
    }
    let value_hint = name
        .parse::<u8>()
        .ok()
        .and_then(|v| spec.class_of_value(v as f32))
        .filter(|&c| c > 0)
        .map(|c| {
            format!(
                "; file value {name} is class {}: name it so",
                spec.classes()[c as usize].name
            )
        })
        .unwrap_or_default();
    Error::config(
        "postprocess",
        format!(
            "'{name}' is neither a region nor a foreground class of the labels; they are {}{value_hint}",
            names.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BraTS 2021's internal classes: 0 background, 1 NCR, 2 ED, 3 ET.
    fn brats() -> LabelSpec {
        LabelSpec::brats2021()
    }

    #[test]
    fn specs_parse_to_their_canonical_text_and_bad_ones_are_named() {
        let spec = brats();
        let p = Postprocess::parse(
            " largest , largest:wt,min-component:ET:20, min-volume:tc:200",
            &spec,
            Predicts::AnyClass,
        )
        .unwrap();
        assert_eq!(
            p.to_string(),
            "largest,largest:WT,min-component:ET:20,min-volume:TC:200"
        );
        assert!(Postprocess::parse("none", &spec, Predicts::AnyClass)
            .unwrap()
            .is_empty());
        assert_eq!(
            Postprocess::parse("min-component:5", &spec, Predicts::AnyClass)
                .unwrap()
                .to_string(),
            "min-component:5"
        );
        let err = |t: &str| {
            Postprocess::parse(t, &spec, Predicts::AnyClass)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            Postprocess::parse("largest,connectivity:6", &spec, Predicts::AnyClass)
                .unwrap()
                .to_string(),
            "connectivity:6,largest"
        );
        assert!(err("connectivity:8").contains("connectivity is 6, 18 or 26"));
        assert!(err("biggest").contains("'biggest' is not a step; steps are largest[:NAME]"));
        assert!(err("largest:XX").contains("'XX' is neither a region nor a foreground class"));
        assert!(
            err("largest:XX").contains("WT, TC, ET, NCR, ED"),
            "{}",
            err("largest:XX")
        );
        assert!(err("min-volume:ET:0").contains("0 is not a voxel count"));
        assert!(err("min-volume:ET:-3").contains("-3 is not a voxel count"));
        assert!(err("largest:background").contains("neither a region nor a foreground class"));
        assert!(err("largest:WT:3").contains("is not a step"));
        assert!(err("largest,").contains("an empty step (a doubled or trailing comma)"));
        assert!(err("min-volume:ET")
            .contains("'min-volume:ET' needs a voxel count: min-volume[:NAME]:N"));
        assert!(
            err("largest:4").contains("file value 4 is class ET: name it so"),
            "{}",
            err("largest:4")
        );
        // nnU-Net's spelled-out region names name the same regions.
        assert_eq!(
            Postprocess::parse("largest:Tumor Core", &spec, Predicts::AnyClass)
                .unwrap()
                .to_string(),
            "largest:TC"
        );
    }

    /// `text` applied to a row of classes (a grid of n x 1 x 1).
    fn applied(text: &str, classes: &[u8]) -> Vec<u8> {
        let mut out = classes.to_vec();
        Postprocess::parse(text, &brats(), Predicts::AnyClass)
            .unwrap()
            .apply(&mut out, [classes.len(), 1, 1]);
        out
    }

    #[test]
    fn largest_keeps_the_biggest_component_and_every_tie() {
        // Components of the foreground: 3 voxels, 1 voxel, 3 voxels.
        let classes = [1, 2, 3, 0, 2, 0, 1, 1, 2];
        assert_eq!(
            applied("largest", &classes),
            [1, 2, 3, 0, 0, 0, 1, 1, 2],
            "both 3-voxel components stay"
        );
        // Only WT's components count, of its classes.
        assert_eq!(
            applied("largest:WT", &[2, 2, 0, 1, 0, 3, 3, 3]),
            [0, 0, 0, 0, 0, 3, 3, 3]
        );
    }

    #[test]
    fn a_removed_region_voxel_takes_the_enclosing_regions_class() {
        // ET components of 2 and 1 voxels inside a tumour: the lone ET voxel becomes NCR
        // (TC's class) and stays tumour core.
        assert_eq!(
            applied("largest:ET", &[1, 3, 3, 1, 3, 1]),
            [1, 3, 3, 1, 1, 1]
        );
        // TC's removed voxels become oedema (WT's class), whatever their class.
        assert_eq!(
            applied("largest:TC", &[1, 3, 1, 2, 3, 2, 0]),
            [1, 3, 1, 2, 2, 2, 0]
        );
        // A class's removed voxels take the class of the region around it that another
        // class paints: NCR's (TC paints NCR itself) oedema, WT's; oedema's background.
        assert_eq!(applied("largest:NCR", &[1, 1, 0, 1, 2]), [1, 1, 0, 2, 2]);
        assert_eq!(applied("largest:ED", &[2, 2, 0, 2, 1]), [2, 2, 0, 0, 1]);
    }

    #[test]
    fn min_volume_drops_a_small_region_whole_and_min_component_its_small_parts() {
        // BraTS's rule: an ET of 3 voxels, under 4, becomes NCR.
        assert_eq!(
            applied("min-volume:ET:4", &[3, 3, 0, 3, 2]),
            [1, 1, 0, 1, 2]
        );
        assert_eq!(
            applied("min-volume:ET:3", &[3, 3, 0, 3, 2]),
            [3, 3, 0, 3, 2]
        );
        assert_eq!(
            applied("min-component:2", &[1, 1, 0, 2, 0, 3, 3, 3]),
            [1, 1, 0, 0, 0, 3, 3, 3]
        );
        // Steps run in order: ET's lone voxel becomes NCR, then TC, down to 1 voxel, oedema.
        assert_eq!(
            applied("min-component:ET:2,min-volume:TC:2", &[3, 0, 2, 2]),
            [2, 0, 2, 2]
        );
    }

    #[test]
    fn connectivity_decides_which_voxels_form_one_component() {
        // A 3x2x2 grid: two face-joined ET voxels, and a third touching one of them only at
        // a corner.
        let spec = brats();
        let mut classes = [0u8; 12];
        for at in [0, 1, 11] {
            classes[at] = 3;
        }
        let run = |text: &str| {
            let mut out = classes.to_vec();
            Postprocess::parse(text, &spec, Predicts::AnyClass)
                .unwrap()
                .apply(&mut out, [3, 2, 2]);
            out
        };
        let mut lone_dropped = classes.to_vec();
        lone_dropped[11] = 1;
        assert_eq!(run("largest:ET"), classes, "26-connected: one component");
        assert_eq!(run("largest:ET,connectivity:18"), lone_dropped);
        assert_eq!(run("connectivity:6,largest:ET"), lone_dropped);
    }

    #[test]
    fn the_foreground_is_the_union_of_the_regions_so_other_classes_stay() {
        // BraTS 2023: RC (class 4) is in no region; the tumour (1-3) is the foreground.
        let spec = LabelSpec::brats2023();
        let mut map = vec![2, 2, 2, 0, 4, 4, 4, 4, 0, 1];
        Postprocess::parse("largest", &spec, Predicts::AnyClass)
            .unwrap()
            .apply(&mut map, [10, 1, 1]);
        assert_eq!(map, [2, 2, 2, 0, 4, 4, 4, 4, 0, 0]);
        // Without regions every class but background is foreground.
        let plain = LabelSpec::new(spec.classes().to_vec(), Vec::new()).unwrap();
        let mut map = vec![2, 2, 2, 0, 4, 4, 4, 4, 0, 1];
        Postprocess::parse("largest", &plain, Predicts::AnyClass)
            .unwrap()
            .apply(&mut map, [10, 1, 1]);
        assert_eq!(map, [0, 0, 0, 0, 4, 4, 4, 4, 0, 0]);
    }

    #[test]
    fn a_one_class_model_gets_background_for_every_removed_voxel() {
        // A `class:ET` model writes only 0 and ET: a removed ET voxel must not become NCR.
        let spec = brats();
        for text in ["largest:ET", "largest:TC", "largest", "min-volume:ET:4"] {
            let mut map = vec![3, 3, 0, 3];
            Postprocess::parse(text, &spec, Predicts::OneClass(3))
                .unwrap()
                .apply(&mut map, [4, 1, 1]);
            let want: &[u8] = if text.starts_with("min-volume") {
                &[0, 0, 0, 0]
            } else {
                &[3, 3, 0, 0]
            };
            assert_eq!(map, want, "{text}");
        }
        let target: TargetSpec = "class:ET".parse().unwrap();
        assert_eq!(Predicts::of(&target, &spec).unwrap(), Predicts::OneClass(3));
        assert_eq!(
            Predicts::of(&TargetSpec::Regions, &spec).unwrap(),
            Predicts::AnyClass
        );
    }

    #[test]
    fn an_empty_map_is_left_alone() {
        assert_eq!(
            applied("largest,largest:ET,min-component:3", &[0; 4]),
            [0; 4]
        );
    }

    /// nnU-Net's and scikit-image's values, from `scripts/postprocess_reference.py`.
    fn reference() -> serde_json::Value {
        serde_json::from_str(include_str!(
            "../../tests/fixtures/postprocess_reference.json"
        ))
        .unwrap()
    }

    fn bytes(v: &serde_json::Value) -> Vec<u8> {
        crate::fixture_json::usizes(v)
            .into_iter()
            .map(|x| x as u8)
            .collect()
    }

    #[test]
    fn components_match_scikit_image_at_every_connectivity() {
        let fixture = reference();
        let dims: [usize; 3] = serde_json::from_value(fixture["dims"].clone()).unwrap();
        for case in crate::fixture_json::list(&fixture["cases"]) {
            let name = case["name"].as_str().unwrap();
            let mask: Vec<bool> = bytes(&case["labels"]).iter().map(|&c| c > 0).collect();
            for (key, connectivity) in [
                ("1", Connectivity::Faces),
                ("2", Connectivity::Edges),
                ("3", Connectivity::Corners),
            ] {
                let theirs = crate::fixture_json::usizes(&case["components"][key]);
                let ours = label_components(&mask, dims, connectivity);
                // The same partition: each of our components is exactly one of theirs.
                let mut theirs_of_ours = vec![None; ours.sizes.len()];
                for (&o, &t) in ours.labels.iter().zip(&theirs) {
                    assert_eq!(o == 0, t == 0, "{name} connectivity {key}");
                    if o != 0 {
                        let seen = theirs_of_ours[o as usize - 1].get_or_insert(t);
                        assert_eq!(*seen, t, "{name} connectivity {key}: component {o} splits");
                    }
                }
                let count = theirs.iter().max().copied().unwrap_or(0);
                assert_eq!(ours.sizes.len(), count, "{name} connectivity {key}");
            }
        }
    }

    #[test]
    fn largest_component_filters_match_nnunet() {
        let fixture = reference();
        let dims: [usize; 3] = serde_json::from_value(fixture["dims"].clone()).unwrap();
        // Classes without regions: a removed voxel of any class becomes background, as in
        // nnU-Net.
        let spec = LabelSpec::new(
            ["background", "a", "b", "c"]
                .iter()
                .zip(0u8..)
                .map(|(name, file_value)| crate::data::labels::LabelClass {
                    name: name.to_string(),
                    file_value,
                })
                .collect(),
            Vec::new(),
        )
        .unwrap();
        let mut changed = 0;
        for case in crate::fixture_json::list(&fixture["cases"]) {
            let name = case["name"].as_str().unwrap();
            let labels = bytes(&case["labels"]);
            let mut check = |text: &str, want: Vec<u8>| {
                let mut got = labels.clone();
                Postprocess::parse(text, &spec, Predicts::AnyClass)
                    .unwrap()
                    .apply(&mut got, dims);
                assert_eq!(got, want, "{name}: {text}");
                changed += (want != labels) as usize;
            };
            check("largest", bytes(&case["largest_foreground"]));
            for (value, class) in [("1", "a"), ("2", "b"), ("3", "c")] {
                check(
                    &format!("largest:{class}"),
                    bytes(&case["largest_per_label"][value]),
                );
            }
        }
        assert!(changed >= 20, "only {changed} filters changed their map");
    }
}
