//! The research report: markdown with the best configuration per objective, and a PNG plot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde_json::Value;

use crate::research::{finished, SearchSpace};

/// The best configuration for each objective.
#[derive(Debug, Default)]
pub struct Best {
    /// Fastest decode (among configurations that kept quality within the tolerance and passed
    /// recall, if any did).
    pub speed: Option<Value>,
    /// Largest context that fits the budget (planner) among those that passed recall.
    pub context: Option<Value>,
    /// Highest quality score (ties: faster).
    pub quality: Option<Value>,
}

fn f(r: &Value, path: &[&str]) -> f64 {
    let mut v = r;
    for p in path {
        v = &v[*p];
    }
    v.as_f64().unwrap_or(0.0)
}

/// How much context a configuration can hold in the budget: the planner's fit, not capped at
/// the training context (so that a smaller cache wins even when every configuration could
/// reach the training context); records without it rank by their KV size at the same context.
fn context_key(r: &Value) -> f64 {
    match r["plan"]["max_ctx_fit"].as_f64() {
        Some(n) => n,
        None => 1e18 / f(r, &["plan", "kv_bytes"]).max(1.0),
    }
}

/// Picks the best per objective from finished experiment records.
pub fn best(ok: &[&Value], tolerance: f64) -> Best {
    let best_q = ok
        .iter()
        .map(|r| f(r, &["quality", "score"]))
        .fold(0.0, f64::max);
    let recall_ok = |r: &&&Value| r["recall"]["found"].as_bool().unwrap_or(true);
    let good: Vec<&&Value> = ok
        .iter()
        .filter(|r| f(r, &["quality", "score"]) + tolerance >= best_q)
        .filter(recall_ok)
        .collect();
    let pool: Vec<&&Value> = if good.is_empty() {
        ok.iter().collect()
    } else {
        good
    };
    let by = |a: f64, b: f64| a.total_cmp(&b);
    Best {
        speed: pool
            .iter()
            .max_by(|a, b| {
                by(
                    f(a, &["speed", "decode_tps"]),
                    f(b, &["speed", "decode_tps"]),
                )
            })
            .map(|r| (**r).clone()),
        context: ok
            .iter()
            .filter(recall_ok)
            .max_by(|a, b| {
                by(context_key(a), context_key(b)).then(by(
                    f(a, &["speed", "decode_tps"]),
                    f(b, &["speed", "decode_tps"]),
                ))
            })
            .map(|r| (*r).clone()),
        quality: ok
            .iter()
            .max_by(|a, b| {
                by(f(a, &["quality", "score"]), f(b, &["quality", "score"])).then(by(
                    f(a, &["speed", "decode_tps"]),
                    f(b, &["speed", "decode_tps"]),
                ))
            })
            .map(|r| (*r).clone()),
    }
}

fn opt(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// Writes `report.md` and `report.png` into `dir`; returns the markdown's path.
pub fn write(dir: &Path, space: &SearchSpace, records: &[Value]) -> Result<PathBuf> {
    let done = finished(records);
    let mut all: Vec<&Value> = done.values().collect();
    all.sort_by(|a, b| {
        a["phase"]
            .as_u64()
            .cmp(&b["phase"].as_u64())
            .then(f(a, &["ts"]).total_cmp(&f(b, &["ts"])))
    });
    let ok: Vec<&Value> = all
        .iter()
        .copied()
        .filter(|r| r["status"] == "ok")
        .collect();
    let b = best(&ok, space.measure.quality_tolerance);
    let base = space.base_profile();

    let mut md = String::new();
    writeln!(md, "# tbq-agent research report\n")?;
    let run = records.iter().rev().find(|r| r["kind"] == "run");
    if let Some(run) = run {
        writeln!(
            md,
            "Model `{}` ({}), llama-server `{}`, {} CPU(s), {} GPU(s). {} prompts; speed: {} prompt + {} generated tokens; recall at {:.0}% of the context.\n",
            run["model"].as_str().unwrap_or("?"),
            run["arch"].as_str().unwrap_or("?"),
            run["llama_server"].as_str().unwrap_or("?"),
            run["host"]["cpus"],
            run["host"]["gpus"].as_array().map_or(0, Vec::len),
            run["prompts"],
            space.measure.speed_prompt_tokens,
            space.measure.speed_decode_tokens,
            space.measure.recall_fill * 100.0
        )?;
    }
    writeln!(
        md,
        "Base configuration: `{}`\n",
        serde_json::to_string(&base)?
    )?;
    writeln!(md, "## Best configuration per objective\n")?;
    let describe = |r: &Option<Value>, what: &str| -> String {
        match r {
            None => format!("- **{what}**: no experiment finished successfully\n"),
            Some(r) => format!(
                "- **{what}**: `{}` ({}) — decode {} tok/s, prefill {} tok/s, TTFT {} ms, quality {}, recall {}, max context in budget {}\n",
                r["label"].as_str().unwrap_or("?"),
                r["id"].as_str().unwrap_or("?"),
                opt(&r["speed"]["decode_tps"], 1),
                opt(&r["speed"]["prefill_tps"], 1),
                opt(&r["speed"]["ttft_ms"], 0),
                opt(&r["quality"]["score"], 2),
                match r["recall"]["found"].as_bool() { Some(true) => "passed", Some(false) => "failed", None => "not run" },
                match (r["plan"]["max_ctx_in_budget"].as_u64(), r["plan"]["max_ctx_fit"].as_u64()) {
                    (Some(n), Some(fit)) if fit > n => format!("{n} tokens (the KV cache would fit {fit}; capped at the training context)"),
                    (Some(n), _) => format!("{n} tokens"),
                    _ => "–".into(),
                },
            ),
        }
    };
    md.push_str(&describe(&b.speed, "speed"));
    md.push_str(&describe(&b.context, "context"));
    md.push_str(&describe(&b.quality, "quality"));
    writeln!(
        md,
        "\nSpeed is chosen among configurations within {} of the best quality score that passed recall; context is the \
         most tokens the KV cache could hold in the memory budget (planner), among those that passed recall.\n",
        space.measure.quality_tolerance
    )?;

    writeln!(md, "## All experiments\n")?;
    writeln!(md, "| # | id | phase | configuration (vs base) | status | quality | recall | prefill tok/s | decode tok/s | client decode tok/s | TTFT ms | KV MiB (plan) | KV MiB (server) | peak RSS MiB | max ctx in budget (≤ trained) |")?;
    writeln!(md, "|---|----|-------|--------------------------|--------|---------|--------|---------------|--------------|---------------------|---------|---------------|-----------------|--------------|-------------------------------|")?;
    for (i, r) in all.iter().enumerate() {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            r["id"].as_str().unwrap_or("?"),
            r["phase"],
            r["label"].as_str().unwrap_or("?"),
            r["status"].as_str().unwrap_or("?"),
            opt(&r["quality"]["score"], 2),
            match r["recall"]["found"].as_bool() {
                Some(true) => "yes",
                Some(false) => "no",
                None => "–",
            },
            opt(&r["speed"]["prefill_tps"], 1),
            opt(&r["speed"]["decode_tps"], 1),
            opt(&r["speed"]["client_decode_tps"], 1),
            opt(&r["speed"]["ttft_ms"], 0),
            opt(&r["plan"]["kv_mib"], 2),
            opt(&r["server_kv_mib"], 2),
            r["memory"]["server_peak_rss"]
                .as_f64()
                .map_or("–".into(), |b| format!("{:.0}", b / 1048576.0)),
            r["plan"]["max_ctx_in_budget"]
                .as_u64()
                .map_or("–".into(), |n| n.to_string()),
        )?;
    }
    let not_ok: Vec<&&Value> = all.iter().filter(|r| r["status"] != "ok").collect();
    if !not_ok.is_empty() {
        writeln!(md, "\n## Skipped and failed\n")?;
        for r in not_ok {
            writeln!(
                md,
                "- `{}` ({}), {}: {}",
                r["label"].as_str().unwrap_or("?"),
                r["id"].as_str().unwrap_or("?"),
                r["status"].as_str().unwrap_or("?"),
                r["reason"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
            )?;
        }
    }
    let png = dir.join("report.png");
    match plot(&png, &all) {
        Ok(()) => writeln!(
            md,
            "\n![decode speed and quality per experiment](report.png)"
        )?,
        Err(e) => writeln!(md, "\n(plot not drawn: {e})")?,
    }
    let path = dir.join("report.md");
    std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Embedded font: no fontconfig or system fonts needed.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        );
    });
}

/// Left: decode tok/s per experiment (green = recall passed, grey = failed or not run, red
/// outline = not ok). Right: quality against decode speed.
fn plot(path: &Path, all: &[&Value]) -> Result<()> {
    register_font();
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(700);
    let n = all.len().max(1);
    let max_tps = all
        .iter()
        .map(|r| f(r, &["speed", "decode_tps"]))
        .fold(1.0, f64::max)
        * 1.15;

    let mut c = ChartBuilder::on(&left)
        .caption("decode tok/s per experiment (#)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..max_tps)?;
    c.configure_mesh()
        .x_desc("experiment #")
        .y_desc("tok/s")
        .x_labels(n + 1)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 0.01 && *x >= 0.0 {
                format!("{}", x.round() as usize + 1)
            } else {
                String::new()
            }
        })
        .disable_x_mesh()
        .draw()?;
    for (i, r) in all.iter().enumerate() {
        let tps = f(r, &["speed", "decode_tps"]);
        let color = match (r["status"].as_str(), r["recall"]["found"].as_bool()) {
            (Some("ok"), Some(true)) | (Some("ok"), None) => RGBColor(60, 160, 90),
            (Some("ok"), Some(false)) => RGBColor(150, 150, 150),
            _ => RGBColor(220, 80, 80),
        };
        let x0 = i as f64 - 0.35;
        let x1 = i as f64 + 0.35;
        if r["status"] == "ok" {
            c.draw_series(std::iter::once(Rectangle::new(
                [(x0, 0.0), (x1, tps)],
                color.filled(),
            )))?;
            c.draw_series(std::iter::once(Text::new(
                format!("{tps:.1}"),
                (x0, tps + max_tps * 0.02),
                ("sans-serif", 14),
            )))?;
        } else {
            c.draw_series(std::iter::once(Rectangle::new(
                [(x0, 0.0), (x1, max_tps * 0.03)],
                color.stroke_width(2),
            )))?;
            c.draw_series(std::iter::once(Text::new(
                r["status"].as_str().unwrap_or("?").to_string(),
                (x0, max_tps * 0.05),
                ("sans-serif", 12),
            )))?;
        }
    }

    let mut c = ChartBuilder::on(&right)
        .caption("quality vs decode speed", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..max_tps, 0f64..1.05)?;
    c.configure_mesh()
        .x_desc("decode tok/s")
        .y_desc("quality score")
        .draw()?;
    for (i, r) in all.iter().enumerate().filter(|(_, r)| r["status"] == "ok") {
        let p = (f(r, &["speed", "decode_tps"]), f(r, &["quality", "score"]));
        c.draw_series(std::iter::once(Circle::new(
            p,
            5,
            RGBColor(40, 90, 200).filled(),
        )))?;
        c.draw_series(std::iter::once(Text::new(
            format!("#{}", i + 1),
            (p.0, p.1 + 0.03),
            ("sans-serif", 14),
        )))?;
    }
    root.present()?;
    Ok(())
}
