//! Criterion timings of the CPU convolution cases of `voxseg::bench` (the same cases
//! `voxseg bench --device cpu` reports). Run with `cargo bench --bench conv [-- FILTER]`.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn conv(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv");
    group.sample_size(10);
    for case in voxseg::bench::cpu_cases().expect("bench cases") {
        let name = format!("{} {}", case.op, case.shape);
        group.throughput(Throughput::Elements(case.flops as u64));
        let mut run = (case.prepare)().expect("prepare bench inputs");
        group.bench_function(name, |b| b.iter(|| run().expect("bench run")));
    }
    group.finish();
}

criterion_group!(benches, conv);
criterion_main!(benches);
