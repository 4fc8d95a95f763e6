//! PNG plots with plotters' bitmap backend. Text is drawn with ab_glyph from a TTF embedded in
//! the binary (Ubuntu Light, from the `epaint_default_fonts` crate), so no system font or
//! fontconfig is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::ppl::{RunResult, Settings};

const FONT: &str = "sans-serif";

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [
            FontStyle::Normal,
            FontStyle::Bold,
            FontStyle::Italic,
            FontStyle::Oblique,
        ] {
            register_font(FONT, style, epaint_default_fonts::UBUNTU_LIGHT)
                .unwrap_or_else(|_| panic!("the embedded font does not load"));
        }
    });
}

fn e<E: std::fmt::Debug>(err: E) -> anyhow::Error {
    anyhow!("plotting: {err:?}")
}

/// A colour per configuration family, so the eye groups them: stock ggml types warm, tbq cool.
fn colour(r: &RunResult) -> RGBColor {
    let tbq_k = r.config.k.starts_with("tbq");
    let tbq_v = r.config.v.starts_with("tbq");
    match (tbq_k, tbq_v, r.config.attn_rot) {
        (true, true, _) => RGBColor(0, 114, 178),
        (false, true, _) => RGBColor(86, 180, 233),
        (true, false, _) => RGBColor(0, 158, 115),
        (false, false, true) => RGBColor(213, 94, 0),
        (false, false, false) => RGBColor(230, 159, 0),
    }
}

/// quality-vs-bits.png (mean KLD and ΔPPL against bits per element) and kld.png (mean and 99th
/// percentile KLD per configuration).
pub fn ppl_plots(out: &Path, settings: &Settings, results: &[RunResult]) -> Result<()> {
    fonts();
    let rows: Vec<&RunResult> = results.iter().filter(|r| r.ok && r.kld.is_some()).collect();
    if rows.is_empty() {
        return Ok(());
    }
    let subtitle = format!(
        "{} · WikiText-2, {} chunks × {} · KLD vs {}",
        settings.model.name(),
        settings.chunks,
        settings.ctx,
        settings.base
    );
    quality_vs_bits(&out.join("quality-vs-bits.png"), &subtitle, &rows)?;
    kld_bars(&out.join("kld.png"), &subtitle, &rows)?;
    Ok(())
}

fn quality_vs_bits(path: &Path, subtitle: &str, rows: &[&RunResult]) -> Result<()> {
    let root = BitMapBackend::new(path, (1400, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (title, body) = root.split_vertically(60);
    title
        .draw_text(
            &format!("KV-cache quality vs bits per element — {subtitle}"),
            &(FONT, 22).into_font().color(&BLACK),
            (20, 18),
        )
        .map_err(e)?;
    let panels = body.split_evenly((1, 2));
    let xmax = rows.iter().map(|r| r.bits_per_element).fold(0.0, f64::max) + 1.6;
    let xmin = rows
        .iter()
        .map(|r| r.bits_per_element)
        .fold(f64::MAX, f64::min)
        - 0.5;

    // Left: mean KLD, log scale.
    let kmin = rows
        .iter()
        .map(|r| r.kld.as_ref().unwrap().kld_mean)
        .fold(f64::MAX, f64::min);
    let kmax = rows
        .iter()
        .map(|r| r.kld.as_ref().unwrap().kld_mean)
        .fold(0.0, f64::max);
    let mut c = ChartBuilder::on(&panels[0])
        .margin(15)
        .caption(
            "mean KL divergence (log scale, lower is better)",
            (FONT, 18),
        )
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(xmin..xmax, ((kmin / 2.0).max(1e-6)..kmax * 2.0).log_scale())
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("bits per element (mean of K and V)")
        .y_desc("mean KLD")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(e)?;
    for (i, r) in rows.iter().enumerate() {
        let k = r.kld.as_ref().unwrap();
        let col = colour(r);
        // Neighbouring points alternate their labels above and below, so close ones stay legible.
        let nudge = if i % 2 == 0 { 1.12 } else { 0.88 };
        c.draw_series(std::iter::once(Circle::new(
            (r.bits_per_element, k.kld_mean),
            6,
            col.filled(),
        )))
        .map_err(e)?;
        c.draw_series(std::iter::once(PathElement::new(
            vec![
                (r.bits_per_element, (k.kld_mean - k.kld_mean_err).max(1e-7)),
                (r.bits_per_element, k.kld_mean + k.kld_mean_err),
            ],
            col.stroke_width(2),
        )))
        .map_err(e)?;
        c.draw_series(std::iter::once(Text::new(
            r.label.clone(),
            (r.bits_per_element + 0.12, k.kld_mean * nudge),
            (FONT, 13).into_font().color(&col),
        )))
        .map_err(e)?;
    }

    // Right: ΔPPL in percent with its error.
    let d: Vec<(f64, f64)> = rows.iter().map(|r| r.delta_ppl_pct().unwrap()).collect();
    let dmin = d.iter().map(|(v, e)| v - e).fold(0.0, f64::min);
    let dmax = d.iter().map(|(v, e)| v + e).fold(0.0, f64::max);
    let pad = (dmax - dmin).max(0.5) * 0.1;
    let mut c = ChartBuilder::on(&panels[1])
        .margin(15)
        .caption("ΔPPL vs base, % (lower is better)", (FONT, 18))
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(xmin..xmax, (dmin - pad)..(dmax + pad))
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("bits per element (mean of K and V)")
        .y_desc("ΔPPL %")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(e)?;
    c.draw_series(std::iter::once(PathElement::new(
        vec![(xmin, 0.0), (xmax, 0.0)],
        BLACK.mix(0.4),
    )))
    .map_err(e)?;
    for (i, (r, (v, err))) in rows.iter().zip(&d).enumerate() {
        let col = colour(r);
        let nudge = if i % 2 == 0 { 0.02 } else { -0.02 } * (dmax - dmin + 2.0 * pad);
        c.draw_series(std::iter::once(Circle::new(
            (r.bits_per_element, *v),
            6,
            col.filled(),
        )))
        .map_err(e)?;
        c.draw_series(std::iter::once(PathElement::new(
            vec![(r.bits_per_element, v - err), (r.bits_per_element, v + err)],
            col.stroke_width(2),
        )))
        .map_err(e)?;
        c.draw_series(std::iter::once(Text::new(
            r.label.clone(),
            (r.bits_per_element + 0.12, *v + nudge),
            (FONT, 13).into_font().color(&col),
        )))
        .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

fn kld_bars(path: &Path, subtitle: &str, rows: &[&RunResult]) -> Result<()> {
    let h = 120 + 48 * rows.len() as u32;
    let root = BitMapBackend::new(path, (1400, h.max(400))).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (title, body) = root.split_vertically(60);
    title
        .draw_text(
            &format!("KL divergence per configuration — {subtitle}"),
            &(FONT, 22).into_font().color(&BLACK),
            (20, 18),
        )
        .map_err(e)?;
    let panels = body.split_evenly((1, 2));
    let n = rows.len();
    for (panel, (name, get)) in panels.iter().zip([
        (
            "mean KLD (± error)",
            (|k: &crate::llama::KldStats| (k.kld_mean, k.kld_mean_err)) as fn(&_) -> _,
        ),
        ("99th percentile KLD", |k: &crate::llama::KldStats| {
            (k.kld_p99, 0.0)
        }),
    ]) {
        let vmax = rows
            .iter()
            .map(|r| {
                let (v, err) = get(r.kld.as_ref().unwrap());
                v + err
            })
            .fold(0.0, f64::max)
            * 1.25;
        let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
        let mut c = ChartBuilder::on(panel)
            .margin(15)
            .caption(name, (FONT, 18))
            .x_label_area_size(40)
            .y_label_area_size(200)
            .build_cartesian_2d(0.0..vmax, (0..n - 1).into_segmented())
            .map_err(e)?;
        c.configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) if *i < n => labels[n - 1 - *i].clone(),
                _ => String::new(),
            })
            .label_style((FONT, 14))
            .draw()
            .map_err(e)?;
        for (i, r) in rows.iter().enumerate() {
            let (v, err) = get(r.kld.as_ref().unwrap());
            let y = n - 1 - i;
            let col = colour(r);
            c.draw_series(std::iter::once(Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(y)),
                    (v, SegmentValue::Exact(y + 1)),
                ],
                col.mix(0.85).filled(),
            )))
            .map_err(e)?;
            if err > 0.0 {
                c.draw_series(std::iter::once(PathElement::new(
                    vec![
                        (v - err, SegmentValue::CenterOf(y)),
                        (v + err, SegmentValue::CenterOf(y)),
                    ],
                    BLACK.stroke_width(2),
                )))
                .map_err(e)?;
            }
            c.draw_series(std::iter::once(Text::new(
                crate::report::sig(v, 3),
                (v + err + vmax * 0.01, SegmentValue::CenterOf(y)),
                (FONT, 13).into_font().color(&BLACK),
            )))
            .map_err(e)?;
        }
    }
    root.present().map_err(e)?;
    Ok(())
}

/// A heat map: one panel per configuration, rows = depth (top = 0%), columns = context; cell =
/// score in [0, 1] (green = found, red = missed), with the score written in it.
pub fn heat_map(
    path: &Path,
    title: &str,
    panels: &[(String, Vec<Vec<Option<f64>>>)],
    depths: &[f64],
    contexts: &[u32],
) -> Result<()> {
    fonts();
    let pw = (130 + 110 * contexts.len() as u32).max(320);
    let ph = 140 + 60 * depths.len() as u32;
    let root = BitMapBackend::new(path, ((pw * panels.len() as u32).max(900), ph + 60))
        .into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (top, body) = root.split_vertically(60);
    top.draw_text(title, &(FONT, 20).into_font().color(&BLACK), (20, 18))
        .map_err(e)?;
    let areas = body.split_evenly((1, panels.len()));
    let (nc, nd) = (contexts.len(), depths.len());
    let label = (FONT, 14).into_font().color(&BLACK);
    for (area, (name, grid)) in areas.iter().zip(panels) {
        // Drawn in pixels: a grid of nd × nc cells, depth labels left, contexts below.
        let (w, h) = area.dim_in_pixel();
        let (left, top, bottom, right) = (80i32, 40i32, 60i32, 20i32);
        let cw = (w as i32 - left - right) / nc as i32;
        let ch = (h as i32 - top - bottom) / nd as i32;
        area.draw_text(name, &(FONT, 18).into_font().color(&BLACK), (left, 10))
            .map_err(e)?;
        for (di, row) in grid.iter().enumerate() {
            let y0 = top + ch * di as i32;
            area.draw_text(
                &format!("{:.0}%", 100.0 * depths[di]),
                &label,
                (left - 50, y0 + ch / 2 - 7),
            )
            .map_err(e)?;
            for (ci, cell) in row.iter().enumerate() {
                let x0 = left + cw * ci as i32;
                let (col, text) = match cell {
                    Some(s) => {
                        let s = s.clamp(0.0, 1.0);
                        let col = RGBColor(
                            (215.0 * (1.0 - s) + 40.0 * s) as u8,
                            (60.0 * (1.0 - s) + 170.0 * s) as u8,
                            (50.0 * (1.0 - s) + 80.0 * s) as u8,
                        );
                        (col, format!("{:.0}%", 100.0 * s))
                    }
                    None => (RGBColor(200, 200, 200), "—".to_string()),
                };
                area.draw(&Rectangle::new(
                    [(x0 + 2, y0 + 2), (x0 + cw - 2, y0 + ch - 2)],
                    col.filled(),
                ))
                .map_err(e)?;
                area.draw_text(
                    &text,
                    &(FONT, 16).into_font().color(&WHITE),
                    (x0 + cw / 2 - 16, y0 + ch / 2 - 8),
                )
                .map_err(e)?;
            }
        }
        for (ci, x) in contexts.iter().enumerate() {
            let x0 = left + cw * ci as i32;
            area.draw_text(
                &x.to_string(),
                &label,
                (x0 + cw / 2 - 16, top + ch * nd as i32 + 8),
            )
            .map_err(e)?;
        }
        area.draw_text(
            "context (tokens)",
            &label,
            (left, top + ch * nd as i32 + 32),
        )
        .map_err(e)?;
        area.draw_text("depth", &label, (left - 60, top - 22))
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

/// sensitivity.png: per layer, the mean KLD of K and of V alone at the probe type (log scale) —
/// which layers a per-layer allocation widens.
pub fn sensitivity(
    path: &Path,
    model: &Path,
    probe: tbq::plan::CacheType,
    rows: &[crate::calibrate::Row],
) -> Result<()> {
    use crate::calibrate::Side;
    fonts();
    let finite: Vec<f64> = rows.iter().map(|r| r.sens).filter(|s| *s > 0.0).collect();
    if finite.is_empty() {
        return Ok(());
    }
    let n_layer = rows.iter().map(|r| r.layer).max().unwrap_or(0) + 1;
    let lo = finite.iter().copied().fold(f64::MAX, f64::min) / 2.0;
    let hi = finite.iter().copied().fold(0.0, f64::max) * 2.0;
    let root = BitMapBackend::new(path, ((200 + 40 * n_layer).max(900), 560)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let name = model.file_name().unwrap_or_default().to_string_lossy();
    let mut c = ChartBuilder::on(&root)
        .margin(20)
        .caption(
            format!(
                "{name}: mean KLD with one layer's K or V at {probe}, the rest f16 (log scale)"
            ),
            (FONT, 20),
        )
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5f64..n_layer as f64 - 0.5, (lo..hi).log_scale())
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("layer")
        .y_desc("mean KLD")
        .x_labels(n_layer as usize)
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .disable_x_mesh()
        .draw()
        .map_err(e)?;
    for (side, col, dx) in [
        (Side::K, RGBColor(0, 114, 178), -0.2),
        (Side::V, RGBColor(213, 94, 0), 0.2),
    ] {
        c.draw_series(
            rows.iter()
                .filter(|r| r.side == side && r.sens > 0.0)
                .map(|r| {
                    let x = r.layer as f64 + dx;
                    Rectangle::new([(x - 0.18, lo), (x + 0.18, r.sens)], col.filled())
                }),
        )
        .map_err(e)?
        .label(if side == Side::K { "K" } else { "V" })
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], col.filled()));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font((FONT, 16))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}
