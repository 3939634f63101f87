//! Draws `benches/results/crossover.svg` from `benches/results/crossover.csv` (written by
//! `cargo bench --bench crossover`): decode time per head-token against context length, the
//! online-softmax baseline over a KV cache against SATA, per head count and thread count,
//! log-log. Plain SVG, no plotting crate.
//!
//! `cargo run --example plot_crossover`

use std::fmt::Write;
use std::path::Path;

const W: f64 = 720.0;
const H: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];

/// One measured line of the CSV.
struct Row {
    threads: usize,
    heads: usize,
    context: f64,
    softmax_us: f64,
    sata_us: f64,
}

fn read_rows(text: &str) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let mut lines = text.lines();
    let header = lines.next().ok_or("empty csv")?;
    if header != "threads,heads,context,softmax_us,sata_us,softmax_over_sata" {
        return Err(format!("unexpected header '{header}' (an older crossover.csv?)").into());
    }
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let [threads, heads, context, softmax, sata, _] = f[..] else {
            return Err(format!("line {}: expected 6 fields", i + 2).into());
        };
        rows.push(Row {
            threads: threads.parse()?,
            heads: heads.parse()?,
            context: context.parse()?,
            softmax_us: softmax.parse()?,
            sata_us: sata.parse()?,
        });
    }
    Ok(rows)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    let text = std::fs::read_to_string(dir.join("crossover.csv")).map_err(|e| {
        format!("read crossover.csv (run `cargo bench --bench crossover` first): {e}")
    })?;
    let rows = read_rows(&text)?;
    if rows.is_empty() {
        return Err("no data rows".into());
    }
    // One pair of curves (softmax solid, SATA dashed) per (heads, threads), in CSV order.
    let mut series: Vec<(usize, usize)> = Vec::new();
    for r in &rows {
        if !series.contains(&(r.heads, r.threads)) {
            series.push((r.heads, r.threads));
        }
    }
    let xs: Vec<f64> = rows.iter().map(|r| r.context).collect();
    let ys: Vec<f64> = rows
        .iter()
        .flat_map(|r| [r.softmax_us, r.sata_us])
        .collect();
    let (x0, x1) = (log_floor(min(&xs)), log_ceil(max(&xs)));
    let (y0, y1) = (log_floor(min(&ys)), log_ceil(max(&ys)));
    let px = |x: f64| LEFT + (x.log10() - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - (y.log10() - y0) / (y1 - y0) * (H - TOP - BOTTOM);

    let mut svg = String::new();
    writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    )?;
    writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#)?;
    writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="14" text-anchor="middle">Decode time per head-token, d = 16, online softmax vs SATA P = 4 (log-log)</text>"#,
        (W - RIGHT + LEFT) / 2.0
    )?;
    for e in x0 as i32..=x1 as i32 {
        let x = px(10f64.powi(e));
        writeln!(
            svg,
            r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">1e{e}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 18.0
        )?;
    }
    for e in y0 as i32..=y1 as i32 {
        let y = py(10f64.powi(e));
        writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">1e{e} us</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        )?;
    }
    writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">context length (tokens)</text>"#,
        (W - RIGHT + LEFT) / 2.0,
        H - 14.0
    )?;
    let mut legend = 0;
    for (i, &(heads, threads)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mine: Vec<&Row> = rows
            .iter()
            .filter(|r| (r.heads, r.threads) == (heads, threads))
            .collect();
        for (name, dash, pick) in [
            ("softmax", "", (|r: &Row| r.softmax_us) as fn(&Row) -> f64),
            ("SATA P4", r#" stroke-dasharray="6 4""#, |r: &Row| r.sata_us),
        ] {
            let points: Vec<String> = mine
                .iter()
                .map(|r| format!("{:.1},{:.1}", px(r.context), py(pick(r))))
                .collect();
            writeln!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
                points.join(" ")
            )?;
            legend += 1;
            let ly = TOP + 20.0 * legend as f64;
            writeln!(
                svg,
                r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{name}, {heads} h, {threads} t</text>"#,
                W - RIGHT + 10.0,
                W - RIGHT + 30.0,
                W - RIGHT + 36.0,
                ly + 4.0
            )?;
        }
    }
    writeln!(svg, "</svg>")?;
    let out = dir.join("crossover.svg");
    std::fs::write(&out, svg)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn log_floor(x: f64) -> f64 {
    x.log10().floor()
}

fn log_ceil(x: f64) -> f64 {
    x.log10().ceil().max(log_floor(x) + 1.0)
}
