//! Build script for the CUDA kernels in kernels/.
//!
//! 1. With nvcc (from `NVCC`, `CUDA_HOME`/`CUDA_PATH`, `PATH`, the repository's `.cuda/`
//!    (scripts/install-cuda-toolchain.sh) or /usr/local/cuda) every kernels/*.cu is
//!    compiled to PTX for `VOXSEG_CUDA_ARCH` (default sm_80), or for the architecture its
//!    first line names (`// voxseg-arch: sm_90a`: code for one GPU generation only), into
//!    OUT_DIR, and once more per variant its leading comment names
//!    (`// voxseg-variant: l1 VX_GATHER_L1`: the module `<name>_l1`, built with
//!    `-DVX_GATHER_L1`), and
//!    OUT_DIR/kernels_ptx.rs embeds it;
//!    the cfg `voxseg_has_ptx` is set. Without nvcc, or when a kernel fails to compile, the
//!    list is empty and a warning says why: the binary runs on the CPU only. With
//!    `VOXSEG_REQUIRE_CUDA=1` either case fails the build instead.
//!    With `VOXSEG_CUDA_SASS=sm_90` (one architecture) nvcc's ptxas also assembles each
//!    module's PTX into machine code (SASS) for that architecture, or for its `a` variant
//!    where the module targets that (sm_90a), embedded beside the PTX: a GPU of that
//!    architecture then loads it as it is, instead of the driver compiling the PTX first
//!    (seconds per large module, in every fresh process without a warm cache). A module
//!    that needs a newer architecture than the one named gets no SASS.
//! 2. Always: the same kernels/*.cu are compiled as host C++ against kernels/emu/cuda_emu.h
//!    into a static library (the CPU execution harness), which src/backend/cuda/emu.rs
//!    calls so that `cargo test` runs the kernels without a GPU.
//!
//! Under clippy neither happens: it only type-checks, so every module is an empty
//! placeholder and the cfg is set (see `type_check_only`).
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const DEFAULT_ARCH: &str = "sm_80";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "PATH",
        "VOXSEG_CUDA_ARCH",
        "VOXSEG_CUDA_SASS",
        "VOXSEG_REQUIRE_CUDA",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo::rustc-check-cfg=cfg(voxseg_has_ptx)");

    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let kernels = kernel_sources(&manifest.join("kernels"));

    if type_check_only() {
        write_placeholder_modules(&out, &kernels);
        return;
    }
    // The harness's host compiler and nvcc run side by side: on a 2-core CI machine the
    // build script is otherwise minutes on the critical path of every build.
    std::thread::scope(|scope| {
        scope.spawn(|| build_harness(&manifest, &kernels));
        build_ptx(&manifest, &out, &kernels);
    });
}

/// Whether cargo runs this script for clippy (its workspace wrapper is `clippy-driver`),
/// which type-checks the crate and never links or runs it: the module tables and the cfg
/// are all it needs, and nvcc's and the host compiler's minutes are not.
fn type_check_only() -> bool {
    env::var_os("RUSTC_WORKSPACE_WRAPPER").is_some_and(|wrapper| {
        Path::new(&wrapper)
            .file_stem()
            .is_some_and(|stem| stem == "clippy-driver")
    })
}

/// For a type check: every module (variants included) as an empty PTX file, no SASS, and
/// the cfg set, so that the CUDA host code is linted whether or not nvcc is installed.
fn write_placeholder_modules(out: &Path, kernels: &[PathBuf]) {
    let mut names = Vec::new();
    for cu in kernels {
        names.push(module_name(cu));
        for (suffix, _) in variant_lines(cu) {
            names.push(format!("{}_{suffix}", module_name(cu)));
        }
    }
    for name in &names {
        let ptx = out.join(format!("{name}.ptx"));
        fs::write(&ptx, "").unwrap_or_else(|e| panic!("cannot write {}: {e}", ptx.display()));
    }
    write_ptx_table(out, &names);
    write_sass_table(out, None, &[]);
    println!("cargo:rustc-cfg=voxseg_has_ptx");
}

/// `work` applied to every job on as many threads as the machine has, largest jobs taken
/// first as the caller orders them; the results in the jobs' order.
fn run_parallel<T: Sync, R: Send>(jobs: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.min(jobs.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(job) = jobs.get(i) else {
                    break;
                };
                let result = work(job);
                results.lock().expect("no job panics").push((i, result));
            });
        }
    });
    let mut results = results.into_inner().expect("no job panics");
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// kernels/*.cu, sorted by name.
fn kernel_sources(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    files.sort();
    files
}

fn module_name(cu: &Path) -> String {
    cu.file_stem()
        .and_then(|s| s.to_str())
        .expect("kernel file names are UTF-8")
        .to_string()
}

fn require_cuda() -> bool {
    env::var("VOXSEG_REQUIRE_CUDA").is_ok_and(|v| v == "1")
}

/// Without PTX: a warning (or, when CUDA is required, a failed build).
fn no_ptx(out: &Path, why: &str) {
    if require_cuda() {
        panic!("VOXSEG_REQUIRE_CUDA=1 but {why}");
    }
    println!("cargo:warning=building without CUDA kernels (CPU only): {why}");
    write_ptx_table(out, &[]);
    write_sass_table(out, None, &[]);
}

fn build_ptx(manifest: &Path, out: &Path, kernels: &[PathBuf]) {
    let Some(nvcc) = find_nvcc(manifest) else {
        no_ptx(
            out,
            "nvcc not found (set NVCC or CUDA_HOME, or run scripts/install-cuda-toolchain.sh)",
        );
        return;
    };
    let arch = env::var("VOXSEG_CUDA_ARCH").unwrap_or_else(|_| DEFAULT_ARCH.to_string());
    if !looks_like_arch(&arch) {
        panic!("VOXSEG_CUDA_ARCH must look like sm_80, got {arch:?}");
    }
    let sass_arch = env::var("VOXSEG_CUDA_SASS").ok().filter(|a| !a.is_empty());
    if let Some(a) = &sass_arch {
        if a.strip_prefix("sm_")
            .is_none_or(|n| n.parse::<u32>().is_err())
        {
            panic!("VOXSEG_CUDA_SASS must look like sm_90, got {a:?}");
        }
    }
    // The PyPI toolchain keeps its headers beside bin/; a system CUDA has them there too.
    let root = nvcc.parent().and_then(Path::parent).map(Path::to_path_buf);
    let mut builds: Vec<(&PathBuf, String, Option<String>)> = kernels
        .iter()
        .flat_map(|cu| {
            let plain = (module_name(cu), None);
            let variants = variant_lines(cu)
                .into_iter()
                .map(|(suffix, define)| (format!("{}_{suffix}", module_name(cu)), Some(define)));
            std::iter::once(plain)
                .chain(variants)
                .map(move |(name, define)| (cu, name, define))
        })
        .collect();
    // The convolution modules take most of nvcc's time: start them first.
    builds.sort_by_key(|(cu, _, _)| std::cmp::Reverse(fs::metadata(cu).map_or(0, |m| m.len())));
    let outcomes = run_parallel(&builds, |(cu, name, define)| {
        let ptx = out.join(format!("{name}.ptx"));
        let file_arch = arch_line(cu).unwrap_or_else(|| arch.clone());
        let mut cmd = Command::new(&nvcc);
        cmd.arg("--ptx")
            .arg(format!("-arch={file_arch}"))
            .arg("-std=c++17")
            .arg("-lineinfo")
            .arg("-I")
            .arg(manifest.join("kernels"));
        if let Some(root) = &root {
            for inc in [root.join("include"), root.join("include").join("cccl")] {
                if inc.is_dir() {
                    cmd.arg("-I").arg(inc);
                }
            }
        }
        if let Some(define) = define {
            cmd.arg(format!("-D{define}"));
        }
        cmd.arg("-o").arg(&ptx).arg(cu);
        match cmd.output() {
            Ok(o) if o.status.success() => Ok(file_arch),
            Ok(o) => Err(format!(
                "nvcc failed on {}: {}",
                cu.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run {}: {e}", nvcc.display())),
        }
    });
    let mut modules = Vec::new();
    for ((_, name, _), outcome) in builds.iter().zip(outcomes) {
        match outcome {
            Ok(file_arch) => modules.push((name.clone(), file_arch)),
            Err(why) => {
                no_ptx(out, &why);
                return;
            }
        }
    }
    modules.sort();
    let sass = match &sass_arch {
        Some(a) => assemble_sass(&nvcc, out, &modules, a),
        None => Vec::new(),
    };
    let names: Vec<String> = modules.into_iter().map(|(name, _)| name).collect();
    write_ptx_table(out, &names);
    write_sass_table(out, sass_arch.as_deref(), &sass);
    println!("cargo:rustc-cfg=voxseg_has_ptx");
}

/// `sm_` followed by letters and digits.
fn looks_like_arch(arch: &str) -> bool {
    arch.strip_prefix("sm_")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The architecture to assemble a module built for `module_arch` into, given the SASS
/// architecture asked for (`sm_90`): that one, or its `a` variant for a module that targets
/// it (sm_90a code runs on compute capability 9.0 only); none for a module that needs a
/// newer architecture.
fn sass_target(module_arch: &str, sass_arch: &str) -> Option<String> {
    let number = |a: &str| -> Option<(u32, String)> {
        let n = a.strip_prefix("sm_")?;
        let digits: String = n.chars().take_while(char::is_ascii_digit).collect();
        Some((digits.parse().ok()?, n[digits.len()..].to_string()))
    };
    let (module_number, module_suffix) = number(module_arch)?;
    let (sass_number, _) = number(sass_arch)?;
    if module_suffix.is_empty() && module_number <= sass_number {
        Some(sass_arch.to_string())
    } else if module_number == sass_number {
        Some(module_arch.to_string())
    } else {
        None
    }
}

/// Assembles each module's PTX in OUT_DIR into OUT_DIR/<module>.cubin with nvcc's ptxas, on
/// as many threads as the machine has: (module name, architecture) of each cubin. A failure
/// fails the build when CUDA is required, and otherwise leaves that module to the driver.
fn assemble_sass(
    nvcc: &Path,
    out: &Path,
    modules: &[(String, String)],
    sass_arch: &str,
) -> Vec<(String, String)> {
    let ptxas = nvcc.with_file_name("ptxas");
    let jobs: Vec<(String, String)> = modules
        .iter()
        .filter_map(|(name, arch)| Some((name.clone(), sass_target(arch, sass_arch)?)))
        .collect();
    let failures = run_parallel(&jobs, |(name, target)| {
        let outcome = Command::new(&ptxas)
            .arg(format!("-arch={target}"))
            .arg("-o")
            .arg(out.join(format!("{name}.cubin")))
            .arg(out.join(format!("{name}.ptx")))
            .output();
        match outcome {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Some(format!("cannot run {}: {e}", ptxas.display())),
        }
    });
    let mut assembled = Vec::new();
    for ((name, target), failure) in jobs.iter().zip(failures) {
        match failure {
            None => assembled.push((name.clone(), target.clone())),
            Some(why) if require_cuda() => {
                panic!("VOXSEG_REQUIRE_CUDA=1 but ptxas failed on {name}.ptx for {target}: {why}")
            }
            Some(why) => println!(
                "cargo:warning=no {target} SASS for {name} (the driver will compile its PTX): {why}"
            ),
        }
    }
    assembled
}

/// The architecture a kernel file's first line names (`// voxseg-arch: sm_90a`), if any.
fn arch_line(cu: &Path) -> Option<String> {
    let text =
        fs::read_to_string(cu).unwrap_or_else(|e| panic!("cannot read {}: {e}", cu.display()));
    let arch = text.lines().next()?.strip_prefix("// voxseg-arch:")?.trim();
    if !looks_like_arch(arch) {
        panic!(
            "{}: voxseg-arch must look like sm_90a, got {arch:?}",
            cu.display()
        );
    }
    Some(arch.to_string())
}

/// The variants a kernel file's leading comment lines name, each as
/// `// voxseg-variant: <suffix> <macro>`: (suffix, macro to define).
fn variant_lines(cu: &Path) -> Vec<(String, String)> {
    let text =
        fs::read_to_string(cu).unwrap_or_else(|e| panic!("cannot read {}: {e}", cu.display()));
    text.lines()
        .take_while(|l| l.starts_with("//"))
        .filter_map(|l| l.strip_prefix("// voxseg-variant:"))
        .map(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let word_ok = |w: &str| w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            match words[..] {
                [suffix, define] if word_ok(suffix) && word_ok(define) => {
                    (suffix.to_string(), define.to_string())
                }
                _ => panic!(
                    "{}: voxseg-variant must look like `l1 VX_GATHER_L1`, got {rest:?}",
                    cu.display()
                ),
            }
        })
        .collect()
}

/// OUT_DIR/kernels_ptx.rs: `PTX_MODULES`, (module name, PTX text) per kernel file.
fn write_ptx_table(out: &Path, modules: &[String]) {
    let mut src = String::from(
        "/// (module name, PTX) for each kernels/*.cu, compiled by build.rs; empty when nvcc\n\
         /// was not available.\n\
         pub static PTX_MODULES: &[(&str, &str)] = &[\n",
    );
    for m in modules {
        src.push_str(&format!(
            "    ({m:?}, include_str!(concat!(env!(\"OUT_DIR\"), \"/{m}.ptx\"))),\n"
        ));
    }
    src.push_str("];\n");
    let path = out.join("kernels_ptx.rs");
    fs::write(&path, src).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// OUT_DIR/kernels_sass.rs: `SASS_ARCH`, the architecture asked for, and `SASS_MODULES`,
/// (module name, architecture, machine code) per module assembled for it.
fn write_sass_table(out: &Path, sass_arch: Option<&str>, modules: &[(String, String)]) {
    let mut src = format!(
        "/// The architecture `VOXSEG_CUDA_SASS` named when this binary was built, if any.\n\
         pub static SASS_ARCH: Option<&str> = {sass_arch:?};\n\
         /// (module name, architecture, cubin) for each module build.rs assembled for it.\n\
         pub static SASS_MODULES: &[(&str, &str, &[u8])] = &[\n"
    );
    for (m, arch) in modules {
        src.push_str(&format!(
            "    ({m:?}, {arch:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{m}.cubin\"))),\n"
        ));
    }
    src.push_str("];\n");
    let path = out.join("kernels_sass.rs");
    fs::write(&path, src).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn find_nvcc(manifest: &Path) -> Option<PathBuf> {
    if let Ok(p) = env::var("NVCC") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
        println!(
            "cargo:warning=NVCC={} is not a file; looking elsewhere",
            p.display()
        );
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(home) = env::var(var) {
            let p = Path::new(&home).join("bin").join("nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            let p = dir.join("nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    [
        manifest.join(".cuda/nvidia/cu13/bin/nvcc"),
        PathBuf::from("/usr/local/cuda/bin/nvcc"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

fn build_harness(manifest: &Path, kernels: &[PathBuf]) {
    let dir = manifest.join("kernels");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        // The harness is slow at opt-level 0 and the dev profile would give that.
        .opt_level(2)
        .include(&dir)
        .flag("-Wall")
        .flag("-Wextra")
        // `#pragma unroll` is for nvcc.
        .flag("-Wno-unknown-pragmas")
        // GCC notes that passing Conv3dTmaParams (64-byte aligned: its tensor maps) by
        // value changed ABI in GCC 4.6; the harness's kernels and callers are built together.
        .flag("-Wno-psabi")
        // Kernel sources end in .cu; they are plain C++ on this side.
        .flag("-x")
        .flag("c++");
    for f in ["emu/cuda_emu.cpp", "emu/layout.cpp", "emu/selftest.cpp"] {
        build.file(dir.join(f));
    }
    for cu in kernels {
        build.file(cu);
    }
    build.compile("voxseg_cuda_harness");
}
