//! Per-case and mean scores of an evaluation, as JSON, CSV and a terminal table.
use super::postprocess_search::Trial;
use super::{EmptyHd95Used, Scores};
use crate::atomic;
use crate::error::{Error, Result};
use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The scores of every region of one case; in JSON the regions sit beside `case`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseScores {
    pub case: String,
    #[serde(flatten)]
    pub regions: BTreeMap<String, Scores>,
}

/// In JSON, `mean` and each case list their regions in `region_order` (see
/// [`EvalReport::regions_in_order`]), as the table and the CSV do.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct EvalReport {
    /// The scored cases, sorted by id.
    pub cases: Vec<CaseScores>,
    /// Per region, the mean of each score over the cases that have the region.
    pub mean: BTreeMap<String, Scores>,
    /// Reference cases that had no prediction, sorted.
    #[serde(default)]
    pub missing: Vec<String>,
    /// Whether the missing cases were scored as empty predictions (then they are in `cases`
    /// and `mean`) rather than left out.
    #[serde(default)]
    pub missing_scored_as_empty: bool,
    /// The HD95 given where exactly one of prediction and reference is empty.
    #[serde(default)]
    pub empty_hd95: Option<EmptyHd95Used>,
    /// The order the table, the CSV and the JSON list regions in (the label convention's:
    /// WT, TC, ET for BraTS); regions not in it follow by name. Recorded in the JSON, so a
    /// report read back writes its regions in the same order.
    #[serde(default)]
    pub region_order: Vec<String>,
    /// The postprocessing applied to the predictions before scoring (its spec), if any.
    #[serde(default)]
    pub postprocess: Option<String>,
    /// The steps `--find-postprocessing` tried, in order; empty without it.
    #[serde(default)]
    pub postprocess_trials: Vec<Trial>,
    /// What the scoring noticed that makes the scores doubtful, for the user, not the
    /// report files.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl EvalReport {
    pub fn new(cases: Vec<CaseScores>) -> Self {
        let mut sums: BTreeMap<String, (Scores, usize)> = BTreeMap::new();
        for (name, s) in cases.iter().flat_map(|c| &c.regions) {
            let zero = Scores {
                dice: 0.0,
                hd95: 0.0,
                sensitivity: 0.0,
                specificity: 0.0,
            };
            let (sum, n) = sums.entry(name.clone()).or_insert((zero, 0));
            sum.dice += s.dice;
            sum.hd95 += s.hd95;
            sum.sensitivity += s.sensitivity;
            sum.specificity += s.specificity;
            *n += 1;
        }
        let mean = sums
            .into_iter()
            .map(|(name, (s, n))| {
                let n = n as f64;
                let m = Scores {
                    dice: s.dice / n,
                    hd95: s.hd95 / n,
                    sensitivity: s.sensitivity / n,
                    specificity: s.specificity / n,
                };
                (name, m)
            })
            .collect();
        Self {
            cases,
            mean,
            missing: Vec::new(),
            missing_scored_as_empty: false,
            empty_hd95: None,
            region_order: Vec::new(),
            postprocess: None,
            postprocess_trials: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Adds a warning about the scores.
    pub fn with_warnings(mut self, warnings: impl IntoIterator<Item = String>) -> Self {
        self.warnings.extend(warnings);
        self
    }

    /// Records the trials of a postprocessing search.
    pub fn with_postprocess_trials(mut self, trials: Vec<Trial>) -> Self {
        self.postprocess_trials = trials;
        self
    }

    /// Records the postprocessing applied before scoring.
    pub fn with_postprocess(mut self, spec: Option<String>) -> Self {
        self.postprocess = spec;
        self
    }

    /// Records the empty-mask HD95 rule and the value it gave each case.
    pub fn with_empty_hd95(mut self, used: EmptyHd95Used) -> Self {
        self.empty_hd95 = Some(used);
        self
    }

    /// Lists the regions in the table, the CSV and the JSON in `order`.
    pub fn with_region_order(mut self, order: Vec<String>) -> Self {
        self.region_order = order;
        self
    }

    /// Records the reference cases that had no prediction and whether `cases` holds them
    /// scored as empty predictions.
    pub fn with_missing(mut self, missing: Vec<String>, scored_as_empty: bool) -> Self {
        self.missing = missing;
        self.missing_scored_as_empty = scored_as_empty;
        self
    }

    /// The entries of `regions` (the mean or a case's scores): those `region_order` names
    /// first, in its order, then the others by name.
    pub fn regions_in_order<'a, V>(
        &self,
        regions: &'a BTreeMap<String, V>,
    ) -> Vec<(&'a String, &'a V)> {
        let listed = self
            .region_order
            .iter()
            .filter_map(|r| regions.get_key_value(r));
        let rest = regions
            .iter()
            .filter(|(r, _)| !self.region_order.contains(r));
        listed.chain(rest).collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("scores are finite numbers and strings")
    }

    /// One row per case and region:
    /// `case,region,dice,hd95,sensitivity,specificity,prediction`, where `prediction` is
    /// `found` or `missing`; a missing case that was not scored has empty scores. With
    /// postprocessing, a last column `postprocess` names its steps (the same on every row),
    /// as the JSON report's `postprocess` does.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("case,region,dice,hd95,sensitivity,specificity,prediction");
        let steps = self.postprocess.as_deref().map(csv_field);
        out.push_str(if steps.is_some() {
            ",postprocess\n"
        } else {
            "\n"
        });
        let mut rows: Vec<(&str, &str, Option<&Scores>)> = Vec::new();
        for c in &self.cases {
            for (region, s) in self.regions_in_order(&c.regions) {
                rows.push((&c.case, region, Some(s)));
            }
        }
        if !self.missing_scored_as_empty {
            for case in &self.missing {
                for (region, _) in self.regions_in_order(&self.mean) {
                    rows.push((case, region, None));
                }
            }
            // Stable: each case's regions stay in the report's order.
            rows.sort_by(|a, b| a.0.cmp(b.0));
        }
        for (case, region, scores) in rows {
            let found = if self.missing.iter().any(|m| m == case) {
                "missing"
            } else {
                "found"
            };
            let scores = scores.map_or_else(
                || ",,,".to_string(),
                |s| format!("{},{},{},{}", s.dice, s.hd95, s.sensitivity, s.specificity),
            );
            let _ = write!(
                out,
                "{},{},{scores},{found}",
                csv_field(case),
                csv_field(region)
            );
            let _ = match &steps {
                Some(steps) => writeln!(out, ",{steps}"),
                None => writeln!(out),
            };
        }
        out
    }

    /// The mean scores per region, aligned for a terminal.
    pub fn to_table(&self) -> String {
        let width = self.mean.keys().map(|k| k.len()).max().unwrap_or(0).max(6);
        let mut out = format!(
            "{:<width$} {:>6} {:>8} {:>9} {:>11} {:>11}\n",
            "region", "cases", "Dice", "HD95 mm", "sensitivity", "specificity"
        );
        for (region, m) in self.regions_in_order(&self.mean) {
            let n = self
                .cases
                .iter()
                .filter(|c| c.regions.contains_key(region))
                .count();
            let _ = writeln!(
                out,
                "{region:<width$} {n:>6} {:>8.4} {:>9.2} {:>11.4} {:>11.4}",
                m.dice, m.hd95, m.sensitivity, m.specificity
            );
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        atomic::write_bytes(path, self.to_json().as_bytes())
    }

    pub fn write_csv(&self, path: &Path) -> Result<()> {
        atomic::write_bytes(path, self.to_csv().as_bytes())
    }

    pub fn read_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("not an evaluation report: {e}")))
    }
}

/// Written by hand so that the regions keep the convention's order: the maps are
/// `BTreeMap`s (sorted by name), and serde_json's `preserve_order` would change every map of
/// the crate, and still not reorder a `BTreeMap`.
impl Serialize for EvalReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let cases: Vec<OrderedCase> = self
            .cases
            .iter()
            .map(|c| OrderedCase {
                case: &c.case,
                regions: self.regions_in_order(&c.regions),
            })
            .collect();
        let fields = 5
            + usize::from(self.empty_hd95.is_some())
            + usize::from(self.postprocess.is_some())
            + usize::from(!self.postprocess_trials.is_empty());
        let mut s = serializer.serialize_struct("EvalReport", fields)?;
        s.serialize_field("cases", &cases)?;
        s.serialize_field("mean", &OrderedRegions(self.regions_in_order(&self.mean)))?;
        s.serialize_field("missing", &self.missing)?;
        s.serialize_field("missing_scored_as_empty", &self.missing_scored_as_empty)?;
        if let Some(used) = &self.empty_hd95 {
            s.serialize_field("empty_hd95", used)?;
        } else {
            s.skip_field("empty_hd95")?;
        }
        s.serialize_field("region_order", &self.region_order)?;
        if let Some(spec) = &self.postprocess {
            s.serialize_field("postprocess", spec)?;
        } else {
            s.skip_field("postprocess")?;
        }
        if self.postprocess_trials.is_empty() {
            s.skip_field("postprocess_trials")?;
        } else {
            s.serialize_field("postprocess_trials", &self.postprocess_trials)?;
        }
        s.end()
    }
}

/// Regions and their scores, serialised as a map in this order.
struct OrderedRegions<'a>(Vec<(&'a String, &'a Scores)>);

impl Serialize for OrderedRegions<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (region, scores) in &self.0 {
            map.serialize_entry(region, scores)?;
        }
        map.end()
    }
}

/// One case as [`CaseScores`] serialises it (regions beside `case`), regions in order.
struct OrderedCase<'a> {
    case: &'a str,
    regions: Vec<(&'a String, &'a Scores)>,
}

impl Serialize for OrderedCase<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.regions.len() + 1))?;
        map.serialize_entry("case", self.case)?;
        for (region, scores) in &self.regions {
            map.serialize_entry(region, scores)?;
        }
        map.end()
    }
}

/// Quotes a CSV field when it holds a separator, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(dice: f64, hd95: f64) -> Scores {
        Scores {
            dice,
            hd95,
            sensitivity: 0.5,
            specificity: 1.0,
        }
    }

    fn report() -> EvalReport {
        let case = |id: &str, wt: Scores, et: Scores| CaseScores {
            case: id.to_string(),
            regions: [("WT".to_string(), wt), ("ET".to_string(), et)].into(),
        };
        EvalReport::new(vec![
            case("a", scores(0.8, 2.0), scores(1.0, 0.0)),
            case("b,2", scores(0.6, 4.0), scores(0.0, 373.12866)),
        ])
    }

    #[test]
    fn the_table_lists_regions_in_the_conventions_order() {
        let first_column = |r: &EvalReport| -> Vec<String> {
            r.to_table()
                .lines()
                .skip(1)
                .map(|l| l.split_whitespace().next().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            first_column(&report()),
            ["ET", "WT"],
            "by name without an order"
        );
        let ordered = report().with_region_order(vec!["WT".into(), "TC".into(), "ET".into()]);
        assert_eq!(first_column(&ordered), ["WT", "ET"]);
    }

    #[test]
    fn json_and_csv_list_regions_in_the_conventions_order() {
        let ordered = report()
            .with_region_order(vec!["WT".into(), "TC".into(), "ET".into()])
            .with_missing(vec!["a0".into()], false);
        let json = ordered.to_json();
        let at = |from: usize, key: &str| from + json[from..].find(key).unwrap();
        for section in ["\"mean\"", "\"case\": \"a\"", "\"case\": \"b,2\""] {
            let start = at(0, section);
            assert!(
                at(start, "\"WT\"") < at(start, "\"ET\""),
                "{section}: {json}"
            );
        }
        assert_eq!(serde_json::from_str::<EvalReport>(&json).unwrap(), ordered);
        let csv = ordered.to_csv();
        let regions: Vec<&str> = csv
            .lines()
            .skip(1)
            .map(|l| l.rsplit(',').nth(5).unwrap())
            .collect();
        assert_eq!(regions, ["WT", "ET", "WT", "ET", "WT", "ET"], "{csv}");
        let cases: Vec<&str> = csv.lines().skip(1).map(|l| &l[..2]).collect();
        assert_eq!(cases, ["a,", "a,", "a0", "a0", "\"b", "\"b"], "{csv}");
    }

    #[test]
    fn mean_is_per_region() {
        let r = report();
        assert!((r.mean["WT"].dice - 0.7).abs() < 1e-12);
        assert_eq!(r.mean["WT"].hd95, 3.0);
        assert_eq!(r.mean["ET"].dice, 0.5);
        assert_eq!(r.mean["ET"].hd95, 373.12866 / 2.0);
    }

    #[test]
    fn json_has_regions_beside_the_case_and_round_trips() {
        let r = report();
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["cases"][0]["case"], "a");
        assert_eq!(v["cases"][0]["WT"]["dice"], 0.8);
        assert_eq!(v["cases"][1]["ET"]["hd95"], 373.12866);
        assert_eq!(v["mean"]["WT"]["hd95"], 3.0);
        let dir = std::env::temp_dir().join(format!("voxseg-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("eval.json");
        r.write_json(&path).unwrap();
        assert_eq!(EvalReport::read_json(&path).unwrap(), r);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn csv_has_one_row_per_case_and_region() {
        let csv = report().to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[0],
            "case,region,dice,hd95,sensitivity,specificity,prediction"
        );
        assert_eq!(lines[1], "a,ET,1,0,0.5,1,found");
        assert_eq!(lines[4], "\"b,2\",WT,0.6,4,0.5,1,found");
        // Scored after postprocessing: its steps on every row.
        let cleaned = EvalReport {
            postprocess: Some("largest,min-volume:ET:50".into()),
            ..report()
        };
        let csv = cleaned.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "case,region,dice,hd95,sensitivity,specificity,prediction,postprocess"
        );
        assert_eq!(
            lines[1],
            "a,ET,1,0,0.5,1,found,\"largest,min-volume:ET:50\""
        );
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn missing_cases_are_listed_in_json_and_csv() {
        let skipped = report().with_missing(vec!["a0".into()], false);
        let v: serde_json::Value = serde_json::from_str(&skipped.to_json()).unwrap();
        assert_eq!(v["missing"], serde_json::json!(["a0"]));
        assert_eq!(v["missing_scored_as_empty"], false);
        let csv = skipped.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 7, "{csv}");
        assert_eq!(lines[3], "a0,ET,,,,,missing");
        assert_eq!(lines[4], "a0,WT,,,,,missing");
        // Scored as empty: the case is among the scored ones and marked missing.
        let scored = report().with_missing(vec!["b,2".into()], true);
        let csv = scored.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 5, "{csv}");
        assert_eq!(lines[3], "\"b,2\",ET,0,373.12866,0.5,1,missing");
    }

    #[test]
    fn table_lists_each_region_mean() {
        let table = report().to_table();
        let wt = table.lines().find(|l| l.starts_with("WT")).unwrap();
        let cells: Vec<&str> = wt.split_whitespace().collect();
        assert_eq!(cells, ["WT", "2", "0.7000", "3.00", "0.5000", "1.0000"]);
    }
}
