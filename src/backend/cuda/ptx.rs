//! The PTX that build.rs compiled from kernels/*.cu, embedded in the binary.
include!(concat!(env!("OUT_DIR"), "/kernels_ptx.rs"));
