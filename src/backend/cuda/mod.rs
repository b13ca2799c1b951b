//! The CUDA backend: device buffers from a caching pool, PTX modules built from kernels/*.cu.
