//! The one table of configurations precompiled into the runtime. The runtime's build script,
//! its dispatch tests and the benchmarks all read it; nothing else lists kernels.

use crate::config::KernelConfig;

/// `(d_k, d_v, P)` of every precompiled kernel, all with the default scale `sqrt(d_k)`.
pub const PRECOMPILED: &[(usize, usize, usize)] = &[
    (4, 4, 2),
    (4, 4, 3),
    (4, 4, 4),
    (8, 8, 2),
    (8, 8, 3),
    (8, 8, 4),
    (16, 16, 2),
    (16, 16, 3),
    (16, 16, 4),
    (32, 32, 2),
    (32, 32, 3),
    (32, 32, 4),
    (4, 4, 5),
    (4, 4, 6),
    (8, 8, 5),
    (8, 8, 6),
    (16, 16, 5),
    (16, 16, 6),
    // The paper's configuration for unbounded generation (d 8, P 8; some weights negative),
    // and P 7, whose weights are all positive.
    (8, 8, 7),
    (8, 8, 8),
];

/// [`PRECOMPILED`] as validated configurations.
pub fn precompiled_configs() -> Vec<KernelConfig> {
    PRECOMPILED
        .iter()
        .map(|&(d_k, d_v, p)| KernelConfig::new(d_k, d_v, p).expect("registry configs are valid"))
        .collect()
}
