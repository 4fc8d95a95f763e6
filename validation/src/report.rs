//! JSON and markdown reports, in the shape of llama.cpp's own tables.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use crate::ppl::{RunResult, Settings};
use crate::proc::write_atomic;

/// `x` with `sig` significant digits, without exponent for the ranges a report shows.
pub fn sig(x: f64, sig: usize) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    if x == 0.0 {
        return "0".into();
    }
    let mag = x.abs().log10().floor() as i32;
    let decimals = (sig as i32 - 1 - mag).max(0) as usize;
    format!("{x:.decimals$}")
}

/// Bits per element without trailing zeros: 16, 8.5, 3.625.
pub fn bits(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The markdown table of the matrix, with a header that says how it was measured.
pub fn ppl_markdown(settings: &Settings, threads: usize, results: &[RunResult]) -> String {
    let mut s = String::new();
    let chunks = if settings.chunks == 0 {
        "all".to_string()
    } else {
        settings.chunks.to_string()
    };
    let _ = writeln!(
        s,
        "WikiText-2 perplexity and KL divergence, {} — `llama-perplexity -c {} -b {} --chunks {} -fa on -ctk K -ctv V` over `{}`, {} threads; \
         KL divergence against the {} run of the same build (`--kl-divergence-base`), ΔPPL = PPL(Q)/PPL(base) − 1 over the same tokens. \
         attn_rot = llama.cpp's own Hadamard rotation of quantized caches (`LLAMA_ATTN_ROT_DISABLE=1` turns it off; tbq types rotate inside the format). \
         tbq keys are centred (the key offset of the first long ubatch is subtracted before they are stored; attention is unchanged by it): `(no centring)` rows ran with `LLAMA_TBQ_KEY_CENTRE_DISABLE=1`. tbq K caches keep the first cell's key as f16 beside the codes, read by attention instead of its quantized row (exact sink keys; its bytes are in the bits per element): `(no exact keys)` rows ran with `LLAMA_TBQ_EXACT_KEYS=0`.\n",
        settings.model.name(),
        settings.ctx,
        settings.ctx,
        chunks,
        settings.wikitext.name(),
        threads,
        settings.base,
    );
    let planner = results.iter().any(|r| r.planned_kv_mib.is_some());
    s.push_str("| K/V | bits/elem | PPL | ΔPPL | mean KLD | 99% KLD | same top p | KV MiB");
    if planner {
        s.push_str(" | planner MiB");
    }
    s.push_str(
        " | time |\n|-----|-----------|-----|------|----------|---------|------------|--------",
    );
    if planner {
        s.push_str("|-------------");
    }
    s.push_str("|------|\n");
    for r in results {
        let kv = if r.kv.caches.is_empty() {
            "—".into()
        } else {
            format!("{:.2}", r.kv.total_mib())
        };
        let plan = r
            .planned_kv_mib
            .map(|p| format!("{p:.2}"))
            .unwrap_or_else(|| "—".into());
        let plan_col = if planner {
            format!(" {plan} |")
        } else {
            String::new()
        };
        if !r.ok {
            let _ = writeln!(
                s,
                "| {} | {} | failed: {} | | | | | {kv} |{plan_col} {:.0} s |",
                r.label,
                bits(r.bits_per_element),
                r.error.as_deref().unwrap_or("?").replace('|', "/"),
                r.seconds
            );
            continue;
        }
        let ppl = match (r.ppl, r.ppl_err) {
            (Some(p), Some(e)) => format!("{p:.4} ± {}", sig(e, 3)),
            _ => "—".into(),
        };
        let (dppl, kld, p99, top) = match &r.kld {
            Some(k) => (
                format!(
                    "{:+.2}% ± {:.2}",
                    100.0 * (k.ppl_ratio - 1.0),
                    100.0 * k.ppl_ratio_err
                ),
                format!("{} ± {}", sig(k.kld_mean, 3), sig(k.kld_mean_err, 2)),
                sig(k.kld_p99, 3),
                format!("{:.2} ± {:.2}%", k.same_top_p, k.same_top_p_err),
            ),
            None => ("—".into(), "—".into(), "—".into(), "—".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {ppl} | {dppl} | {kld} | {p99} | {top} | {kv} |{plan_col} {:.0} s |",
            r.label,
            bits(r.bits_per_element),
            r.seconds
        );
    }
    s.push('\n');
    s.push_str(&goals(results));
    s
}

fn find<'a>(results: &'a [RunResult], k: &str, v: &str, rot: bool) -> Option<&'a RunResult> {
    results
        .iter()
        .find(|r| r.ok && r.config.k == k && r.config.v == v && r.config.attn_rot == rot)
}

/// The quality bars of issue 12, checked against this matrix: the tbq configuration of least mean
/// KLD within each bit budget (bits as stored: a 64-wide head's `_64` variants cost more) against
/// q4_0/q4_0 with llama.cpp's rotation, met or missed with the figures.
pub fn goals(results: &[RunResult]) -> String {
    let mut s =
        String::from("Bars of issue 12 (mean KLD against f16; bits per element as stored):\n\n");
    let Some(q4) = find(results, "q4_0", "q4_0", true).and_then(|r| r.kld.as_ref()) else {
        s.push_str("- (no q4_0/q4_0 attn_rot row in this run: nothing to compare with)\n");
        return s;
    };
    for (budget, factor) in [(4.25, 0.5), (3.5, 1.0)] {
        let best = results
            .iter()
            .filter(|r| r.ok && !r.is_base && r.bits_per_element <= budget + 1e-9)
            .filter(|r| r.config.k.starts_with("tbq") || r.config.v.starts_with("tbq"))
            .filter_map(|r| r.kld.as_ref().map(|k| (r, k.kld_mean)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let bar = format!(
            "≤ {} bits, mean KLD ≤ {factor}× q4_0/q4_0's ({})",
            bits(budget),
            sig(q4.kld_mean, 3)
        );
        let _ = match best {
            Some((r, kld)) => writeln!(
                s,
                "- {} {bar}: best {} at {} bits, {} ({:.2}×)",
                if kld <= factor * q4.kld_mean {
                    "met:"
                } else {
                    "**missed:**"
                },
                r.label,
                bits(r.bits_per_element),
                sig(kld, 3),
                kld / q4.kld_mean
            ),
            None => writeln!(
                s,
                "- **missed:** {bar}: no tbq configuration of this run fits the budget"
            ),
        };
    }
    s
}

/// Writes `results.json` and `results.md` for the matrix.
pub fn write_ppl(
    out: &Path,
    settings: &Settings,
    threads: usize,
    results: &[RunResult],
) -> Result<()> {
    let doc = json!({
        "tool": concat!("tbq-validate ", env!("CARGO_PKG_VERSION")),
        "settings": settings,
        "threads": threads,
        "results": results.iter().map(|r| {
            let mut v = serde_json::to_value(r).unwrap();
            if let Some((d, e)) = r.delta_ppl_pct() {
                v["delta_ppl_pct"] = json!(d);
                v["delta_ppl_pct_err"] = json!(e);
            }
            v["kv_mib"] = json!(r.kv.total_mib());
            v["kv_k_mib"] = json!(r.kv.k_mib());
            v["kv_v_mib"] = json!(r.kv.v_mib());
            v
        }).collect::<Vec<_>>(),
    });
    write_atomic(
        &out.join("results.json"),
        serde_json::to_string_pretty(&doc)?.as_bytes(),
    )?;
    write_atomic(
        &out.join("results.md"),
        ppl_markdown(settings, threads, results).as_bytes(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(sig(0.00721, 3), "0.00721");
        assert_eq!(sig(0.1375, 3), "0.138");
        assert_eq!(sig(1.004, 3), "1.00");
        assert_eq!(sig(17.7646, 3), "17.8");
        assert_eq!(bits(16.0), "16");
        assert_eq!(bits(8.5), "8.5");
        assert_eq!(bits(3.625), "3.625");
    }
}
