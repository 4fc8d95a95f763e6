//! Vector recall: memories embedded by an OpenAI-compatible `/v1/embeddings` endpoint (a second
//! llama-server with `--embeddings --pooling mean`) and searched with sqlite-vec in the same
//! database file.
//!
//! Only used when `embedding_url` is configured. The vector table is made on the first
//! embedding, with that embedding's width; the width is kept in `meta`, and a different model
//! (another width) rebuilds the table from the memories rather than mixing spaces.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use rusqlite::params;
use serde_json::{json, Value};

use super::memory::{Recalled, Store};

/// An embedding endpoint.
pub struct Embedder {
    url: String,
    agent: ureq::Agent,
}

impl Embedder {
    /// A client for `url` (base URL, without /v1).
    pub fn new(url: &str) -> Embedder {
        Embedder {
            url: url
                .trim_end_matches('/')
                .trim_end_matches("/v1")
                .to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout(Duration::from_secs(60))
                .build(),
        }
    }

    /// The embedding of `text`, L2-normalised (so that distance ranks like cosine similarity).
    pub fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let v: Value = self
            .agent
            .post(&format!("{}/v1/embeddings", self.url))
            .send_json(json!({ "input": text }))
            .map_err(|e| crate::client::endpoint_error(&self.url, "/v1/embeddings", e))?
            .into_json()
            .context("reading /v1/embeddings")?;
        let arr = v["data"][0]["embedding"]
            .as_array()
            .with_context(|| format!("{}/v1/embeddings returned no embedding (is it a llama-server started with --embeddings?)", self.url))?;
        let mut e: Vec<f32> = arr
            .iter()
            .filter_map(|x| x.as_f64())
            .map(|x| x as f32)
            .collect();
        if e.is_empty() {
            bail!("{}/v1/embeddings returned an empty embedding", self.url);
        }
        let n = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 0.0 {
            e.iter_mut().for_each(|x| *x /= n);
        }
        Ok(e)
    }
}

fn as_json(e: &[f32]) -> String {
    serde_json::to_string(e).unwrap_or_default()
}

impl Store {
    /// Makes sure the vector table exists with width `dim`; a different width rebuilds it.
    /// Returns whether it was (re)created, so the caller can backfill.
    fn vec_table(&self, dim: usize) -> Result<bool> {
        let have = self.meta("vec_dim")?.and_then(|d| d.parse::<usize>().ok());
        if have == Some(dim) && self.has_table("memories_vec")? {
            return Ok(false);
        }
        if have.is_some() {
            tracing::warn!(
                "the embedding width changed ({:?} → {dim}): rebuilding the vector index",
                have
            );
        }
        self.conn.execute_batch(&format!(
            "DROP TABLE IF EXISTS memories_vec;
             CREATE VIRTUAL TABLE memories_vec USING vec0(embedding float[{dim}]);"
        ))?;
        self.set_meta("vec_dim", &dim.to_string())?;
        Ok(true)
    }

    /// Stores the vector of memory `id`.
    pub fn set_vector(&self, id: i64, e: &[f32]) -> Result<()> {
        self.vec_table(e.len())?;
        self.conn.execute(
            "INSERT OR REPLACE INTO memories_vec(rowid, embedding) VALUES (?1, ?2)",
            params![id, as_json(e)],
        )?;
        Ok(())
    }

    /// Embeds the memories that have no vector yet (saved while no endpoint was configured, or
    /// before a model change). Returns how many.
    pub fn backfill_vectors(&self, emb: &Embedder) -> Result<usize> {
        let missing: Vec<(i64, String)> = if self.has_table("memories_vec")? {
            let mut st = self.conn.prepare(
                "SELECT id, text FROM memories WHERE id NOT IN (SELECT rowid FROM memories_vec)",
            )?;
            let v = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            v
        } else {
            let mut st = self.conn.prepare("SELECT id, text FROM memories")?;
            let v = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            v
        };
        for (id, text) in &missing {
            self.set_vector(*id, &emb.embed(text)?)?;
        }
        Ok(missing.len())
    }

    /// The `k` memories nearest to `e`.
    pub fn recall_vector(&self, e: &[f32], k: usize) -> Result<Vec<Recalled>> {
        if !self.has_table("memories_vec")? {
            return Ok(Vec::new());
        }
        if self.meta("vec_dim")?.and_then(|d| d.parse::<usize>().ok()) != Some(e.len()) {
            bail!("the embedding width changed; restart the agent to rebuild the vector index");
        }
        let ids: Vec<(i64, f64)> = {
            let mut st = self.conn.prepare(
                "SELECT rowid, distance FROM memories_vec WHERE embedding MATCH ?1 AND k = ?2 ORDER BY distance",
            )?;
            let v = st
                .query_map(params![as_json(e), k as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            v
        };
        let mut out = Vec::new();
        for (id, dist) in ids {
            tracing::debug!(id, dist, "vector recall");
            if let Some(m) = self.memory(id)? {
                out.push(m);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_vec_knn_in_the_memory_database() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("m.sqlite")).unwrap();
        let a = s.save_memory("alpha", "t").unwrap();
        let b = s.save_memory("beta", "t").unwrap();
        s.set_vector(a, &[1.0, 0.0, 0.0]).unwrap();
        s.set_vector(b, &[0.0, 1.0, 0.0]).unwrap();
        let r = s.recall_vector(&[0.1, 0.9, 0.0], 1).unwrap();
        assert_eq!(r[0].text, "beta");
        assert_eq!(r[0].how, "vector");
        // A new width rebuilds the index instead of failing.
        s.set_vector(a, &[1.0, 0.0]).unwrap();
        assert_eq!(s.recall_vector(&[1.0, 0.0], 5).unwrap().len(), 1);
        assert!(s.forget(a).unwrap());
        assert!(s.recall_vector(&[1.0, 0.0], 5).unwrap().is_empty());
    }
}
