//! Machine code (SASS) that build.rs assembled from the embedded PTX for one architecture
//! (`VOXSEG_CUDA_SASS`), so that a GPU of that architecture loads a module as it is instead
//! of the driver compiling its PTX first.
include!(concat!(env!("OUT_DIR"), "/kernels_sass.rs"));

/// Set to `off`, modules load from their PTX even where SASS for the device is embedded
/// (to compare the driver's compilation with ours).
pub const SASS_ENV: &str = "VOXSEG_SASS";

/// The compute capability an architecture name stands for: sm_90 and sm_90a are (9, 0).
pub fn compute_capability_of(arch: &str) -> Option<(i32, i32)> {
    let digits: String = arch
        .strip_prefix("sm_")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let number: i32 = digits.parse().ok()?;
    Some((number / 10, number % 10))
}

/// Whether `VOXSEG_SASS=off` asks for every module to load from its PTX.
pub fn sass_turned_off() -> bool {
    std::env::var(SASS_ENV).is_ok_and(|v| v == "off")
}

/// The embedded cubin of `module` for a device of compute capability `cc`, if any:
/// (architecture, cubin).
pub fn sass_for(module: &str, cc: (i32, i32)) -> Option<(&'static str, &'static [u8])> {
    SASS_MODULES
        .iter()
        .find(|(name, arch, _)| *name == module && compute_capability_of(arch) == Some(cc))
        .map(|&(_, arch, cubin)| (arch, cubin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::{targets_sm90a, PTX_MODULES};
    use std::collections::HashSet;

    /// ELF's e_machine for NVIDIA CUDA.
    const EM_CUDA: u16 = 190;

    /// The kernels a PTX module defines (its `.entry` names).
    fn entries(ptx: &str) -> Vec<&str> {
        ptx.lines()
            .filter_map(|line| line.trim().split(".entry ").nth(1))
            .map(|rest| rest.split('(').next().unwrap_or(rest).trim())
            .collect()
    }

    #[test]
    fn architecture_names_give_compute_capabilities() {
        assert_eq!(compute_capability_of("sm_90"), Some((9, 0)));
        assert_eq!(compute_capability_of("sm_90a"), Some((9, 0)));
        assert_eq!(compute_capability_of("sm_80"), Some((8, 0)));
        assert_eq!(compute_capability_of("sm_120a"), Some((12, 0)));
        assert_eq!(compute_capability_of("compute_90"), None);
        assert_eq!(compute_capability_of("sm_"), None);
    }

    /// Without `VOXSEG_CUDA_SASS` nothing is embedded; with it, every module that can run on
    /// that architecture is, as a 64-bit CUDA ELF that holds each kernel of its PTX.
    #[test]
    fn every_module_that_can_run_there_has_its_kernels_in_sass() {
        let Some(arch) = SASS_ARCH else {
            assert!(SASS_MODULES.is_empty());
            return;
        };
        let cc = compute_capability_of(arch).expect("build.rs checked the name");
        let expected: Vec<&str> = PTX_MODULES
            .iter()
            .filter(|(_, ptx)| !targets_sm90a(ptx) || cc == (9, 0))
            .map(|(name, _)| *name)
            .collect();
        let embedded: Vec<&str> = SASS_MODULES.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(embedded, expected);
        for &(name, module_arch, cubin) in SASS_MODULES {
            let ptx = PTX_MODULES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, ptx)| *ptx)
                .expect("every cubin comes from an embedded module");
            // sm_90a code is assembled for sm_90a: sm_90 would refuse its wgmma.
            let expected_arch = if targets_sm90a(ptx) { "sm_90a" } else { arch };
            assert_eq!(module_arch, expected_arch, "{name}");
            assert_eq!(&cubin[..4], b"\x7fELF", "{name}");
            assert_eq!(cubin[4], 2, "{name}: not a 64-bit ELF");
            assert_eq!(
                u16::from_le_bytes([cubin[18], cubin[19]]),
                EM_CUDA,
                "{name}"
            );
            let ptx = PTX_MODULES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, ptx)| *ptx)
                .expect("every cubin comes from an embedded module");
            // Each kernel's code sits in a section named .text.<kernel>, and the section
            // names are NUL-terminated strings of the ELF's string table.
            let sections: HashSet<&[u8]> = cubin
                .split(|&b| b == 0)
                .filter_map(|s| s.strip_prefix(b".text."))
                .collect();
            let kernels = entries(ptx);
            assert!(!kernels.is_empty(), "{name} defines no kernel");
            for kernel in kernels {
                assert!(
                    sections.contains(kernel.as_bytes()),
                    "{name}'s cubin has no code for {kernel}"
                );
            }
            assert_eq!(sass_for(name, cc), Some((module_arch, cubin)));
            assert_eq!(sass_for(name, (cc.0 + 1, cc.1)), None);
        }
        assert_eq!(sass_for("no_such_module", cc), None);
    }
}
