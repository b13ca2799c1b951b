// Parameters and tile shape of the matrix product (kernels/matmul.cu); mirrored by
// src/backend/cuda/params_matmul.rs.
#pragma once

constexpr int VX_MATMUL_BM = 64;       // rows of c per block (grid.x)
constexpr int VX_MATMUL_BN = 64;       // columns of c per block (grid.y)
constexpr int VX_MATMUL_BK = 16;       // reduction step; k_per_split is a multiple
constexpr int VX_MATMUL_THREADS = 256; // 16 x 16 threads, each a 4 x 4 block of c

// c[m, n] = op(a)[m, k] op(b)[k, n] (+ bias[n] on every row). grid.z splits k into slices
// of k_per_split; with more than one split, slice z writes its own partial product at
// c + z * m * n (the bias only in slice 0) and a second pass adds them.
struct MatmulKernelParams {
    unsigned long long m;
    unsigned long long n;
    unsigned long long k;
    unsigned long long k_per_split;
    unsigned trans_a;  // a stored [k, m] (else [m, k])
    unsigned trans_b;  // b stored [n, k] (else [k, n])
    unsigned has_bias;
    unsigned pad_;
};
