//! Build script: compiles kernels/*.cu to PTX when nvcc is available (see the CUDA issue).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
}
