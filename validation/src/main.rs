//! tbq-validate: what a KV-cache type costs in quality and memory, on a real model, measured
//! with the patched llama.cpp's own tools.

mod calibrate;
mod common;
mod llama;
mod memory;
mod needle;
mod plot;
mod ppl;
mod proc;
mod report;
mod server;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tbq-validate",
    version,
    about = "Validate KV-cache types (tbq4_0, tbq3_0 and llama.cpp's own) on a GGUF model",
    long_about = "Validate KV-cache types (tbq4_0, tbq3_0 and llama.cpp's own) on a GGUF model, \
with the patched llama.cpp's tools:\n\n\
  ppl     WikiText-2 perplexity and KL divergence of each K/V pair against f16/f16\n\
  needle  needle-in-a-haystack retrieval through llama-server, per context and depth\n\
  memory  KV bytes llama.cpp allocates beside the crate planner's prediction; context per budget\n\
  calibrate  per-layer sensitivity of K and V, and the per-layer cache types of least KLD for a \
bit budget (llama.cpp's --cache-type-layers)\n\n\
Every subcommand writes JSON, a markdown table and PNG plots into its output folder, keeps \
the llama.cpp logs beside them, and resumes a killed run without redoing finished work.",
    after_help = "Examples:\n  \
tbq-validate ppl --chunks 20                         # the issue's matrix on Gemma 3 270M\n  \
tbq-validate ppl -m model.gguf -p tbq4_0/tbq3_0,q4_0/q4_0:norot --chunks 40\n  \
tbq-validate ppl --report-only -o validation/results/gemma-3-270m/ppl\n  \
tbq-validate needle -c 512,1024 -p f16/f16,tbq4_0/tbq3_0\n  \
tbq-validate memory --budgets 16,24 --no-measure\n  \
tbq-validate calibrate --budgets 3.5,4.25             # which layers get more bits, measured"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// WikiText-2 perplexity + KL divergence matrix (llama-perplexity): PPL, ΔPPL, mean and 99%
    /// KLD, same top p, bits per element, KV MiB per K/V pair.
    Ppl(ppl::PplArgs),
    /// Needle-in-a-haystack through llama-server: a number planted at several depths of filler
    /// at several context sizes, asked for with greedy decoding; a grid per K/V pair.
    Needle(needle::NeedleArgs),
    /// KV memory: what llama-server allocates per type and context beside what the crate's
    /// planner predicts (within 1%), and the largest context per memory budget for a model
    /// shape (default MiniMax-M2.5-like: 62 layers, 8 KV heads, head_dim 128).
    Memory(memory::MemoryArgs),
    /// Per-layer cache types: the KLD each layer's K and V cost at a narrow type, how each side's
    /// loss scales with the type, and for each bit budget the allocation of least predicted KLD
    /// (an exact knapsack), run to measure it and printed as `--cache-type-layers`.
    Calibrate(calibrate::CalibrateArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Ppl(a) => ppl::run(&a).map(|rs| rs.iter().all(|r| r.ok)),
        Cmd::Needle(a) => needle::run(&a),
        Cmd::Memory(a) => memory::run(&a),
        Cmd::Calibrate(a) => calibrate::run(&a),
    };
    match res {
        Ok(true) => std::process::ExitCode::SUCCESS,
        // Finished, but some configuration failed: reported in the table, exit 2.
        Ok(false) => std::process::ExitCode::from(2),
        Err(e) => {
            eprintln!("tbq-validate: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
