//! Criterion timings of the CPU convolution cases of `voxseg::bench` (the same cases
//! `voxseg bench --device cpu` reports). Run with `cargo bench --bench conv [-- FILTER]`.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn conv(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv");
    group.sample_size(10);
    for case in voxseg::bench::cpu_cases(voxseg::backend::cpu::Cpu::new()).expect("bench cases") {
        let name = format!("{} {}", case.op, case.shape);
        group.throughput(Throughput::Elements(case.flops as u64));
        // Inputs are allocated on the first call only, which criterion makes only for the
        // cases its filter selects.
        let mut prepare = Some(case.prepare);
        let mut run = None;
        group.bench_function(name, |b| {
            let run = run.get_or_insert_with(|| {
                let prepare = prepare.take().expect("prepared once");
                prepare().expect("prepare bench inputs")
            });
            b.iter(|| run().expect("bench run"))
        });
    }
    group.finish();
}

criterion_group!(benches, conv);
criterion_main!(benches);
