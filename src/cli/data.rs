use clap::Args as ClapArgs;
use std::path::PathBuf;
use voxseg::data::synth::{write_dataset, SynthLayout, SynthOptions, SynthStorage};

#[derive(ClapArgs)]
pub struct InspectArgs {
    /// NIfTI files (.nii or .nii.gz), one JSON line each.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// One JSON line per readable file; an unreadable one is reported on stderr and the
/// others are still inspected, the exit code telling at the end whether any failed.
pub fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let mut failed = 0;
    for f in &a.files {
        match voxseg::data::inspect::inspect_file(f) {
            Ok(v) => println!("{}", serde_json::to_string(&v)?),
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} file(s) could not be read", a.files.len());
    }
    Ok(())
}

#[derive(ClapArgs)]
pub struct SynthArgs {
    /// Folder to write the dataset into (created; a non-empty one needs --force).
    #[arg(long)]
    out: PathBuf,
    /// Number of cases.
    #[arg(long, default_value_t = 10)]
    cases: usize,
    /// Volume size D,H,W (z, y, x), or one number for a cube.
    #[arg(long, default_value = "64", value_parser = super::triple)]
    size: [usize; 3],
    /// Seed the cases are drawn from: the same seed gives the same dataset.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// brats2021, msd or nnunet.
    #[arg(long, default_value = "brats2021")]
    layout: SynthLayout,
    /// int16 or float32.
    #[arg(long, default_value = "int16")]
    storage: SynthStorage,
    /// Replace the dataset in a non-empty --out, only one that `voxseg synth` wrote (it
    /// holds a .voxseg-synth file): its dataset.json and folders of NIfTI files; anything
    /// else there is still refused.
    #[arg(long)]
    force: bool,
}

pub fn synth(a: SynthArgs) -> anyhow::Result<()> {
    let opts = SynthOptions {
        out: a.out.clone(),
        cases: a.cases,
        size: a.size,
        seed: a.seed,
        layout: a.layout,
        storage: a.storage,
    };
    opts.validate()?;
    voxseg::data::synth::make_room(&a.out, a.force)?;
    write_dataset(&opts)?;
    say!("wrote {} cases to {}", a.cases, a.out.display());
    Ok(())
}

#[derive(ClapArgs)]
pub struct PreprocessArgs {
    /// Dataset: a BraTS, MSD or nnU-Net folder, or a JSON manifest.
    #[arg(long)]
    data: PathBuf,
    /// Cache folder to write (train with `--cache` pointing at it).
    #[arg(long)]
    out: PathBuf,
    /// A training config whose `preprocess` settings (and modalities) the cache follows;
    /// without it, the default: crop to the brain, z-score per case.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Modalities in input order (default: the config's, else all the dataset has).
    #[arg(long, value_delimiter = ',')]
    modalities: Vec<String>,
    /// Replace NaN/Inf voxels with 0 instead of refusing the case.
    #[arg(long)]
    replace_nan: bool,
    /// Replace the cache in a non-empty --out (only a folder holding a voxseg cache and
    /// nothing else); the new cache is built beside it and swapped in once complete.
    #[arg(long)]
    force: bool,
}

pub fn preprocess(a: PreprocessArgs) -> anyhow::Result<()> {
    use voxseg::data::case::{load_case, NanPolicy};
    use voxseg::data::preprocess::{preprocess, PreprocessSpec};
    let config = a
        .config
        .as_deref()
        .map(voxseg::train::TrainConfig::from_file)
        .transpose()?;
    if let (Some(path), Some(true)) = (&a.config, config.as_ref().map(|c| c.dataset_statistics)) {
        anyhow::bail!(
            "{}: dataset_statistics: per-dataset statistics come from the training cases alone, \
             which a cache of the whole dataset cannot know; train without --cache instead",
            path.display()
        );
    }
    let listing = voxseg::data::layout::list(&a.data)?;
    voxseg::data::out_dir::refuse_inside("--out", &a.out, "--data", &a.data)?;
    let wanted = match (&config, a.modalities.is_empty()) {
        (Some(c), true) => c.modalities.clone(),
        _ => a.modalities.clone(),
    };
    let channels = listing.dataset.modalities_or_all(&wanted)?;
    let dataset = listing.require(&channels)?;
    let nan = if a.replace_nan || config.as_ref().is_some_and(|c| c.replace_nan) {
        NanPolicy::ReplaceWithZero
    } else {
        NanPolicy::Error
    };
    let spec = config.map_or_else(PreprocessSpec::default, |c| c.preprocess);
    let names: Vec<&String> = channels.iter().map(|&i| &dataset.modalities[i]).collect();
    let stored = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let cases = dataset.cases.iter().map(|c| {
        // Fingerprinted before reading: a file changed meanwhile then fails the check later.
        let sources = voxseg::data::cache::case_sources(&dataset.root, c, &channels)?;
        let (case, header) = load_case(&dataset, c, &channels, nan)?;
        let code = voxseg::data::orient::orientation(&header.affine());
        stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(code.clone());
        let moved = voxseg::data::orient::reorient(&case, &header, spec.orientation.as_deref())?;
        // Reoriented to the spec's orientation when it names one, else as stored.
        let cached_code = spec.orientation.clone().unwrap_or(code);
        Ok(voxseg::data::cache::CacheEntry {
            case: preprocess(moved.as_ref().map_or(&case, |(m, _)| m), &spec)?,
            sources,
            orientation: cached_code,
        })
    });
    let ids = voxseg::data::cache::replace_cache(&a.out, a.force, |dir| {
        let ids = voxseg::data::cache::write_cache(cases, &spec, dir)?;
        let names = serde_json::to_string(&names).expect("strings serialise");
        voxseg::atomic::write_bytes(
            &dir.join(voxseg::train::run::CACHE_MODALITIES),
            names.as_bytes(),
        )?;
        Ok(ids)
    })?;
    say!("cached {} cases in {}", ids.len(), a.out.display());
    let stored = stored.into_inner().unwrap_or_else(|e| e.into_inner());
    if spec.orientation.is_none() && stored.len() > 1 {
        eprintln!(
            "warning: the cases are stored in {} orientations ({}) and the cache keeps each as \
             stored, so training refuses it wherever its training and validation cases differ: \
             name one with \"preprocess\": {{\"orientation\": \"RAS\"}} in --config \
             (training without --cache reorients them itself)",
            stored.len(),
            stored.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}
