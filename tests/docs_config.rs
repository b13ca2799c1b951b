//! docs/CONFIG.md stays true: its list of every key is the default configuration, and each
//! JSON example in its table of choices is accepted for the key it documents, as `--config`
//! reads it (every nested key known).
use voxseg::train::TrainConfig;

fn config_doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md")).unwrap()
}

#[test]
fn the_documented_defaults_are_the_defaults() {
    let doc = config_doc();
    let start = doc.find("```json\n").expect("a json block") + "```json\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let documented = TrainConfig::from_json(&doc[start..end]).unwrap();
    assert_eq!(documented, TrainConfig::default());
}

#[test]
fn every_documented_choice_parses_for_its_key() {
    let doc = config_doc();
    let mut checked = 0;
    for row in doc.lines().filter(|l| l.starts_with("| `")) {
        let key = row[3..].split('`').next().unwrap();
        let values = row.splitn(3, '|').nth(2).unwrap();
        // Every `...` span in the values column that is a JSON value goes into the key.
        for example in values.split('`').skip(1).step_by(2) {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(example) else {
                continue;
            };
            // Placeholders (E, G, N...) are not JSON, so only complete examples reach here.
            let mut config = serde_json::json!({});
            let mut slot = &mut config;
            for part in key.split('.') {
                slot = &mut slot[part];
            }
            *slot = value;
            TrainConfig::from_json(&config.to_string())
                .unwrap_or_else(|e| panic!("{key} = {example}: {e}"));
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} examples found");
}
