//! `compare`: two OpenAI-compatible endpoints, the same prompts, side by side.

use anyhow::Result;
use serde::Serialize;

use crate::client::{Client, Gen, GenResult};
use crate::measure::{keyword_score, Api, PromptSet};
use crate::server;

/// One endpoint.
pub struct Endpoint {
    /// Base URL (`http://host:port`, without `/v1`).
    pub url: String,
    /// Model name to request, for servers that need one.
    pub model: Option<String>,
    /// Bearer token.
    pub api_key: Option<String>,
}

/// One prompt on both sides.
#[derive(Debug, Serialize)]
pub struct Row {
    /// Prompt name.
    pub prompt: String,
    /// Results for A and B.
    pub a: Side,
    /// B.
    pub b: Side,
    /// Similarity of the two outputs, 0–1 (word-level longest common subsequence ratio).
    pub similarity: f64,
}

/// One side of a row.
#[derive(Debug, Serialize)]
pub struct Side {
    /// Keyword score.
    pub score: f64,
    /// Output text.
    pub output: String,
    /// TTFT, ms.
    pub ttft_ms: f64,
    /// Prefill tok/s.
    pub prefill_tps: Option<f64>,
    /// Decode tok/s.
    pub decode_tps: Option<f64>,
}

impl Side {
    fn of(r: &GenResult, keywords: &[String]) -> Side {
        Side {
            score: keyword_score(&r.text, keywords),
            output: r.text.clone(),
            ttft_ms: r.ttft_ms,
            prefill_tps: r.prefill_tps(),
            decode_tps: r.decode_tps(),
        }
    }
}

/// Totals.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Endpoint URLs.
    pub a: String,
    /// B's URL.
    pub b: String,
    /// Mean quality score of A.
    pub quality_a: f64,
    /// Of B.
    pub quality_b: f64,
    /// Mean TTFT, ms.
    pub ttft_ms_a: f64,
    /// Of B.
    pub ttft_ms_b: f64,
    /// Mean decode tok/s (prompts that report it).
    pub decode_tps_a: Option<f64>,
    /// Of B.
    pub decode_tps_b: Option<f64>,
    /// Mean prefill tok/s.
    pub prefill_tps_a: Option<f64>,
    /// Of B.
    pub prefill_tps_b: Option<f64>,
    /// Mean output similarity.
    pub similarity: f64,
    /// Per prompt.
    pub rows: Vec<Row>,
}

/// Word-level similarity: 2·LCS / (|a| + |b|), 1 for two empty outputs.
pub fn similarity(a: &str, b: &str) -> f64 {
    let wa: Vec<&str> = a.split_whitespace().collect();
    let wb: Vec<&str> = b.split_whitespace().collect();
    if wa.is_empty() && wb.is_empty() {
        return 1.0;
    }
    let mut prev = vec![0usize; wb.len() + 1];
    for x in &wa {
        let mut cur = vec![0usize; wb.len() + 1];
        for (j, y) in wb.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        prev = cur;
    }
    2.0 * prev[wb.len()] as f64 / (wa.len() + wb.len()) as f64
}

fn mean(xs: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = xs.flatten().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Runs every prompt on A then B.
pub fn compare(
    a: &Endpoint,
    b: &Endpoint,
    prompts: &PromptSet,
    timeout: std::time::Duration,
    progress: bool,
) -> Result<Summary> {
    let ca = Client::new(timeout, a.api_key.clone());
    let cb = Client::new(timeout, b.api_key.clone());
    let pb = if progress {
        indicatif::ProgressBar::new(prompts.prompts.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut rows = Vec::new();
    for p in &prompts.prompts {
        server::check_stop()?;
        pb.set_message(p.name.clone());
        let g = Gen {
            prompt: &p.text,
            chat: prompts.api == Api::Chat,
            max_tokens: p.max_tokens,
            model: None,
            llama_extensions: false,
            ignore_eos: false,
        };
        let ra = ca.generate(
            &a.url,
            &Gen {
                model: a.model.as_deref(),
                ..g.clone()
            },
        )?;
        let rb = cb.generate(
            &b.url,
            &Gen {
                model: b.model.as_deref(),
                ..g
            },
        )?;
        rows.push(Row {
            prompt: p.name.clone(),
            similarity: similarity(&ra.text, &rb.text),
            a: Side::of(&ra, &p.keywords),
            b: Side::of(&rb, &p.keywords),
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    let n = rows.len().max(1) as f64;
    Ok(Summary {
        a: a.url.clone(),
        b: b.url.clone(),
        quality_a: rows.iter().map(|r| r.a.score).sum::<f64>() / n,
        quality_b: rows.iter().map(|r| r.b.score).sum::<f64>() / n,
        ttft_ms_a: rows.iter().map(|r| r.a.ttft_ms).sum::<f64>() / n,
        ttft_ms_b: rows.iter().map(|r| r.b.ttft_ms).sum::<f64>() / n,
        decode_tps_a: mean(rows.iter().map(|r| r.a.decode_tps)),
        decode_tps_b: mean(rows.iter().map(|r| r.b.decode_tps)),
        prefill_tps_a: mean(rows.iter().map(|r| r.a.prefill_tps)),
        prefill_tps_b: mean(rows.iter().map(|r| r.b.prefill_tps)),
        similarity: rows.iter().map(|r| r.similarity).sum::<f64>() / n,
        rows,
    })
}

/// The table `compare` prints.
pub fn table(s: &Summary) -> String {
    let o = |x: Option<f64>| x.map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into());
    let mut t = String::new();
    t.push_str(&format!("A = {}\nB = {}\n\n", s.a, s.b));
    t.push_str(&format!(
        "{:<14} {:>7} {:>7} {:>9} {:>9} {:>8} {:>8} {:>6}\n",
        "prompt", "score A", "score B", "TTFT A ms", "TTFT B ms", "dec A/s", "dec B/s", "sim"
    ));
    for r in &s.rows {
        t.push_str(&format!(
            "{:<14} {:>7.2} {:>7.2} {:>9.0} {:>9.0} {:>8} {:>8} {:>6.2}\n",
            r.prompt.chars().take(14).collect::<String>(),
            r.a.score,
            r.b.score,
            r.a.ttft_ms,
            r.b.ttft_ms,
            o(r.a.decode_tps),
            o(r.b.decode_tps),
            r.similarity
        ));
    }
    t.push_str(&format!(
        "{:<14} {:>7.2} {:>7.2} {:>9.0} {:>9.0} {:>8} {:>8} {:>6.2}\n",
        "mean",
        s.quality_a,
        s.quality_b,
        s.ttft_ms_a,
        s.ttft_ms_b,
        o(s.decode_tps_a),
        o(s.decode_tps_b),
        s.similarity
    ));
    t.push_str(&format!(
        "prefill tok/s: A {}, B {}\n",
        o(s.prefill_tps_a),
        o(s.prefill_tps_b)
    ));
    t
}

#[cfg(test)]
mod tests {
    use super::similarity;

    #[test]
    fn similarity_is_an_lcs_ratio() {
        assert_eq!(similarity("a b c", "a b c"), 1.0);
        assert_eq!(similarity("a b c d", "a x c d"), 0.75);
        assert_eq!(similarity("", ""), 1.0);
        assert_eq!(similarity("a", ""), 0.0);
    }
}
