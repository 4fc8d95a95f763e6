//! Measured quality of K/V cache pairs: the KL divergence tables of `tbq-validate ppl`
//! (`validation/results/<model>/ppl*/results.json` at `-c 512` on WikiText-2), as `plan --fit`
//! ranks them.
//!
//! A pair's score is its mean KLD against f16/f16 divided by q4_0/q4_0's on the same model and
//! the same text: a ratio, because absolute KLDs differ by a factor of 40 between the measured
//! models (Gemma 3 270M, the head_dim-128 reference model, SmolLM2-135M) while "better or worse than
//! q4_0, by how much" carries over. A GGUF that was itself measured (same file name and size)
//! is ranked by its own ratios; any other by the worst ratio over every measured model, since
//! which model it resembles is not known (Gemma loses in the keys, the reference model in the
//! values: the worst case is the pair that is safe for all). Only pairs measured on every model
//! are ranked for an unmeasured one. f16/f16 is the reference (score 0).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use tbq::plan::CacheType;

/// Where `tbq-validate ppl` results are looked for when `--results` is not given: the source
/// tree this binary was built from.
pub const DEFAULT_RESULTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../validation/results");

/// One measured pair on one model.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    /// K type.
    pub k: String,
    /// V type.
    pub v: String,
    /// Per-layer types over K/V (`--cache-type-layers`) of a calibrated allocation; None for the
    /// uniform pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<String>,
    /// Mean KL divergence against f16/f16 (0 for f16/f16 itself).
    pub kld_mean: f64,
    /// 99th percentile of the KL divergence.
    pub kld_p99: f64,
    /// When the run finished (Unix seconds; 0 if not recorded): of one pair measured in several
    /// tables the newest counts, since it ran on the current format.
    #[serde(skip)]
    finished: u64,
}

/// A model's measured table.
#[derive(Clone, Debug, Serialize)]
pub struct ModelResults {
    /// The results folder's name (`gemma-3-270m`).
    pub name: String,
    /// The results file.
    pub file: PathBuf,
    /// File name of the GGUF that was measured.
    pub model_file: String,
    /// Its size in bytes.
    pub model_bytes: u64,
    /// q4_0/q4_0's mean KLD (with llama.cpp's default attention rotation): the yardstick.
    pub q4_0_kld: f64,
    /// Every pair measured with llama.cpp's defaults, and the per-layer allocations measured
    /// beside them (`layers`).
    pub pairs: Vec<Measured>,
}

impl ModelResults {
    fn get(&self, k: CacheType, v: CacheType) -> Option<&Measured> {
        self.pairs
            .iter()
            .find(|p| p.k == k.name() && p.v == v.name() && p.layers.is_none())
    }

    /// `pair`'s mean KLD over q4_0/q4_0's.
    pub fn ratio(&self, k: CacheType, v: CacheType) -> Option<f64> {
        self.get(k, v).map(|p| p.kld_mean / self.q4_0_kld)
    }
}

/// Reads every model folder `DIR/<model>/` with tables `ppl/results.json` and `ppl-*/results.json`
/// measured at `-c 512` on WikiText-2 (`ppl-exact/`, `ppl-compact/`: later matrices of the same
/// text; other contexts and texts are other yardsticks and are left out). A pair measured in
/// several tables takes its newest run, its KLD put on the scale of `ppl/`'s q4_0/q4_0 (each table's
/// KLD over its own q4_0 row: the ratio is what carries). Runs with a non-default configuration
/// (attention rotation disabled, tbq keys not centred) and failed runs are left out: `--fit` prints
/// llama-server's defaults (and, for per-layer allocations, `--cache-type-layers`).
pub fn load(dir: &Path) -> Result<Vec<ModelResults>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading the results folder {}", dir.display()))?;
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    for d in dirs {
        let file = d.join("ppl/results.json");
        if !file.is_file() {
            continue;
        }
        let mut tables = Vec::new();
        let mut subdirs: Vec<PathBuf> = std::fs::read_dir(&d)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("ppl-"))
            })
            .collect();
        subdirs.sort();
        for f in std::iter::once(file).chain(subdirs.iter().map(|p| p.join("results.json"))) {
            if !f.is_file() {
                continue;
            }
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&f)?)
                .with_context(|| format!("parsing {}", f.display()))?;
            let text = v["settings"]["wikitext"]["path"].as_str().unwrap_or("");
            if v["settings"]["ctx"] != 512 || !text.ends_with("wiki.test.raw") {
                continue;
            }
            if let Some(m) = parse(&d, &f, &v) {
                tables.push(m);
            }
        }
        if let Some(m) = merge(tables) {
            out.push(m);
        }
    }
    Ok(out)
}

/// One model's tables as one: the first (`ppl/`) names the file and the yardstick, and each
/// pair (with its per-layer types) keeps its newest run, rescaled to that yardstick.
fn merge(mut tables: Vec<ModelResults>) -> Option<ModelResults> {
    if tables.is_empty() {
        return None;
    }
    let mut first = tables.remove(0);
    for t in tables {
        let scale = first.q4_0_kld / t.q4_0_kld;
        for mut p in t.pairs {
            p.kld_mean *= scale;
            p.kld_p99 *= scale;
            let same = |q: &&mut Measured| q.k == p.k && q.v == p.v && q.layers == p.layers;
            match first.pairs.iter_mut().find(same) {
                Some(q) if q.finished >= p.finished => {}
                Some(q) => *q = p,
                None => first.pairs.push(p),
            }
        }
    }
    Some(first)
}

fn parse(dir: &Path, file: &Path, v: &Value) -> Option<ModelResults> {
    let model = &v["settings"]["model"];
    let model_path = model["path"].as_str()?;
    let mut pairs = Vec::new();
    for r in v["results"].as_array()? {
        let (Some(k), Some(vt)) = (r["config"]["k"].as_str(), r["config"]["v"].as_str()) else {
            continue;
        };
        // tbq keys are centred by default (patches/0007); a row without `key_centre` predates it
        let uncentred_tbq = k.starts_with("tbq") && r["config"]["key_centre"] != true;
        // exact sink keys are on by default (patches/0012): a `:noexact` row is a control; a row
        // without the field predates them (measured without: kept, it understates tbq)
        let control = uncentred_tbq || (k.starts_with("tbq") && r["config"]["exact_keys"] == false);
        // per-layer allocations (`K/V@spec`) are kept with their spec, apart from the pair K/V
        let layers = r["config"]["layers"].as_str().map(str::to_string);
        if r["ok"] != true || r["config"]["attn_rot"] == false || control {
            continue;
        }
        let (mean, p99) = if r["is_base"] == true {
            (0.0, 0.0)
        } else {
            (
                r["kld"]["kld_mean"].as_f64()?,
                r["kld"]["kld_p99"].as_f64().unwrap_or(f64::NAN),
            )
        };
        pairs.push(Measured {
            k: k.to_string(),
            v: vt.to_string(),
            layers,
            kld_mean: mean,
            kld_p99: p99,
            finished: r["finished_unix"].as_u64().unwrap_or(0),
        });
    }
    let q4 = pairs
        .iter()
        .find(|p| p.k == "q4_0" && p.v == "q4_0" && p.layers.is_none())?
        .kld_mean;
    Some(ModelResults {
        name: dir.file_name()?.to_string_lossy().into_owned(),
        file: file.to_path_buf(),
        model_file: Path::new(model_path)
            .file_name()?
            .to_string_lossy()
            .into_owned(),
        model_bytes: model["bytes"].as_u64()?,
        q4_0_kld: q4,
        pairs,
    })
}

/// Which measurements rank the pairs for a model.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "basis", rename_all = "snake_case")]
pub enum Basis {
    /// The GGUF was measured itself.
    ThisModel { name: String },
    /// The worst ratio over these models.
    WorstCase { models: Vec<String> },
}

impl Basis {
    /// One line for the text output.
    pub fn describe(&self) -> String {
        match self {
            Basis::ThisModel { name } => format!("measured on this model ({name})"),
            Basis::WorstCase { models } => format!(
                "this model was not measured: the worst ratio over {}",
                models.join(", ")
            ),
        }
    }
}

/// The quality score of every pair that can be scored: (K, V, mean KLD ÷ q4_0's).
pub struct Ranking {
    /// Where the scores come from.
    pub basis: Basis,
    /// Scored pairs (unsorted).
    pub scores: Vec<(CacheType, CacheType, f64)>,
    /// Per-layer allocations measured on this model (none for the worst case: which layers
    /// deserve more bits is a property of the model): (K, V, `--cache-type-layers`, score).
    pub allocations: Vec<(CacheType, CacheType, String, f64)>,
}

/// Scores the pairs for the GGUF at `model` (file name and size decide whether it was measured;
/// `worst_case` ranks by the worst case even then).
pub fn rank(results: &[ModelResults], model: &Path, worst_case: bool) -> Ranking {
    let name = model.file_name().map(|n| n.to_string_lossy().into_owned());
    let bytes = std::fs::metadata(model).map(|m| m.len()).ok();
    let own = results
        .iter()
        .find(|r| Some(&r.model_file) == name.as_ref() && Some(r.model_bytes) == bytes)
        .filter(|_| !worst_case);
    let used: Vec<&ModelResults> = match own {
        Some(r) => vec![r],
        None => results.iter().collect(),
    };
    let basis = match own {
        Some(r) => Basis::ThisModel {
            name: r.name.clone(),
        },
        None => Basis::WorstCase {
            models: used.iter().map(|r| r.name.clone()).collect(),
        },
    };
    let mut scores = Vec::new();
    for k in CacheType::ALL {
        for v in CacheType::ALL {
            // A pair missing on one of the models has no worst case: it is not ranked.
            let ratios: Option<Vec<f64>> = used.iter().map(|r| r.ratio(k, v)).collect();
            if let Some(rs) = ratios.filter(|rs| !rs.is_empty()) {
                scores.push((k, v, rs.into_iter().fold(0.0, f64::max)));
            }
        }
    }
    let allocations = own
        .into_iter()
        .flat_map(|r| {
            r.pairs.iter().filter_map(|p| {
                let parse = |s: &str| CacheType::parse(s).ok();
                Some((
                    parse(&p.k)?,
                    parse(&p.v)?,
                    p.layers.clone()?,
                    p.kld_mean / r.q4_0_kld,
                ))
            })
        })
        .collect();
    Ranking {
        basis,
        scores,
        allocations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results() -> Vec<ModelResults> {
        load(Path::new(DEFAULT_RESULTS)).unwrap()
    }

    #[test]
    fn reads_the_committed_tables() {
        let r = results();
        let names: Vec<&str> = r.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["gemma-3-270m", "ref-model-128", "smollm2-135m"]);
        let g = &r[0];
        assert_eq!(g.model_file, "gemma-3-270m-q4_k_m.gguf");
        assert!((g.q4_0_kld - 0.106069).abs() < 1e-9);
        // The no-rotation q4_0 run and the uncentred tbq runs are not default configurations.
        assert_eq!(g.pairs.iter().filter(|p| p.k == "q4_0").count(), 1);
        assert_eq!(
            g.pairs
                .iter()
                .filter(|p| p.k == "tbq5_1" && p.v == "tbq3_1")
                .count(),
            1
        );
        let t = |s: &str| CacheType::parse(s).unwrap();
        assert_eq!(g.ratio(t("f16"), t("f16")), Some(0.0));
        // measured in ppl/ (0.032797, before exact sink keys) and again in ppl-exact/ (0.030489
        // against q4_0's 0.105365 there): the newest run counts, as a ratio to its own q4_0
        let r51 = g.ratio(t("tbq5_1"), t("tbq3_1")).unwrap();
        assert!((r51 - 0.030489 / 0.105365).abs() < 1e-9, "{r51}");
        // ppl-c2048/ (another context) and ppl-heldout/ (another text) are not merged in
        let rm = &r[1];
        assert!((rm.q4_0_kld - 0.002155).abs() < 1e-9);
        let r41 = rm.ratio(t("tbq4_1"), t("tbq4_0")).unwrap();
        assert!((r41 - 0.001736 / 0.002155).abs() < 1e-9, "{r41}");
    }

    /// A model measured itself is offered its calibrated allocations beside the uniform pairs;
    /// another model is not (they are model-specific).
    #[test]
    fn a_measured_model_gets_its_own_allocations() {
        let r = results();
        let s = r.iter().find(|m| m.name == "smollm2-135m").unwrap();
        let dir = std::env::temp_dir().join(format!("tbq-quality-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gguf = dir.join(&s.model_file); // same name and size: taken for the measured file
        std::fs::File::create(&gguf)
            .unwrap()
            .set_len(s.model_bytes)
            .unwrap();
        let ranking = rank(&r, &gguf, false);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(ranking.basis, Basis::ThisModel { ref name } if name == "smollm2-135m"));
        let t = |s: &str| CacheType::parse(s).unwrap();
        // the calibrated 4.25-bit allocation (with exact sink keys): tbq4_1/tbq4_0 with 13 layer
        // overrides, 0.0266
        let a = ranking
            .allocations
            .iter()
            .find(|a| a.0 == t("tbq4_1") && a.1 == t("tbq4_0"))
            .expect("the tbq4_1/tbq4_0 allocation");
        assert!(a.2.starts_with("k1=tbq5_0,k3=tbq5_0,k10=tbq5_0"), "{}", a.2);
        assert!((a.3 - 0.026555 / 0.046271).abs() < 1e-9, "{}", a.3);
        // the uniform pair keeps its own score (its ':noexact' control row does not replace it),
        // from its newest run: ppl-compact/, on the compact 64-wide types llama.cpp now stores
        let u = ranking
            .scores
            .iter()
            .find(|x| x.0 == t("tbq4_1") && x.1 == t("tbq4_0"))
            .unwrap();
        assert!((u.2 - 0.024928 / 0.046271).abs() < 1e-9, "{}", u.2);
        assert!(rank(&r, Path::new("/nonexistent/other.gguf"), false)
            .allocations
            .is_empty());
    }

    #[test]
    fn an_unmeasured_model_is_ranked_by_the_worst_case() {
        let r = results();
        let t = |s: &str| CacheType::parse(s).unwrap();
        let ranking = rank(&r, Path::new("/nonexistent/other.gguf"), false);
        assert!(matches!(ranking.basis, Basis::WorstCase { ref models } if models.len() == 3));
        let score = |k: &str, v: &str| {
            ranking
                .scores
                .iter()
                .find(|s| s.0 == t(k) && s.1 == t(v))
                .unwrap()
                .2
        };
        // tbq5_1/tbq3_1: 0.29× q4_0 on Gemma, 1.53× on the reference model, 0.70× on SmolLM2:
        // the worst is 1.53.
        let want = (0.003303f64 / 0.002155)
            .max(0.030489 / 0.105365)
            .max(0.032542 / 0.046271);
        assert!((score("tbq5_1", "tbq3_1") - want).abs() < 1e-9);
        assert_eq!(score("q4_0", "q4_0"), 1.0);
    }
}
