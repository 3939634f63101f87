//! Trains the same 2-layer transformer on multi-query associative recall (Zoology's MQAR) with
//! softmax attention and with SATA recipes, on the CPU, and prints loss and answer accuracy per
//! evaluation, the learned temperatures and where SATA's logits lie, and the wall time per
//! training step; optionally the time per generated token at long contexts.
//!
//! ```text
//! cargo run --release --example train_mqar --features candle -- \
//!     --runs softmax,sata-p3,sata-l2-p3-t4 --steps 2000 --out benches/results/mqar
//! ```
//!
//! A run is `softmax`, `sata-p<P>` (raw queries and keys, scale sqrt(d_k)) or
//! `sata-l2-p<P>-t<T>` (unit queries and keys, learned temperature per head clamped at `T`).
//! Every run sees the same batches and starts from the same seeded weights where the
//! architectures share them. Token embeddings get learned absolute position embeddings, as in
//! Zoology (`--positions none` leaves them out).

mod model;
mod mqar;
mod plot;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use clap::Parser;
use model::{Memory, Mixer, ModelConfig};
use mqar::Task;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sata::candle::QkNorm;

#[derive(Debug, Parser)]
#[command(about = "Train a 2-layer transformer on MQAR with softmax and SATA attention")]
struct Args {
    /// Comma-separated runs: softmax, sata-p<P>, sata-l2-p<P>-t<T>.
    #[arg(long, default_value = "softmax,sata-p3", value_delimiter = ',')]
    runs: Vec<String>,
    #[arg(long, default_value_t = 256)]
    vocab: usize,
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Key-value pairs per example.
    #[arg(long, default_value_t = 4)]
    pairs: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 2000)]
    steps: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 100)]
    eval_every: usize,
    /// Examples in the held-out evaluation batch.
    #[arg(long, default_value_t = 256)]
    eval_size: usize,
    /// Stop a run once its evaluation accuracy reaches this (1.0 never stops early).
    #[arg(long, default_value_t = 1.0)]
    stop_at: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Width of a short causal depthwise convolution before each attention (0: none).
    #[arg(long, default_value_t = 0)]
    conv: usize,
    /// Learned absolute position embeddings, as Zoology's models have (`max_position_embeddings`):
    /// `learned` (one per position of the sequence) or `none`.
    #[arg(long, default_value = "learned", value_parser = ["learned", "none"])]
    positions: String,
    /// Only time training steps at these sequence lengths (no training run).
    #[arg(long, value_delimiter = ',')]
    time_lengths: Vec<usize>,
    /// Steps per length when timing (the median is reported).
    #[arg(long, default_value_t = 10)]
    time_steps: usize,
    /// After training, time generation per token at these context lengths (on a model of the
    /// same shape without position embeddings, which would end at the training length).
    #[arg(long, value_delimiter = ',')]
    generate_at: Vec<usize>,
    /// Write `<out>.csv` (every evaluation) and `<out>.svg` (accuracy curves).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only redraw the curves of a CSV that `--out` wrote into the SVG beside it (the title
    /// from the task flags); no training.
    #[arg(long)]
    plot: Option<PathBuf>,
}

type Error = Box<dyn std::error::Error>;

fn parse_mixer(spec: &str) -> Result<Mixer, Error> {
    let bad = || format!("unknown run '{spec}': expected softmax, sata-p<P> or sata-l2-p<P>-t<T>");
    if spec == "softmax" {
        return Ok(Mixer::Softmax);
    }
    if let Some(rest) = spec.strip_prefix("sata-l2-p") {
        let (p, t) = rest.split_once("-t").ok_or_else(bad)?;
        let max_temperature: f64 = t.parse().map_err(|_| bad())?;
        return Ok(Mixer::Sata {
            terms: p.parse().map_err(|_| bad())?,
            qk_norm: QkNorm::L2 {
                initial_temperature: max_temperature.min(2.0),
                max_temperature,
            },
        });
    }
    let p = spec.strip_prefix("sata-p").ok_or_else(bad)?;
    Ok(Mixer::Sata {
        terms: p.parse().map_err(|_| bad())?,
        qk_norm: QkNorm::Raw,
    })
}

/// A run's name: the mixer, and the convolution if there is one.
fn label(mixer: Mixer, conv: usize) -> String {
    match conv {
        0 => mixer.to_string(),
        w => format!("{mixer}+conv{w}"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One row of the evaluation log.
struct Evaluation {
    run: String,
    step: usize,
    loss: f64,
    accuracy: f64,
}

/// The model of a run at sequence length `seq_len`.
fn model_config(args: &Args, mixer: Mixer, seq_len: usize) -> ModelConfig {
    ModelConfig {
        conv: args.conv,
        positions: if args.positions == "learned" {
            seq_len
        } else {
            0
        },
        ..ModelConfig::small(args.vocab, mixer)
    }
}

fn train(args: &Args, task: Task, mixer: Mixer, log: &mut Vec<Evaluation>) -> Result<(), Error> {
    let config = model_config(args, mixer, task.seq_len);
    let (_varmap, model, mut optimizer) = model::build(config, args.seed, args.lr)?;
    let name = label(mixer, args.conv);
    let mut data = StdRng::seed_from_u64(args.seed.wrapping_add(1));
    let held_out = task.batch(
        &mut StdRng::seed_from_u64(args.seed ^ 0x5eed),
        args.eval_size,
    );
    let probe = task.batch(&mut StdRng::seed_from_u64(args.seed ^ 0x9e37), 8);
    let (probe_ids, _, _) = model::batch_tensors(&probe, task.seq_len, &Device::Cpu)?;
    let mut times = Vec::new();
    let mut reached = None;
    for step in 1..=args.steps {
        let batch = task.batch(&mut data, args.batch);
        let start = Instant::now();
        let loss = model::train_step(&model, &mut optimizer, &batch)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        if step % args.eval_every != 0 && step != args.steps {
            continue;
        }
        let (eval_loss, accuracy) = model::evaluate(&model, &held_out)?;
        let mut line = format!(
            "{name} step {step:5}: train loss {loss:.4}, eval loss {eval_loss:.4}, accuracy {:.1}%",
            accuracy * 100.0
        );
        for (i, d) in model.diagnostics(&probe_ids)?.iter().enumerate() {
            line += &format!(
                " | layer {i}: max |q.k|/c {:.1}, {:.1}% weights <= 0",
                d.max_abs_logit,
                d.nonpositive_weights * 100.0
            );
        }
        for (i, t) in model.temperatures()?.iter().enumerate() {
            line += &format!(" | T{i} {t:.2?}");
        }
        println!("{line}");
        log.push(Evaluation {
            run: name.clone(),
            step,
            loss: eval_loss,
            accuracy,
        });
        if accuracy >= 0.99 && reached.is_none() {
            reached = Some(step);
        }
        if accuracy >= args.stop_at {
            break;
        }
    }
    println!(
        "{name}: median step {:.1} ms over {} steps; 99% accuracy {}",
        median(times.clone()),
        times.len(),
        reached.map_or("not reached".to_string(), |s| format!("at step {s}"))
    );
    if !args.generate_at.is_empty() {
        let unbounded = ModelConfig {
            positions: 0,
            ..config
        };
        let (_varmap, model, _) = model::build(unbounded, args.seed, args.lr)?;
        time_generation(&model, &args.generate_at)?;
    }
    Ok(())
}

/// Time per generated token after a context of each length: SATA prefills the context into
/// its state; softmax's cache is filled with random keys and values of that length (decode
/// cost depends on the cache's length, not its contents; a real prefill at 128K tokens would
/// need the full score matrix).
fn time_generation(model: &model::Model, contexts: &[usize]) -> Result<(), Error> {
    let c = *model.config();
    let mut rng = StdRng::seed_from_u64(7);
    let steps = 32;
    for &n in contexts {
        let mut state = model.new_state(1, n + steps + 1)?;
        match &mut state.memory {
            Memory::Sata(_) => {
                let context = Task {
                    vocab: c.vocab,
                    seq_len: n,
                    pairs: 1,
                }
                .batch(&mut rng, 1);
                let ids = Tensor::from_vec(context.inputs, (1, n), &Device::Cpu)?;
                model.forward_with_state(&ids, &mut state)?;
            }
            Memory::Softmax(caches) => {
                for cache in caches {
                    let kv = || Tensor::randn(0f32, 1.0, (1, c.heads, n, c.head_dim), &Device::Cpu);
                    cache.append(&kv()?, &kv()?)?;
                }
            }
        }
        let mut token = Tensor::from_vec(vec![1u32], (1, 1), &Device::Cpu)?;
        let start = Instant::now();
        for _ in 0..steps {
            let logits = model.forward_with_state(&token, &mut state)?;
            let next = logits
                .squeeze(0)?
                .squeeze(0)?
                .argmax(0)?
                .to_dtype(DType::U32)?;
            token = next.reshape((1, 1))?;
        }
        let per_token = start.elapsed().as_secs_f64() * 1e6 / steps as f64;
        println!(
            "{}: generation after {n} tokens of context: {per_token:.0} µs per token",
            c.mixer
        );
    }
    Ok(())
}

/// Median wall time of a training step at each sequence length.
fn time_steps(args: &Args, mixer: Mixer) -> Result<(), Error> {
    for &len in &args.time_lengths {
        let config = model_config(args, mixer, len);
        let task = Task {
            vocab: args.vocab,
            seq_len: len,
            pairs: args.pairs,
        };
        task.check()?;
        let (_varmap, model, mut optimizer) = model::build(config, args.seed, args.lr)?;
        let mut data = StdRng::seed_from_u64(args.seed);
        let mut times = Vec::new();
        // One warm-up step, not counted.
        for i in 0..=args.time_steps {
            let batch = task.batch(&mut data, args.batch);
            let start = Instant::now();
            model::train_step(&model, &mut optimizer, &batch)?;
            if i > 0 {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        println!(
            "{}: sequence length {len}, batch {}: median step {:.1} ms ({} steps)",
            label(mixer, args.conv),
            args.batch,
            median(times),
            args.time_steps
        );
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    if let Some(csv) = &args.plot {
        return replot(csv, &args);
    }
    let mixers = args
        .runs
        .iter()
        .map(|s| parse_mixer(s))
        .collect::<Result<Vec<_>, _>>()?;
    if args.eval_every == 0 || args.steps == 0 || args.batch == 0 {
        return Err("--steps, --batch and --eval-every must be positive".into());
    }
    println!(
        "threads: {} (RAYON_NUM_THREADS); model d_model 64, 4 heads of 16, 2 layers",
        rayon_threads()
    );
    if !args.time_lengths.is_empty() {
        for &mixer in &mixers {
            time_steps(&args, mixer)?;
        }
        return Ok(());
    }
    let task = Task {
        vocab: args.vocab,
        seq_len: args.seq_len,
        pairs: args.pairs,
    };
    task.check()?;
    let mut log = Vec::new();
    for &mixer in &mixers {
        train(&args, task, mixer, &mut log)?;
    }
    if let Some(out) = &args.out {
        write_outputs(out, &args, &log)?;
    }
    Ok(())
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism().map_or("?".into(), |n| n.to_string())
    })
}

fn write_outputs(out: &std::path::Path, args: &Args, log: &[Evaluation]) -> Result<(), Error> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut csv = String::from("run,step,eval_loss,accuracy\n");
    for e in log {
        csv += &format!("{},{},{:.6},{:.6}\n", e.run, e.step, e.loss, e.accuracy);
    }
    let csv_path = with_suffix(out, "csv");
    std::fs::write(&csv_path, csv)?;
    draw(&with_suffix(out, "svg"), args, log)?;
    println!("wrote {} and .svg", csv_path.display());
    Ok(())
}

/// `<out>.<ext>`: the suffix is appended, so a dot inside the name (`l2-p5-t1.47`) stays.
fn with_suffix(out: &std::path::Path, ext: &str) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

/// The accuracy curves of `log` into the SVG file `svg`.
fn draw(svg: &std::path::Path, args: &Args, log: &[Evaluation]) -> Result<(), Error> {
    let mut curves: Vec<plot::Curve> = Vec::new();
    for e in log {
        match curves.iter_mut().find(|c| c.label == e.run) {
            Some(c) => c.points.push((e.step, e.accuracy)),
            None => curves.push(plot::Curve {
                label: e.run.clone(),
                points: vec![(e.step, e.accuracy)],
            }),
        }
    }
    let title = format!(
        "MQAR: vocab {}, length {}, {} pairs, batch {}, lr {}, seed {}",
        args.vocab, args.seq_len, args.pairs, args.batch, args.lr, args.seed
    );
    std::fs::write(svg, plot::accuracy_svg(&title, &curves))?;
    Ok(())
}

/// `--plot`: the evaluations of a CSV in `write_outputs`' format, drawn.
fn replot(csv: &std::path::Path, args: &Args) -> Result<(), Error> {
    let text = std::fs::read_to_string(csv)?;
    let mut log = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let bad = || {
            format!(
                "{}:{}: expected run,step,eval_loss,accuracy",
                csv.display(),
                i + 1
            )
        };
        let fields: Vec<&str> = line.split(',').collect();
        let [run, step, loss, accuracy] = fields[..] else {
            return Err(bad().into());
        };
        log.push(Evaluation {
            run: run.to_string(),
            step: step.parse().map_err(|_| bad())?,
            loss: loss.parse().map_err(|_| bad())?,
            accuracy: accuracy.parse().map_err(|_| bad())?,
        });
    }
    let svg = csv.with_extension("svg");
    draw(&svg, args, &log)?;
    println!("wrote {}", svg.display());
    Ok(())
}
