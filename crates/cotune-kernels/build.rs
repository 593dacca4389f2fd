//! Tells the tests which instruction sets the build machine has: `host_avx512` (AVX-512F) and
//! `host_avx2` (AVX2 and FMA). The sgemm tests of a path the CPU cannot run are then reported
//! as ignored instead of passing without running. The library itself never uses these: it
//! picks its path at run time, on the machine it runs on.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(host_avx512)");
    println!("cargo::rustc-check-cfg=cfg(host_avx2)");
    // Only meaningful when the tests run where they are built.
    if std::env::var("HOST").ok() != std::env::var("TARGET").ok() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            println!("cargo::rustc-cfg=host_avx512");
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            println!("cargo::rustc-cfg=host_avx2");
        }
    }
}
