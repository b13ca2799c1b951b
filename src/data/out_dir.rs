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

/// Refuses an output folder `out` (flag `flag`) that is the input folder `input` (flag
/// `input_flag`) or inside it, so results never land among (or over) the input files.
/// Paths are compared canonicalised; a missing `out` by its nearest existing ancestor.
pub fn refuse_inside(flag: &str, out: &Path, input_flag: &str, input: &Path) -> Result<()> {
    let Ok(input_real) = std::fs::canonicalize(input) else {
        return Ok(());
    };
    // The missing tail has no links, so its `..` can be applied by name.
    let mut existing = out.to_path_buf();
    let mut tail = Vec::new();
    let mut out_real = loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            break real;
        }
        match existing.components().next_back() {
            Some(last) if existing != Path::new(".") => tail.push(last.as_os_str().to_owned()),
            _ => return Ok(()),
        }
        existing.pop();
        if existing.as_os_str().is_empty() {
            existing.push(".");
        }
    };
    for name in tail.iter().rev() {
        if name == ".." {
            out_real.pop();
        } else if name != "." {
            out_real.push(name);
        }
    }
    if out_real.starts_with(&input_real) {
        return Err(Error::config(
            flag,
            format!(
                "{} is {} {input_flag} {}: the results would be mixed with the input files; \
                 choose a folder outside it",
                out.display(),
                if out_real == input_real {
                    "the same folder as"
                } else {
                    "inside"
                },
                input.display()
            ),
        ));
    }
    Ok(())
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

    #[test]
    fn an_out_inside_the_input_is_refused_through_links_and_missing_folders() {
        let dir = std::env::temp_dir().join(format!("voxseg-out-inside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data = dir.join("data");
        std::fs::create_dir_all(data.join("case")).unwrap();
        let refused = |out: &Path| refuse_inside("--out", out, "--data", &data);
        let err = refused(&data.join("case").join(".."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("the same folder as --data"), "{err}");
        let err = refused(&data.join("new").join("deeper"))
            .unwrap_err()
            .to_string();
        assert!(refused(&dir.join("new").join("..").join("data")).is_err());
        assert!(
            err.contains("inside --data") && err.contains("choose a folder outside"),
            "{err}"
        );
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&data, dir.join("link")).unwrap();
            assert!(refused(&dir.join("link").join("cache")).is_err());
        }
        refused(&dir.join("data-cache")).unwrap();
        refused(&dir.join("cache").join("data")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
