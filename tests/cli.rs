//! The real `sata` binary on real `.npy` files: results against the float64 reference, state
//! continuation across invocations, and one clear error line for every kind of bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Problem, problem, reference, rel_err, rng};
use npyz::WriterBuilder;

fn sata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sata"))
        .args(args)
        .output()
        .expect("the sata binary runs")
}

fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[usize], data: &[T]) {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::fs::File::create(path).unwrap())
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

fn read_npy(path: &Path) -> (Vec<u64>, Vec<f64>, String) {
    let npy = npyz::NpyFile::new(std::fs::File::open(path).unwrap()).unwrap();
    let shape = npy.shape().to_vec();
    let npyz::DType::Plain(ty) = npy.dtype() else {
        panic!("not a plain dtype")
    };
    let dtype = ty.to_string();
    let data = if dtype.ends_with("f2") {
        npy.into_vec::<sata::f16>()
            .unwrap()
            .into_iter()
            .map(|x| f64::from(x.to_f32()))
            .collect()
    } else if dtype.ends_with("f4") {
        npy.into_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    } else {
        npy.into_vec::<f64>().unwrap()
    };
    (shape, data, dtype)
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
    /// Writes q, k, v of `p` as `[batch, heads, tokens, dim]` arrays named with `tag`.
    fn write_problem_f32(&self, p: &Problem, tag: &str) {
        write_npy(
            &self.path(&format!("q{tag}.npy")),
            &p.q_shape(),
            &common::to_f32(&p.q),
        );
        write_npy(
            &self.path(&format!("k{tag}.npy")),
            &p.k_shape(),
            &common::to_f32(&p.k),
        );
        write_npy(
            &self.path(&format!("v{tag}.npy")),
            &p.v_shape(),
            &common::to_f32(&p.v),
        );
    }
    fn attend_args(&self, tag: &str, out: &str, terms: usize) -> Vec<String> {
        vec![
            "attend".into(),
            "--q".into(),
            self.arg(&format!("q{tag}.npy")),
            "--k".into(),
            self.arg(&format!("k{tag}.npy")),
            "--v".into(),
            self.arg(&format!("v{tag}.npy")),
            "--out".into(),
            self.arg(out),
            "--terms".into(),
            terms.to_string(),
        ]
    }

    /// `out` (written by a causal `attend` of `p`) against the float64 reference.
    fn assert_causal_output_matches(&self, out: &str, p: &Problem) {
        let (_, y, _) = read_npy(&self.path(out));
        let err = rel_err(&y, &reference(p, true));
        let tol = common::f32_tolerance(p, true);
        assert!(err < tol, "relative error {err:e} > {tol:e}");
    }

    /// Attends the same files again on `backend`, continuing from the checkpoint `state`, and
    /// checks that the state then holds `tokens` tokens.
    fn assert_continues(&self, state: &str, backend: &str, tokens: usize) {
        let mut again = self.attend_args("", "continued.npy", 3);
        again.extend(["--backend", backend, "--stats", "--state-in"].map(String::from));
        again.push(self.arg(state));
        let out = run(&again);
        assert_ok(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("state holds {tokens} tokens")),
            "{stderr}"
        );
    }
}

fn run(args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    sata(&refs)
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "sata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rounds the problem's inputs to f32, as the files hold them.

#[test]
fn causal_f32_matches_the_reference() {
    let files = Files::new();
    let p = problem(
        &mut rng("cli_causal"),
        (2, 2),
        (17, 17),
        (6, 4, 4),
        1.0,
        true,
    )
    .rounded_to_f32();
    files.write_problem_f32(&p, "");
    let out = run(&files.attend_args("", "y.npy", 4));
    assert_ok(&out);
    let (shape, y, dtype) = read_npy(&files.path("y.npy"));
    assert_eq!(shape, vec![2, 2, 17, 4]);
    assert!(
        dtype.ends_with("f4"),
        "output dtype follows the input: {dtype}"
    );
    let err = rel_err(&y, &reference(&p, true));
    let tol = common::f32_tolerance(&p, true);
    assert!(err < tol, "relative error {err:e} > {tol:e}");
}

#[test]
fn causal_f16_is_within_one_f16_rounding_of_the_reference() {
    let files = Files::new();
    let p = problem(&mut rng("cli_f16"), (1, 3), (20, 20), (8, 8, 3), 1.0, true);
    let half =
        |x: &[f64]| -> Vec<sata::f16> { x.iter().map(|&v| sata::f16::from_f64(v)).collect() };
    let (q, k, v) = (half(&p.q), half(&p.k), half(&p.v));
    let widen = |x: &[sata::f16]| -> Vec<f64> { x.iter().map(|h| h.to_f64()).collect() };
    let p = Problem {
        q: widen(&q),
        k: widen(&k),
        v: widen(&v),
        ..p
    };
    write_npy(&files.path("q.npy"), &p.q_shape(), &q);
    write_npy(&files.path("k.npy"), &p.k_shape(), &k);
    write_npy(&files.path("v.npy"), &p.v_shape(), &v);
    let mut args = files.attend_args("", "y.npy", 3);
    args.extend(["--stats".into(), "--state-out".into(), files.arg("s.sata")]);
    let out = run(&args);
    assert_ok(&out);
    let (shape, y, dtype) = read_npy(&files.path("y.npy"));
    assert_eq!(shape, vec![1, 3, 20, 8]);
    assert!(
        dtype.ends_with("f2"),
        "output dtype follows the input: {dtype}"
    );
    let err = rel_err(&y, &reference(&p, true));
    let tol = 2f64.powi(-11) + common::f32_tolerance(&p, true);
    assert!(err < tol, "relative error {err:e} > {tol:e}");
    // The state is f32 and continues with f32 inputs of the same configuration.
    let f32_inputs = p.rounded_to_f32();
    files.write_problem_f32(&f32_inputs, "32");
    let mut again = files.attend_args("32", "y2.npy", 3);
    again.extend(["--stats".into(), "--state-in".into(), files.arg("s.sata")]);
    let out = run(&again);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("state holds 40 tokens"));
    // The backward does not take float16.
    let mut back = vec!["backward".to_string()];
    for (flag, file) in [
        ("--q", "q.npy"),
        ("--k", "k.npy"),
        ("--v", "v.npy"),
        ("--dy", "q.npy"),
    ] {
        back.extend([flag.to_string(), files.arg(file)]);
    }
    back.extend(["--terms", "3", "--dq"].map(String::from));
    back.push(files.arg("dq.npy"));
    back.push("--dk".into());
    back.push(files.arg("dk.npy"));
    back.push("--dv".into());
    back.push(files.arg("dv.npy"));
    assert_one_line_error(&run(&back), "float16 inputs are not supported");
}

#[test]
fn non_causal_f64_cross_attention_with_three_dimensional_arrays() {
    let files = Files::new();
    // [heads, tokens, dim] arrays: 5 queries against 11 keys.
    let p = problem(
        &mut rng("cli_cross"),
        (1, 3),
        (5, 11),
        (3, 5, 5),
        1.0,
        false,
    );
    write_npy(&files.path("q.npy"), &[3, 5, 3], &p.q);
    write_npy(&files.path("k.npy"), &[3, 11, 3], &p.k);
    write_npy(&files.path("v.npy"), &[3, 11, 5], &p.v);
    let mut args = files.attend_args("", "y.npy", 5);
    args.push("--non-causal".into());
    let out = run(&args);
    assert_ok(&out);
    let (shape, y, dtype) = read_npy(&files.path("y.npy"));
    assert_eq!(shape, vec![3, 5, 5]);
    assert!(dtype.ends_with("f8"));
    let err = rel_err(&y, &reference(&p, false));
    assert!(err < 1e-10, "relative error {err:e}");
}

#[test]
fn state_out_then_state_in_reproduces_the_one_shot_result() {
    let files = Files::new();
    let n = 20;
    let split = 13;
    let p = problem(&mut rng("cli_state"), (1, 2), (n, n), (4, 3, 3), 1.0, true).rounded_to_f32();
    files.write_problem_f32(&p, "");
    // The same sequence cut in two.
    let part = |x: &[f64], dim: usize, r: std::ops::Range<usize>| -> Vec<f32> {
        (0..2)
            .flat_map(|l| x[(l * n + r.start) * dim..(l * n + r.end) * dim].to_vec())
            .map(|v| v as f32)
            .collect()
    };
    for (tag, r) in [("1", 0..split), ("2", split..n)] {
        let len = r.len();
        write_npy(
            &files.path(&format!("q{tag}.npy")),
            &[1, 2, len, 4],
            &part(&p.q, 4, r.clone()),
        );
        write_npy(
            &files.path(&format!("k{tag}.npy")),
            &[1, 2, len, 4],
            &part(&p.k, 4, r.clone()),
        );
        write_npy(
            &files.path(&format!("v{tag}.npy")),
            &[1, 2, len, 3],
            &part(&p.v, 3, r),
        );
    }
    assert_ok(&run(&files.attend_args("", "y.npy", 3)));
    let mut first = files.attend_args("1", "y1.npy", 3);
    first.extend(["--state-out".into(), files.arg("s.sata")]);
    assert_ok(&run(&first));
    let mut second = files.attend_args("2", "y2.npy", 3);
    second.extend(["--state-in".into(), files.arg("s.sata"), "--stats".into()]);
    let out = run(&second);
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("state holds {n} tokens")),
        "{stderr}"
    );

    let (_, whole, _) = read_npy(&files.path("y.npy"));
    let (_, y1, _) = read_npy(&files.path("y1.npy"));
    let (_, y2, _) = read_npy(&files.path("y2.npy"));
    let stitched: Vec<f64> = (0..2)
        .flat_map(|l| {
            let a = &y1[l * split * 3..(l + 1) * split * 3];
            let b = &y2[l * (n - split) * 3..(l + 1) * (n - split) * 3];
            a.iter().chain(b).copied().collect::<Vec<_>>()
        })
        .collect();
    // Same arithmetic in the same order: identical, not merely close.
    assert_eq!(stitched, whole);
}

#[test]
fn info_reports_counts_state_size_and_break_even() {
    let out = sata(&["info", "--d-k", "16", "--d-v", "16", "--terms", "4"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "816",
        "969",
        "16473 words",
        "65892 bytes",
        "from a context of 515 tokens",
        "-1.5961",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn info_reports_the_error_bound_and_the_smallest_p_for_a_tolerance() {
    // |q|·|k| <= 2, c = 2: |q·k|/c <= 1. P = 5: e * 1/5! = 2.265e-2 per weight.
    let out = sata(&[
        "info",
        "--d-k",
        "4",
        "--d-v",
        "4",
        "--terms",
        "5",
        "--qk-bound",
        "2",
        "--tolerance",
        "1e-6",
    ]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("relative 2.265e-2"), "{text}");
    // e / 10! = 7.5e-7 is the first factor below 1e-6 (e / 9! = 7.5e-6 is not).
    assert!(
        text.contains("smallest P meeting tolerance 1e-6: 10"),
        "{text}"
    );
    let out = sata(&[
        "info",
        "--d-k",
        "4",
        "--d-v",
        "4",
        "--terms",
        "4",
        "--qk-bound",
        "-1",
    ]);
    assert_one_line_error(&out, "--qk-bound");
}

#[test]
fn help_explains_the_commands() {
    let out = sata(&["--help"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("attend") && text.contains("info") && text.contains("--state-in"));
    let out = sata(&["attend", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--non-causal",
        "--scale",
        "--backend",
        "--state-out",
        "--terms",
    ] {
        assert!(text.contains(flag), "attend --help lacks {flag}");
    }
}

#[test]
fn backend_wgpu_matches_the_reference_and_its_state_continues_on_the_cpu() {
    if !common::wgpu_available() {
        return;
    }
    let files = Files::new();
    let n = 12;
    let p = problem(&mut rng("cli_wgpu"), (1, 2), (n, n), (4, 3, 3), 1.0, true).rounded_to_f32();
    files.write_problem_f32(&p, "");
    let mut args = files.attend_args("", "y.npy", 3);
    args.extend(["--backend", "wgpu", "--stats", "--state-out"].map(String::from));
    args.push(files.arg("s.sata"));
    let out = run(&args);
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("backend wgpu (kernel d4_v3_p3"), "{stderr}");
    files.assert_causal_output_matches("y.npy", &p);
    // The checkpoint written from the device loads on the CPU: the same keys again as a
    // continuation see 2n tokens.
    files.assert_continues("s.sata", "cpu-generic", 2 * n);
}

#[test]
fn backend_wgpu_without_an_adapter_is_one_clear_line() {
    let files = Files::new();
    let p = problem(&mut rng("cli_no_gpu"), (1, 1), (4, 4), (3, 3, 3), 1.0, true);
    files.write_problem_f32(&p, "");
    let mut args = files.attend_args("", "y.npy", 3);
    args.extend(["--backend".into(), "wgpu".into()]);
    // No Vulkan driver to be found and no other API allowed.
    let out = Command::new(env!("CARGO_BIN_EXE_sata"))
        .args(&args)
        .env("VK_ICD_FILENAMES", "/nonexistent.json")
        .env("VK_DRIVER_FILES", "/nonexistent.json")
        .env("WGPU_BACKEND", "vulkan")
        .output()
        .unwrap();
    assert_one_line_error(&out, "no GPU adapter found");
}

#[test]
fn backend_cpu_says_it_fell_back_and_gpu_backends_are_clear_errors() {
    let files = Files::new();
    let p = problem(
        &mut rng("cli_backend"),
        (1, 1),
        (4, 4),
        (3, 3, 3),
        1.0,
        true,
    );
    files.write_problem_f32(&p, "");
    let mut args = files.attend_args("", "y.npy", 3);
    args.extend(["--backend".into(), "cpu".into()]);
    let out = run(&args);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("using cpu-generic"));
    let mut args = files.attend_args("", "y.npy", 3);
    args.extend(["--backend".into(), "tpu".into()]);
    assert_one_line_error(&run(&args), "tpu");
    // Without an NVIDIA GPU and driver, the cuda backend is one line naming what is missing.
    if sata::cuda::gpu_summary().is_err() {
        let mut args = files.attend_args("", "y.npy", 3);
        args.extend(["--backend".into(), "cuda".into()]);
        assert_one_line_error(&run(&args), "CUDA");
    }
}

#[test]
fn backend_cuda_host_runs_the_cuda_kernels_and_its_state_continues_on_the_cpu() {
    let files = Files::new();
    let n = 12;
    let p = problem(&mut rng("cli_cuda"), (1, 2), (n, n), (4, 3, 3), 1.0, true).rounded_to_f32();
    files.write_problem_f32(&p, "");
    let mut args = files.attend_args("", "y.npy", 3);
    args.extend(["--backend", "cuda-host", "--stats", "--state-out"].map(String::from));
    args.push(files.arg("s.sata"));
    let out = run(&args);
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cuda (kernel d4_v3_p3, host execution on the CPU"),
        "{stderr}"
    );
    assert!(stderr.contains("largest |q·k|/c <= "), "{stderr}");
    assert!(
        stderr.contains("every weight within a relative"),
        "{stderr}"
    );
    files.assert_causal_output_matches("y.npy", &p);
    files.assert_continues("s.sata", "cpu-generic", 2 * n);
}

#[test]
fn emit_and_info_describe_the_cuda_kernels() {
    let out = sata(&[
        "emit", "--target", "cuda", "--d-k", "4", "--d-v", "4", "--terms", "3",
    ]);
    assert_ok(&out);
    let source = String::from_utf8_lossy(&out.stdout);
    assert!(
        source.contains("__global__ void __launch_bounds__(64, "),
        "{source}"
    );
    assert!(!source.contains("kahan_add"));
    let out = sata(&[
        "emit",
        "--target",
        "cuda",
        "--d-k",
        "4",
        "--d-v",
        "4",
        "--terms",
        "3",
        "--compensated",
    ]);
    assert_ok(&out);
    let kahan = String::from_utf8_lossy(&out.stdout);
    assert!(kahan.contains("kahan_add(u, comp"), "{kahan}");
    assert!(kahan.contains("sata_d4_v4_p3_kahan_decode("), "{kahan}");
    for entry in sata::codegen::Entry::ALL {
        let symbol = entry.symbol("d4_v4_p3");
        assert!(source.contains(&format!("{symbol}(")), "{symbol}");
    }
    let out = sata(&[
        "info", "--d-k", "16", "--d-v", "16", "--terms", "4", "--target", "cuda",
    ]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("predicted H100"), "{text}");
    assert!(text.contains("sata_d16_v16_p4_prefill"), "{text}");
    // The WGSL target has the compensated kernels too; the Rust kernels need no variant.
    let out = sata(&[
        "emit",
        "--target",
        "wgsl",
        "--d-k",
        "4",
        "--d-v",
        "4",
        "--terms",
        "3",
        "--compensated",
    ]);
    assert_ok(&out);
    let wgsl = String::from_utf8_lossy(&out.stdout);
    assert!(wgsl.contains("fn kahan_add("), "{wgsl}");
    for entry in sata::codegen::wgsl::ENTRIES {
        assert!(wgsl.contains(&format!("fn {}(", entry.name())), "{entry}");
    }
    let out = sata(&[
        "emit",
        "--target",
        "rust",
        "--d-k",
        "4",
        "--d-v",
        "4",
        "--terms",
        "3",
        "--compensated",
    ]);
    assert_one_line_error(&out, "--compensated");
    // --report compiles with NVRTC: the ptxas table for both architectures, no problems.
    let out = sata(&[
        "emit", "--target", "rust", "--d-k", "4", "--d-v", "4", "--terms", "3", "--report",
    ]);
    assert_one_line_error(&out, "--target cuda");
    if common::nvrtc_available() {
        let out = sata(&[
            "emit", "--target", "cuda", "--d-k", "8", "--d-v", "8", "--terms", "4", "--report",
        ]);
        assert_ok(&out);
        let table = String::from_utf8_lossy(&out.stdout);
        for arch in ["sm_80", "sm_90"] {
            let row = |l: &str| l.contains("sata_d8_v8_p4_decode") && l.contains(arch);
            assert!(table.lines().any(row), "{table}");
        }
        assert!(!table.contains("PROBLEM"), "{table}");
    }
}

/// Exit status non-zero, exactly one line on stderr that starts `sata: error:` and mentions
/// `needle`, and no panic.
fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("sata: error: "), "{stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_inputs_get_one_clear_line_and_a_failure_status() {
    let files = Files::new();
    let p = problem(&mut rng("cli_bad"), (1, 2), (6, 6), (4, 3, 3), 1.0, true);
    files.write_problem_f32(&p, "");
    let base = |out: &str| files.attend_args("", out, 3);
    let with = |replace: &str, path: &str| {
        let mut args = base("y.npy");
        let i = args.iter().position(|a| a == replace).unwrap();
        args[i + 1] = files.arg(path);
        args
    };

    // Missing file.
    assert_one_line_error(&run(&with("--q", "nope.npy")), "nope.npy");
    // Not an .npy file at all.
    std::fs::write(files.path("junk.npy"), b"hello, not numpy").unwrap();
    assert_one_line_error(&run(&with("--k", "junk.npy")), "not a valid .npy");
    // Integer dtype.
    write_npy(&files.path("int.npy"), &[1, 2, 6, 4], &[1i64; 48]);
    assert_one_line_error(
        &run(&with("--q", "int.npy")),
        "expected float16, float32 or float64",
    );
    // Mixed dtypes.
    write_npy(&files.path("v64.npy"), &[1, 2, 6, 3], &[0.5f64; 36]);
    assert_one_line_error(&run(&with("--v", "v64.npy")), "share one dtype");
    // NaN in the queries.
    let mut q = common::to_f32(&p.q);
    q[5] = f32::NAN;
    write_npy(&files.path("qnan.npy"), &p.q_shape(), &q);
    assert_one_line_error(&run(&with("--q", "qnan.npy")), "non-finite");
    // One-dimensional array.
    write_npy(&files.path("flat.npy"), &[48], &[0.5f32; 48]);
    assert_one_line_error(&run(&with("--q", "flat.npy")), "at least 2 dimensions");
    // Leading dimensions that differ.
    write_npy(&files.path("k3h.npy"), &[1, 3, 6, 4], &[0.5f32; 72]);
    assert_one_line_error(&run(&with("--k", "k3h.npy")), "leading dimensions");
    // Key dimension differing from the query dimension.
    write_npy(&files.path("k5.npy"), &[1, 2, 6, 5], &[0.5f32; 60]);
    assert_one_line_error(&run(&with("--k", "k5.npy")), "d_k");
    // Causal with fewer queries than keys.
    write_npy(&files.path("q4.npy"), &[1, 2, 4, 4], &[0.5f32; 32]);
    assert_one_line_error(&run(&with("--q", "q4.npy")), "one query per key");
    // A truncated .npy (header promises more data than present).
    let full = std::fs::read(files.path("q.npy")).unwrap();
    std::fs::write(files.path("qshort.npy"), &full[..full.len() - 10]).unwrap();
    assert_one_line_error(&run(&with("--q", "qshort.npy")), "truncated");
    // Zero Taylor terms and a bad scale.
    let mut args = base("y.npy");
    let i = args.iter().position(|a| a == "--terms").unwrap();
    args[i + 1] = "0".into();
    assert_one_line_error(&run(&args), "terms");
    let mut args = base("y.npy");
    args.extend(["--scale".into(), "-2".into()]);
    assert_one_line_error(&run(&args), "scale");
    // An unwritable output.
    assert_one_line_error(&run(&base("missing-dir/y.npy")), "cannot write");
    // Nothing was written by any failed call.
    assert!(!files.path("y.npy").exists());
}

#[test]
fn bad_state_files_are_refused_with_one_line() {
    let files = Files::new();
    let p = problem(
        &mut rng("cli_bad_state"),
        (1, 2),
        (6, 6),
        (4, 3, 3),
        1.0,
        true,
    );
    files.write_problem_f32(&p, "");
    let mut save = files.attend_args("", "y.npy", 3);
    save.extend(["--state-out".into(), files.arg("s.sata")]);
    assert_ok(&run(&save));
    let resume = |state: &str, terms: usize| {
        let mut args = files.attend_args("", "y2.npy", terms);
        args.extend(["--state-in".into(), files.arg(state)]);
        args
    };
    // A state saved for another number of terms.
    assert_one_line_error(
        &run(&resume("s.sata", 4)),
        "was saved for d_k=4, d_v=3, P=3",
    );
    // A corrupted state.
    let mut bytes = std::fs::read(files.path("s.sata")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(files.path("bad.sata"), &bytes).unwrap();
    assert_one_line_error(&run(&resume("bad.sata", 3)), "checksum");
    // A truncated one.
    let bytes = std::fs::read(files.path("s.sata")).unwrap();
    std::fs::write(files.path("short.sata"), &bytes[..bytes.len() / 3]).unwrap();
    assert_one_line_error(&run(&resume("short.sata", 3)), "truncated");
    // A state of the right config with different heads.
    let p1 = problem(
        &mut rng("cli_bad_state"),
        (1, 1),
        (6, 6),
        (4, 3, 3),
        1.0,
        true,
    );
    files.write_problem_f32(&p1, "h1");
    let mut save = files.attend_args("h1", "y.npy", 3);
    save.extend(["--state-out".into(), files.arg("h1.sata")]);
    assert_ok(&run(&save));
    assert_one_line_error(&run(&resume("h1.sata", 3)), "the state is [1, 1, ..]");
    // f64 inputs against an f32 state.
    write_npy(&files.path("q64.npy"), &p.q_shape(), &p.q);
    write_npy(&files.path("k64.npy"), &p.k_shape(), &p.k);
    write_npy(&files.path("v64.npy"), &p.v_shape(), &p.v);
    let mut args = files.attend_args("64", "y3.npy", 3);
    args.extend(["--state-in".into(), files.arg("s.sata")]);
    assert_one_line_error(
        &run(&args),
        "float32 state but these inputs compute in float64",
    );
}

#[test]
fn non_positive_denominators_warn_or_fail_on_request() {
    let files = Files::new();
    // P = 2, one key anti-aligned with the query: weight 1 + q·k/c = 1 - 2 < 0.
    write_npy(&files.path("q.npy"), &[1, 1, 4], &[2.0f32, 0.0, 0.0, 0.0]);
    write_npy(&files.path("k.npy"), &[1, 1, 4], &[-2.0f32, 0.0, 0.0, 0.0]);
    write_npy(&files.path("v.npy"), &[1, 1, 2], &[1.0f32, 2.0]);
    let out = run(&files.attend_args("", "y.npy", 2));
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 of 1 queries had a non-positive denominator"),
        "{stderr}"
    );
    let (_, y, _) = read_npy(&files.path("y.npy"));
    assert_eq!(y, vec![0.0, 0.0]);
    let mut strict = files.attend_args("", "y2.npy", 2);
    strict.extend(["--on-bad-denominator".into(), "error".into()]);
    assert_one_line_error(&run(&strict), "non-positive");
    assert!(!files.path("y2.npy").exists());
}

#[test]
fn compensated_states_are_saved_as_such_and_continue() {
    let files = Files::new();
    let n = 10;
    let p = problem(
        &mut rng("cli_compensated"),
        (1, 2),
        (n, n),
        (4, 3, 3),
        1.0,
        true,
    )
    .rounded_to_f32();
    files.write_problem_f32(&p, "");
    let mut args = files.attend_args("", "y.npy", 3);
    args.extend(["--compensated", "--state-out"].map(String::from));
    args.push(files.arg("s.sata"));
    assert_ok(&run(&args));
    files.assert_causal_output_matches("y.npy", &p);
    let bytes = std::fs::read(files.path("s.sata")).unwrap();
    assert_eq!(bytes[33], sata::checkpoint::LAYOUT_COMPENSATED);
    // Continuing from it (on the CUDA kernels, to cross backends) needs no flag.
    files.assert_continues("s.sata", "cuda-host", 2 * n);
    // A new accumulation for a loaded state is a usage error.
    let mut both = files.attend_args("", "y3.npy", 3);
    both.extend(["--compensated", "--state-in"].map(String::from));
    both.push(files.arg("s.sata"));
    let out = run(&both);
    assert_eq!(out.status.code(), Some(2));
}

/// `sata backward` against the closed form of the gradients (computed here, not by the
/// library): `dq_t = (1/c) sum_{s<=t} T_{P-1}(x_ts) g_ts k_s`,
/// `dk_s = (1/c) sum_{t>=s} T_{P-1}(x_ts) g_ts q_t`, `dv_s = sum_{t>=s} kappa_ts dy_t / D_t`,
/// with `g_ts = dO'_t · [v_s, 1]`: on float64 files through the reference backward, on
/// float32 files of a registry configuration through its kernel's generated backward, and on
/// the devices through their backward kernels (wgpu where an adapter exists, CUDA's host
/// execution).
#[test]
fn backward_writes_the_gradients_of_the_causal_forward() {
    backward_against_the_closed_form((3, 2, 4), false, None);
    backward_against_the_closed_form((4, 4, 3), true, None);
    if common::wgpu_available() {
        backward_against_the_closed_form((3, 2, 4), true, Some("wgpu"));
    }
    backward_against_the_closed_form((3, 5, 3), true, Some("cuda-host"));
}

fn backward_against_the_closed_form(
    (dk, dv, terms): (usize, usize, usize),
    float32: bool,
    backend: Option<&str>,
) {
    let mut p = problem(
        &mut rng("cli_backward"),
        (1, 2),
        (6, 6),
        (dk, dv, terms),
        1.0,
        true,
    );
    if float32 {
        p = p.rounded_to_f32();
    }
    let files = Files::new();
    let dy: Vec<f64> = (0..p.lanes() * p.n_q * dv)
        .map(|i| ((i * 37) % 11) as f64 / 5.0 - 1.0)
        .collect();
    for (name, shape, data) in [
        ("q", p.q_shape(), &p.q),
        ("k", p.k_shape(), &p.k),
        ("v", p.v_shape(), &p.v),
        ("dy", [1, 2, p.n_q, dv], &dy),
    ] {
        let path = files.path(&format!("{name}.npy"));
        if float32 {
            let data: Vec<f32> = data.iter().map(|&x| x as f32).collect();
            write_npy(&path, &shape, &data);
        } else {
            write_npy(&path, &shape, data);
        }
    }
    let mut args: Vec<String> = vec!["backward".into()];
    for name in ["q", "k", "v", "dy"] {
        args.extend([format!("--{name}"), files.arg(&format!("{name}.npy"))]);
    }
    for name in ["dq", "dk", "dv"] {
        args.extend([format!("--{name}"), files.arg(&format!("{name}.npy"))]);
    }
    args.extend(["--terms".into(), terms.to_string(), "--stats".into()]);
    if let Some(backend) = backend {
        args.extend(["--backend".into(), backend.into()]);
    }
    let out = run(&args);
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("0 queries with no gradient"), "{stderr}");
    let kernel = format!("kernel d{dk}_v{dv}_p{terms}");
    let backward_path = match backend {
        Some(device) => format!(
            "backward on {} (backward of {kernel}",
            device.trim_end_matches("-host")
        ),
        None if float32 => format!("backward on cpu ({kernel}"),
        None => "backward on cpu reference (f64)".to_string(),
    };
    assert!(stderr.contains(&backward_path), "{stderr}");
    let exact = common::gradients::exact_gradients(&p, &dy, true);
    for (name, want) in [("dq", &exact.dq), ("dk", &exact.dk), ("dv", &exact.dv)] {
        let (shape, got, dtype) = read_npy(&files.path(&format!("{name}.npy")));
        assert!(
            dtype.ends_with(if float32 { "f4" } else { "f8" }),
            "{name}: {dtype}"
        );
        assert_eq!(shape[..2], [1, 2], "{name}");
        let err = rel_err(&got, want);
        // f32: 1e-5, or 8 times the first-order bound of f32 feature sums where that is
        // larger (a small denominator makes the gradients ill-conditioned: D_0 = 7.4e-3 put
        // 5.3e-4 into wgpu's dq for SATA_TEST_SEED=3035694707082742177, 0.25 of the bound;
        // over 40 seeds every backend stayed within 0.47 of it).
        let tolerance = if float32 {
            exact.f32_tolerance(name, 1e-5)
        } else {
            1e-9
        };
        if std::env::var_os("SATA_SHOW_ERR").is_some() {
            eprintln!(
                "{backend:?} {name}: {err:e} (tolerance {tolerance:e}, u kappa {:e})",
                exact.f32_tolerance(name, 0.0) / 8.0
            );
        }
        assert!(
            err < tolerance,
            "{backend:?} {name}: relative error {err:e}"
        );
    }
    if !float32 {
        // A dy of the wrong shape is one clear line.
        write_npy(
            &files.path("dy.npy"),
            &[1, 2, p.n_q - 1, dv],
            &dy[..2 * (p.n_q - 1) * dv],
        );
        assert_one_line_error(&run(&args), "output gradient");
    }
}

/// `--threads N` runs the CPU lanes on N threads (the path says so) with the same output as
/// one thread; `--threads 0` is one error line.
#[test]
fn threads_flag_sets_the_pool_and_keeps_the_output() {
    let files = Files::new();
    let p = problem(
        &mut rng("cli_threads"),
        (1, 3),
        (10, 10),
        (4, 3, 3),
        1.0,
        true,
    )
    .rounded_to_f32();
    files.write_problem_f32(&p, "");
    let mut outputs = Vec::new();
    for threads in [1, 2] {
        let out_file = format!("y{threads}.npy");
        let mut args = files.attend_args("", &out_file, 3);
        args.extend(["--stats".into(), "--threads".into(), threads.to_string()]);
        let out = run(&args);
        assert_ok(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let want = if threads == 1 {
            "1 thread".to_string()
        } else {
            format!("{threads} threads")
        };
        assert!(stderr.contains(&want), "{stderr}");
        files.assert_causal_output_matches(&out_file, &p);
        outputs.push(read_npy(&files.path(&out_file)).1);
    }
    assert_eq!(outputs[0], outputs[1]);
    let mut args = files.attend_args("", "y0.npy", 3);
    args.extend(["--threads".into(), "0".into()]);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--threads"), "{stderr}");
}
