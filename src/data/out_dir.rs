//! Output folders: a command that writes a folder of results refuses one that already holds
//! other files unless told to replace them, so old and new results never mix silently.
use crate::error::{Error, Result};
use std::path::Path;

/// The names of the entries of the output folder `out` (flag `flag`, e.g. "--out"),
/// sorted; none when it does not exist yet. Fails when `out` exists but is not a folder.
pub fn entries(flag: &str, out: &Path) -> Result<Vec<String>> {
    match std::fs::metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", out.display()), e)),
        Ok(m) if !m.is_dir() => {
            return Err(Error::config(
                flag,
                format!("{} is a file, not a folder", out.display()),
            ))
        }
        Ok(_) => {}
    }
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(out).map_err(|e| Error::io(format!("reading {}", out.display()), e))?
    {
        let entry = entry.map_err(|e| Error::io(format!("reading {}", out.display()), e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// The refusal of a non-empty output folder without `--force`, listing a few entries.
pub fn not_empty(flag: &str, out: &Path, names: &[String], replaces: &str) -> Error {
    const SHOWN: usize = 4;
    let mut listed = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        listed += &format!(", ... {} entries in all", names.len());
    }
    Error::config(
        flag,
        format!(
            "{} is not empty ({listed}); choose another {flag} or pass --force to replace {replaces}",
            out.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_folder_is_empty_and_a_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("voxseg-out-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(entries("--out", &dir).unwrap().is_empty());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b"), b"").unwrap();
        std::fs::write(dir.join("a"), b"").unwrap();
        assert_eq!(entries("--out", &dir).unwrap(), ["a", "b"]);
        let err = entries("--out", &dir.join("a")).unwrap_err().to_string();
        assert!(err.ends_with("a is a file, not a folder"), "{err}");
        let names: Vec<String> = (0..6).map(|i| format!("n{i}")).collect();
        let err = not_empty("--out", &dir, &names, "it").to_string();
        assert!(
            err.contains("n0, n1, n2, n3, ... 6 entries in all") && err.contains("--force"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
