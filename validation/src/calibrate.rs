//! `tbq-validate calibrate`: which layers' keys and values are worth more bits, and the per-layer
//! cache types (`--cache-type-layers`, patches/0008) of least KL divergence for a bit budget.
//!
//! 1. Sensitivity: for every layer L and side S (K or V), the mean KLD against f16 with only
//!    side S of layer L at the probe type (`--probe`), every other row f16.
//! 2. The ladder: the mean KLD with all of side S at each candidate type (`--k-types`,
//!    `--v-types`), every other row f16: how a side's loss scales with the type.
//! 3. Small independent errors add up in the KL divergence (it is quadratic in the error of the
//!    logits, and the cross terms of independent quantization noise vanish), so giving (L, S) the
//!    type t is predicted to cost sens(L, S) · ladder_S(t) / ladder_S(probe). An exact
//!    multiple-choice knapsack picks, for each `--budgets` value, the allocation of least
//!    predicted KLD whose mean bits per element (weighted by the elements of each row) is within
//!    the budget.
//! 4. Each allocation is run (its real KLD beside the prediction) and printed as the options to
//!    give llama.cpp.
//!
//! Every run is a configuration of a `tbq-validate ppl` matrix in `<out>` (same chunks, same
//! base logits), so a killed calibration resumes and the table of every run is in
//! `<out>/results.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use tbq::plan::{CacheType, LayerTypes, ModelShape};

use crate::common::Common;
use crate::llama::KvConfig;
use crate::ppl::{self, PplArgs, RunResult};
use crate::proc::write_atomic;
use crate::report::{bits, sig};

const ALL_TBQ: &str = "tbq3_0,tbq3_1,tbq4_0,tbq4_1,tbq5_0,tbq5_1,tbq6_0";
/// The value types of the tensor-core decode kernel (kernels/NOTES.md).
const FAST_V: &str = "tbq3_0,tbq3_1,tbq4_0,tbq4_1";

#[derive(Args, Clone, Debug)]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub common: Common,

    /// Text to calibrate on (default: WikiText-2 test, as `ppl`). Only the part from
    /// --text-from on is used.
    #[arg(long, default_value_t = ppl::default_wikitext())]
    pub wikitext: String,

    /// Where in --wikitext the calibration text starts (a fraction of its bytes, moved on to the
    /// next line): the default 0.5 keeps the calibration off the first half, whose first chunks
    /// are what `ppl` evaluates, so an allocation is never tuned on the tokens that judge it.
    #[arg(long, default_value_t = 0.5)]
    pub text_from: f64,

    /// Context (tokens per chunk; also the batch size).
    #[arg(short, long, default_value_t = 512)]
    pub ctx: u32,

    /// Chunks of --ctx tokens per run: every run sees the same tokens, so few suffice for a
    /// ranking (2 · layers + the ladders + one per budget runs).
    #[arg(long, default_value_t = 4)]
    pub chunks: u32,

    /// The type a sensitivity run gives one layer's K or V (narrow, so that one layer's loss
    /// stands well above the noise).
    #[arg(long, default_value = "tbq3_0")]
    pub probe: String,

    /// K types an allocation may use.
    #[arg(long, value_delimiter = ',', default_value = ALL_TBQ)]
    pub k_types: Vec<String>,

    /// V types an allocation may use. Default: the value types the CUDA tensor-core decode
    /// kernel serves; other tbq values decode through a slower kernel (a 3B-shape model with
    /// tbq4_1/tbq5_1 values in some layers: 107 tok/s at depth 32K on the H200, q4_0/q4_0 186).
    #[arg(long, value_delimiter = ',', default_value = FAST_V)]
    pub v_types: Vec<String>,

    /// Mean bits per element of the allocations (K and V rows of every layer together).
    #[arg(short, long, value_delimiter = ',', default_value = "3.5,4.25")]
    pub budgets: Vec<f64>,

    /// Print the allocations without running them.
    #[arg(long)]
    pub no_verify: bool,

    /// Ignore stored runs.
    #[arg(long)]
    pub fresh: bool,

    /// Run nothing: plan again from the sensitivities and ladders of an earlier calibration.json
    /// (other --budgets or type lists; the types need ladder entries there). Implies --no-verify.
    #[arg(long)]
    pub replan: Option<std::path::PathBuf>,
}

/// What the runs measured: all a plan needs.
struct Measured {
    model: String,
    probe: CacheType,
    rows: Vec<Row>,
    ladder: BTreeMap<(Side, String), f64>,
}

/// Reads the measurements of an earlier calibration.json (`--replan`).
fn measured_from(path: &Path) -> Result<Measured> {
    #[derive(Deserialize)]
    struct Entry {
        side: Side,
        #[serde(rename = "type")]
        ty: String,
        kld: f64,
    }
    #[derive(Deserialize)]
    struct Doc {
        model: String,
        probe: String,
        rows: Vec<Row>,
        ladder: Vec<Entry>,
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let d: Doc = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a calibration.json", path.display()))?;
    Ok(Measured {
        model: d.model,
        probe: CacheType::parse(&d.probe)?,
        rows: d.rows,
        ladder: d
            .ladder
            .into_iter()
            .map(|e| ((e.side, e.ty), e.kld))
            .collect(),
    })
}

/// K or V.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Side {
    K,
    V,
}

impl Side {
    fn letter(self) -> char {
        match self {
            Side::K => 'k',
            Side::V => 'v',
        }
    }
}

/// One (layer, side) of the cache: what it holds per cell and how much KLD the probe type costs it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub layer: u32,
    pub side: Side,
    /// Elements of this row per cell (KV heads × head size).
    pub elems: u64,
    /// Head size of this row (0 in calibrations stored before it was recorded: taken as 128).
    /// A tbq type is stored as its variant for the head size, whose bits the budget counts.
    #[serde(default)]
    pub head: u32,
    /// Mean KLD with only this row at the probe type.
    pub sens: f64,
}

/// The chosen types and their predicted cost.
#[derive(Clone, Debug, Serialize)]
pub struct Allocation {
    pub budget: f64,
    pub mean_bits: f64,
    pub predicted_kld: f64,
    /// `K/V@spec`, as `tbq-validate ppl -p` takes it.
    pub config: String,
    /// The llama.cpp options.
    pub options: String,
    /// The measured mean KLD (None with --no-verify or a failed run).
    pub measured_kld: Option<f64>,
    pub measured_kld_err: Option<f64>,
}

/// Bits per element in eighths: every cache type's size is a whole number of them.
fn eighths(t: CacheType) -> u64 {
    let e = t.bits_per_element() * 8.0;
    debug_assert!((e - e.round()).abs() < 1e-9);
    e.round() as u64
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The exact minimum of Σ cost(row, type) over one type per row, subject to Σ elems · bits ≤
/// budget · Σ elems: a multiple-choice knapsack by dynamic programming over the bit budget, in
/// units of an eighth of a bit times the gcd of the rows' elements. `cost[i][j]` is the cost of
/// row i with `types[i][j]`. None if not even the narrowest types fit.
pub fn knapsack(
    elems: &[u64],
    types: &[Vec<CacheType>],
    cost: &[Vec<f64>],
    budget: f64,
) -> Option<Vec<usize>> {
    let g = elems.iter().copied().fold(0, gcd).max(1);
    let total: u64 = elems.iter().sum::<u64>() / g;
    let cap = (budget * 8.0 * total as f64 + 1e-9).floor() as usize;
    const INF: f64 = f64::INFINITY;
    let mut best = vec![INF; cap + 1];
    best[0] = 0.0;
    // choice[i][c]: the type of row i in the best allocation of rows 0..=i that uses exactly c
    let mut choice: Vec<Vec<u8>> = Vec::with_capacity(elems.len());
    for (i, &e) in elems.iter().enumerate() {
        let mut next = vec![INF; cap + 1];
        let mut pick = vec![u8::MAX; cap + 1];
        for (j, &t) in types[i].iter().enumerate() {
            let w = (eighths(t) * e / g) as usize;
            for c in w..=cap {
                let v = best[c - w] + cost[i][j];
                if v < next[c] {
                    next[c] = v;
                    pick[c] = j as u8;
                }
            }
        }
        best = next;
        choice.push(pick);
    }
    let (mut c, _) = best
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .min_by(|a, b| a.1.total_cmp(b.1))?;
    let mut out = vec![0; elems.len()];
    for i in (0..elems.len()).rev() {
        let j = choice[i][c] as usize;
        out[i] = j;
        c -= (eighths(types[i][j]) * elems[i] / g) as usize;
    }
    Some(out)
}

impl Row {
    /// The type llama.cpp stores for `t` in this row (`tbq4_0` on heads of 64: `tbq4_0_64`; head
    /// 0, unrecorded, keeps `t`).
    pub fn stored(&self, t: CacheType) -> CacheType {
        t.for_head(self.head).unwrap_or(t)
    }
}

/// Mean bits per element of a choice as stored, weighted by the rows' elements.
pub fn mean_bits(rows: &[Row], chosen: &[CacheType]) -> f64 {
    let e: u64 = rows.iter().map(|r| r.elems).sum();
    let b: f64 = rows
        .iter()
        .zip(chosen)
        .map(|(r, &t)| t.bits_stored(r.head) * r.elems as f64)
        .sum();
    b / e.max(1) as f64
}

/// Bits per element the f16 exact sink keys of a tbq K cache add to a choice (patches/0012:
/// [`tbq::plan::EXACT_KEYS`] cells' keys per context of `n_ctx` cells), spread over all rows.
pub fn exact_key_bits(rows: &[Row], chosen: &[CacheType], n_ctx: u32) -> f64 {
    let e: u64 = rows.iter().map(|r| r.elems).sum();
    let k: u64 = rows
        .iter()
        .zip(chosen)
        .filter(|(r, t)| r.side == Side::K && matches!(t, CacheType::Tbq(_)))
        .map(|(r, _)| r.elems)
        .sum();
    16.0 * tbq::plan::EXACT_KEYS as f64 / n_ctx.max(1) as f64 * k as f64 / e.max(1) as f64
}

/// The per-layer types of a choice: -ctk/-ctv the most common type of each side (ties: the
/// narrower), every other row an override.
pub fn layer_types(rows: &[Row], chosen: &[CacheType]) -> LayerTypes {
    let common = |side: Side| {
        let mut n: BTreeMap<u64, (usize, CacheType)> = BTreeMap::new();
        for (r, &t) in rows.iter().zip(chosen) {
            if r.side == side {
                n.entry(eighths(t)).or_insert((0, t)).0 += 1;
            }
        }
        // the most frequent; on a tie the first (narrowest) key wins
        n.values()
            .fold(
                (0, CacheType::F16),
                |a, &(c, t)| if c > a.0 { (c, t) } else { a },
            )
            .1
    };
    let mut lt = LayerTypes::uniform(common(Side::K), common(Side::V));
    for (r, &t) in rows.iter().zip(chosen) {
        match r.side {
            Side::K if t != lt.k => {
                lt.k_layers.insert(r.layer, t);
            }
            Side::V if t != lt.v => {
                lt.v_layers.insert(r.layer, t);
            }
            _ => {}
        }
    }
    lt
}

fn parse_types(names: &[String], what: &str) -> Result<Vec<CacheType>> {
    let mut out: Vec<CacheType> = Vec::new();
    for n in names {
        let t = CacheType::parse(n).with_context(|| format!("{what}: '{n}'"))?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.is_empty() {
        bail!("{what}: no types");
    }
    out.sort_by_key(|&t| eighths(t));
    Ok(out)
}

fn kld(r: &RunResult) -> Option<(f64, f64)> {
    r.kld.as_ref().map(|k| (k.kld_mean, k.kld_mean_err))
}

pub fn run(args: &CalibrateArgs) -> Result<bool> {
    let out = args.common.out_dir("calibrate");
    std::fs::create_dir_all(&out)?;
    let k_types = parse_types(&args.k_types, "--k-types")?;
    let v_types = parse_types(&args.v_types, "--v-types")?;
    let Measured {
        model,
        probe,
        rows,
        ladder,
    } = match &args.replan {
        Some(path) => measured_from(path)?,
        None => measure(args, &out, &k_types, &v_types)?,
    };
    for (side, list) in [(Side::K, &k_types), (Side::V, &v_types)] {
        for t in list.iter().chain([&probe]) {
            if !ladder.contains_key(&(side, t.name().to_string())) {
                bail!("no ladder run of {t} for {side:?} in the calibration (calibrate with it in --k-types/--v-types)");
            }
        }
    }
    for &b in &args.budgets {
        let lo = (k_types[0].bits_per_element() + v_types[0].bits_per_element()) / 2.0;
        if !(b.is_finite() && b >= lo) {
            bail!("--budgets {b}: below the narrowest K/V types' {lo} bits per element");
        }
    }
    let floor = floor(&rows, &ladder, probe);
    // cost(row, t) = (sens − floor) · (ladder(t) − floor) / (ladder(probe) − floor)
    let scale = |side: Side, t: CacheType| {
        let at = |t: CacheType| (ladder[&(side, t.name().to_string())] - floor).max(0.0);
        at(t) / at(probe).max(f64::MIN_POSITIVE)
    };
    let types: Vec<Vec<CacheType>> = rows
        .iter()
        .map(|r| match r.side {
            Side::K => k_types.clone(),
            Side::V => v_types.clone(),
        })
        .collect();
    let cost: Vec<Vec<f64>> = rows
        .iter()
        .zip(&types)
        .map(|(r, ts)| {
            let own = (r.sens - floor).max(0.0);
            ts.iter().map(|&t| own * scale(r.side, t)).collect()
        })
        .collect();
    let elems: Vec<u64> = rows.iter().map(|r| r.elems).collect();
    // the knapsack weighs each row's types by their bits as stored
    let stored: Vec<Vec<CacheType>> = rows
        .iter()
        .zip(&types)
        .map(|(r, ts)| ts.iter().map(|&t| r.stored(t)).collect())
        .collect();

    // the exact sink keys' bits, at most (every K row tbq), come off the budget first
    let all_tbq_k: Vec<CacheType> = rows
        .iter()
        .map(|r| match r.side {
            Side::K => CacheType::Tbq(tbq::TbqType::Tbq4_0),
            Side::V => CacheType::F16,
        })
        .collect();
    let exact_max = exact_key_bits(&rows, &all_tbq_k, args.ctx);

    let mut allocations = Vec::new();
    for &budget in &args.budgets {
        let pick = knapsack(&elems, &stored, &cost, budget - exact_max)
            .with_context(|| format!("no allocation fits {budget} bits per element"))?;
        let chosen: Vec<CacheType> = pick.iter().zip(&types).map(|(&j, ts)| ts[j]).collect();
        let predicted: f64 = floor + pick.iter().zip(&cost).map(|(&j, c)| c[j]).sum::<f64>();
        let lt = layer_types(&rows, &chosen);
        let spec = lt.spec();
        let config = if spec.is_empty() {
            format!("{}/{}", lt.k, lt.v)
        } else {
            format!("{}/{}@{}", lt.k, lt.v, spec.replace(',', ";"))
        };
        let options = if spec.is_empty() {
            format!("-ctk {} -ctv {}", lt.k, lt.v)
        } else {
            format!("-ctk {} -ctv {} --cache-type-layers {spec}", lt.k, lt.v)
        };
        allocations.push(Allocation {
            budget,
            mean_bits: mean_bits(&rows, &chosen) + exact_key_bits(&rows, &chosen, args.ctx),
            predicted_kld: predicted,
            config,
            options,
            measured_kld: None,
            measured_kld_err: None,
        });
    }

    let mut ok = true;
    if !args.no_verify && args.replan.is_none() {
        let configs: Vec<String> = allocations.iter().map(|a| a.config.clone()).collect();
        let text = out.join("calibration-text.txt");
        let verified = ppl::run(&ppl_args(args, &text, configs, false, false))?;
        for a in allocations.iter_mut() {
            let key = a.config.parse::<KvConfig>()?;
            match verified.iter().find(|r| r.config == key).and_then(kld) {
                Some((m, e)) => {
                    a.measured_kld = Some(m);
                    a.measured_kld_err = Some(e);
                }
                None => ok = false,
            }
        }
    }

    let doc = serde_json::json!({
        "tool": concat!("tbq-validate ", env!("CARGO_PKG_VERSION")),
        "model": model,
        "text": args.wikitext,
        "text_from": args.text_from,
        "ctx": args.ctx,
        "chunks": args.chunks,
        "probe": probe.name(),
        "floor": floor,
        "rows": rows,
        "ladder": ladder.iter().map(|((s, t), k)| serde_json::json!({"side": s, "type": t, "kld": k})).collect::<Vec<_>>(),
        "allocations": allocations,
    });
    write_atomic(
        &out.join("calibration.json"),
        serde_json::to_string_pretty(&doc)?.as_bytes(),
    )?;
    let model = Path::new(&model);
    let md = markdown(model, args, probe, floor, &rows, &ladder, &allocations);
    write_atomic(&out.join("calibration.md"), md.as_bytes())?;
    crate::plot::sensitivity(&out.join("sensitivity.png"), model, probe, &rows)?;
    print!("{md}");
    eprintln!(
        "wrote {}/{{calibration.json,calibration.md,sensitivity.png}}",
        out.display()
    );
    Ok(ok)
}

/// A `ppl` matrix in the calibrate folder over the calibration text: every run of a calibration.
fn ppl_args(
    args: &CalibrateArgs,
    text: &Path,
    pairs: Vec<String>,
    fresh: bool,
    keep_logits: bool,
) -> PplArgs {
    PplArgs {
        common: Common {
            out: Some(args.common.out_dir("calibrate")),
            ..args.common.clone()
        },
        wikitext: text.display().to_string(),
        ctx: args.ctx,
        chunks: args.chunks,
        base: "f16/f16".parse().unwrap(),
        pairs,
        also: vec![],
        fresh,
        report_only: false,
        keep_logits,
    }
}

/// The sensitivity and ladder runs (resumed from `out` where they are stored).
fn measure(
    args: &CalibrateArgs,
    out: &Path,
    k_types: &[CacheType],
    v_types: &[CacheType],
) -> Result<Measured> {
    let model = args.common.model_path()?;
    let text = calibration_text(Path::new(&args.wikitext), args.text_from, out)?;
    let shape = ModelShape::open(&model)
        .with_context(|| format!("reading the layers of {}", model.display()))?;
    let probe = CacheType::parse(&args.probe).context("--probe")?;
    for (side, list) in [(false, k_types), (true, v_types)] {
        for &t in list.iter().chain([&probe]) {
            shape.check_type(t, side)?;
        }
    }
    // Every layer with a KV cache, K and V.
    let mut rows = Vec::new();
    for (il, l) in shape
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| l.n_head_kv > 0)
    {
        for (side, elems, head) in [
            (Side::K, l.k_elems(), l.head_k),
            (Side::V, l.v_elems(), l.head_v),
        ] {
            rows.push(Row {
                layer: il as u32,
                side,
                elems,
                head,
                sens: f64::NAN,
            });
        }
    }
    let row_config = |r: &Row| format!("f16/f16@{}{}={probe}", r.side.letter(), r.layer);
    let ladder_config = |side: Side, t: CacheType| match side {
        Side::K => format!("{t}/f16"),
        Side::V => format!("f16/{t}"),
    };
    let mut ladder_configs = Vec::new();
    for (side, list) in [(Side::K, &k_types), (Side::V, &v_types)] {
        for &t in list.iter().chain([&probe]) {
            let c = ladder_config(side, t);
            if !ladder_configs.contains(&c) {
                ladder_configs.push(c);
            }
        }
    }
    let mut pairs: Vec<String> = rows.iter().map(row_config).collect();
    pairs.extend(ladder_configs.iter().cloned());

    eprintln!(
        "calibrate: {} sensitivity runs ({} layers × K, V at {probe}) and {} ladder runs, {} chunks each",
        rows.len(),
        rows.len() / 2,
        ladder_configs.len(),
        args.chunks
    );
    // the base logits are kept for the verification runs, and deleted after them
    let results = ppl::run(&ppl_args(args, &text, pairs, args.fresh, !args.no_verify))?;
    let by_config: BTreeMap<String, &RunResult> =
        results.iter().map(|r| (r.config.to_string(), r)).collect();
    let measured = |c: &str| -> Result<f64> {
        let key = c.parse::<KvConfig>()?.to_string();
        by_config
            .get(&key)
            .and_then(|r| kld(r))
            .map(|k| k.0)
            .with_context(|| format!("the run of {c} failed (see its log in the calibrate folder)"))
    };
    for r in rows.iter_mut() {
        r.sens = measured(&row_config(r))?;
    }
    let mut ladder: BTreeMap<(Side, String), f64> = BTreeMap::new();
    for (side, list) in [(Side::K, &k_types), (Side::V, &v_types)] {
        for &t in list.iter().chain([&probe]) {
            ladder.insert((side, t.name().into()), measured(&ladder_config(side, t))?);
        }
    }
    Ok(Measured {
        model: model.display().to_string(),
        probe,
        rows,
        ladder,
    })
}

/// The KLD every run has once any row leaves f16, whatever the row (on Gemma 3 ≈ 0.0035: a
/// different computation path, not quantization error). It shows as the gap between the sum of
/// one side's single-row sensitivities and that side's all-rows run at the probe type: with
/// sens(L) = F + a(L) and all = F + Σ a(L), F = (Σ sens − all) / (n − 1). The mean of the two
/// sides' estimates, never negative; 0 where the loss adds up (the reference model: ~1e-6).
pub fn floor(rows: &[Row], ladder: &BTreeMap<(Side, String), f64>, probe: CacheType) -> f64 {
    let mut est = Vec::new();
    for side in [Side::K, Side::V] {
        let sens: Vec<f64> = rows
            .iter()
            .filter(|r| r.side == side)
            .map(|r| r.sens)
            .collect();
        if let (true, Some(all)) = (
            sens.len() > 1,
            ladder.get(&(side, probe.name().to_string())),
        ) {
            est.push((sens.iter().sum::<f64>() - all) / (sens.len() - 1) as f64);
        }
    }
    if est.is_empty() {
        return 0.0;
    }
    (est.iter().sum::<f64>() / est.len() as f64).max(0.0)
}

/// The part of `path` from `from` (a fraction of its bytes, moved on past the next newline),
/// written to `<out>/calibration-text.txt` (rewritten only when it changes, so stored runs stay
/// valid).
fn calibration_text(path: &Path, from: f64, out: &Path) -> Result<std::path::PathBuf> {
    if !(0.0..1.0).contains(&from) {
        bail!("--text-from {from}: must be in [0, 1)");
    }
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading {} (put the shared data beside the repository, set TBQ_WIKITEXT or pass --wikitext)",
            path.display()
        )
    })?;
    let mut start = (bytes.len() as f64 * from) as usize;
    if start > 0 {
        start = bytes[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| start + i + 1);
    }
    let part = &bytes[start..];
    if part.len() < 4096 {
        bail!(
            "{}: only {} bytes from --text-from {from} on: too little text to calibrate on",
            path.display(),
            part.len()
        );
    }
    let dst = out.join("calibration-text.txt");
    if std::fs::read(&dst).ok().as_deref() != Some(part) {
        write_atomic(&dst, part)?;
    }
    Ok(dst)
}

fn markdown(
    model: &Path,
    args: &CalibrateArgs,
    probe: CacheType,
    floor: f64,
    rows: &[Row],
    ladder: &BTreeMap<(Side, String), f64>,
    allocations: &[Allocation],
) -> String {
    let mut s = String::new();
    let name = model.file_name().unwrap_or_default().to_string_lossy();
    let _ = writeln!(
        s,
        "Per-layer calibration of {name}: mean KLD against f16 over {} chunks × {} tokens of \
         `{}` from {:.0}% of its bytes on (`tbq-validate calibrate`).\n",
        args.chunks,
        args.ctx,
        Path::new(&args.wikitext)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy(),
        100.0 * args.text_from
    );
    let _ = writeln!(
        s,
        "Sensitivity (only this row at {probe}, every other f16):\n"
    );
    s.push_str("| layer | K | V |\n|------:|--:|--:|\n");
    let mut layers: Vec<u32> = rows.iter().map(|r| r.layer).collect();
    layers.dedup();
    let find = |l: u32, side: Side| {
        rows.iter()
            .find(|r| r.layer == l && r.side == side)
            .map_or("—".to_string(), |r| sig(r.sens, 3))
    };
    for l in layers {
        let _ = writeln!(s, "| {l} | {} | {} |", find(l, Side::K), find(l, Side::V));
    }
    let sum = |side: Side| {
        rows.iter()
            .filter(|r| r.side == side)
            .map(|r| r.sens)
            .sum::<f64>()
    };
    let _ = writeln!(
        s,
        "| Σ | {} | {} |\n",
        sig(sum(Side::K), 3),
        sig(sum(Side::V), 3)
    );
    let _ = writeln!(s, "Ladder (all of one side at the type, the other f16):\n");
    s.push_str("| type | bits | K | V |\n|------|-----:|--:|--:|\n");
    let mut names: Vec<&String> = ladder.keys().map(|(_, t)| t).collect();
    names.sort_by_key(|t| eighths(CacheType::parse(t).unwrap()));
    names.dedup();
    for t in names {
        let cell = |side: Side| {
            ladder
                .get(&(side, t.clone()))
                .map_or("—".into(), |k| sig(*k, 3))
        };
        let b = CacheType::parse(t).unwrap().bits_per_element();
        let _ = writeln!(
            s,
            "| {t} | {} | {} | {} |",
            bits(b),
            cell(Side::K),
            cell(Side::V)
        );
    }
    let _ = writeln!(
        s,
        "\nFloor (the KLD of leaving f16 at all, from the gap between the single-row sums and the \
         all-rows runs): {}.\n\nAllocations (predicted: the floor plus each row's sensitivity above \
         it, scaled by its side's ladder above it):\n",
        sig(floor, 3)
    );
    s.push_str("| budget | bits/elem | predicted KLD | measured KLD | llama.cpp options |\n");
    s.push_str("|-------:|----------:|--------------:|-------------:|-------------------|\n");
    for a in allocations {
        let m = match (a.measured_kld, a.measured_kld_err) {
            (Some(m), Some(e)) => format!("{} ± {}", sig(m, 3), sig(e, 2)),
            _ => "—".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {m} | `{}` |",
            bits(a.budget),
            bits(a.mean_bits),
            sig(a.predicted_kld, 3),
            a.options
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: &str) -> CacheType {
        CacheType::parse(n).unwrap()
    }

    /// The knapsack against brute force over every assignment of a small problem.
    #[test]
    fn knapsack_is_exact() {
        let ladder = [t("tbq3_0"), t("tbq4_0"), t("tbq5_1"), t("q8_0")];
        let elems = [256u64, 256, 512, 128, 256];
        let types: Vec<Vec<CacheType>> = elems.iter().map(|_| ladder.to_vec()).collect();
        // costs fall with bits, at different rates per row
        let sens = [1.0, 0.1, 3.0, 0.5, 0.02];
        let cost: Vec<Vec<f64>> = sens
            .iter()
            .map(|s| {
                ladder
                    .iter()
                    .map(|t| s * 4f64.powf(-t.bits_per_element()))
                    .collect()
            })
            .collect();
        let total: u64 = elems.iter().sum();
        for budget in [3.125, 3.5, 4.0, 4.25, 5.0, 8.5] {
            let got = knapsack(&elems, &types, &cost, budget).unwrap();
            let bits = |p: &[usize]| -> f64 {
                p.iter()
                    .zip(&elems)
                    .map(|(&j, &e)| ladder[j].bits_per_element() * e as f64)
                    .sum::<f64>()
                    / total as f64
            };
            let c = |p: &[usize]| p.iter().zip(&cost).map(|(&j, c)| c[j]).sum::<f64>();
            assert!(bits(&got) <= budget + 1e-12);
            let mut best = f64::INFINITY;
            for code in 0..4usize.pow(5) {
                let p: Vec<usize> = (0..5).map(|i| code / 4usize.pow(i) % 4).collect();
                if bits(&p) <= budget + 1e-12 {
                    best = best.min(c(&p));
                }
            }
            assert!(
                (c(&got) - best).abs() < 1e-15,
                "budget {budget}: {} vs {best}",
                c(&got)
            );
        }
        assert!(knapsack(&elems, &types, &cost, 3.0).is_none());
    }

    /// sens = F + a(L) and the all-rows run F + Σ a(L): the floor comes back.
    #[test]
    fn floor_from_the_additivity_gap() {
        let a = [0.01, 0.02, 0.005, 0.0];
        let f = 0.003;
        let mut rows = Vec::new();
        let mut ladder = BTreeMap::new();
        for (side, scale) in [(Side::K, 1.0), (Side::V, 0.5)] {
            for (l, x) in a.iter().enumerate() {
                rows.push(Row {
                    layer: l as u32,
                    side,
                    elems: 256,
                    head: 128,
                    sens: f + scale * x,
                });
            }
            ladder.insert(
                (side, "tbq3_0".to_string()),
                f + scale * a.iter().sum::<f64>(),
            );
        }
        assert!((floor(&rows, &ladder, t("tbq3_0")) - f).abs() < 1e-15);
        // additive losses: no floor
        for r in rows.iter_mut() {
            r.sens -= f;
        }
        for v in ladder.values_mut() {
            *v -= f;
        }
        assert!(floor(&rows, &ladder, t("tbq3_0")).abs() < 1e-15);
    }

    #[test]
    fn common_types_become_ctk_ctv() {
        let rows: Vec<Row> = (0..3)
            .flat_map(|l| {
                [Side::K, Side::V].map(|side| Row {
                    layer: l,
                    side,
                    elems: 256,
                    head: 128,
                    sens: 1.0,
                })
            })
            .collect();
        let chosen = [
            t("tbq5_1"),
            t("tbq4_0"), // layer 0 K, V
            t("tbq4_0"),
            t("tbq3_0"),
            t("tbq4_0"),
            t("tbq3_0"),
        ];
        let lt = layer_types(&rows, &chosen);
        assert_eq!((lt.k, lt.v), (t("tbq4_0"), t("tbq3_0")));
        assert_eq!(lt.spec(), "k0=tbq5_1,v0=tbq4_0");
    }

    /// A budget counts bits as stored: on heads of 64 tbq4_0 is tbq4_0_64 (34 bytes per 64
    /// values: 4.25 bits, not 4.125); a calibration stored before heads were recorded reads as 128.
    #[test]
    fn bits_as_stored_on_64_wide_heads() {
        let row = |head| Row {
            layer: 0,
            side: Side::K,
            elems: 3 * 64,
            head,
            sens: 1.0,
        };
        assert_eq!(
            mean_bits(&[row(64), row(64)], &[t("tbq4_0"), t("tbq3_0")]),
            (4.25 + 3.25) / 2.0
        );
        assert_eq!(mean_bits(&[row(0)], &[t("tbq4_0")]), 4.125);
        assert_eq!(row(64).stored(t("q4_0")), t("q4_0"));
        let old: Row =
            serde_json::from_str(r#"{"layer":1,"side":"V","elems":256,"sens":0.5}"#).unwrap();
        assert_eq!(old.head, 0);
        // the knapsack weighs the stored types: 4.125 bits fit one 128-wide tbq4_0 row, not a 64-wide one
        let cost = vec![vec![1.0, 0.0]];
        let pick = |ts: Vec<CacheType>| knapsack(&[64], &[ts], &cost, 4.125).unwrap()[0];
        assert_eq!(pick(vec![t("tbq3_0"), t("tbq4_0")]), 1);
        assert_eq!(
            pick(vec![
                row(64).stored(t("tbq3_0")),
                row(64).stored(t("tbq4_0"))
            ]),
            0
        );
    }
}
