// capture-kv: dumps the K, V (and Q) rows a model writes into its KV cache, through llama.cpp's
// eval callback — the real rows tbq quantizes, for codec-level analysis (validation/analysis/).
//
//   capture-kv MODEL TEXT OUT [n_tokens=512] [chunks=2]
//
// Decodes `chunks` consecutive pieces of `n_tokens` tokens of TEXT (one context each) and writes
// every "Kcur-<layer>", "Vcur-<layer>" and "Qcur-<layer>" tensor the graph computes (after the
// model's norms and RoPE: exactly what reaches the cache and the attention) to OUT as records:
//   char name[64] (ggml's tensor name, NUL-padded), int32 kind (0 = K, 1 = V, 2 = Q),
//   int32 layer, int32 chunk, int32 pad, int64 ne0, ne1, ne2, then ne0·ne1·ne2 float32 with ne0
//   fastest. A name can occur more than once per layer (the projection, then views and the
//   roped result); the last record of a (kind, layer, chunk) is the tensor the cache stores.
// The chunks are llama-perplexity's: the text tokenized once, chunk k = tokens [k·n, (k+1)·n), its
// first token replaced by BOS where the vocabulary adds one — so the rows are those the KLD runs
// (validation/results/*/ppl, -c n_tokens) put into the cache, attention sink included.
#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

struct capture {
    FILE * out = nullptr;
    int chunk = 0;
    long records = 0;
    std::vector<uint8_t> buf;
};

static int kind_of(const char * name) {
    if (strncmp(name, "Kcur-", 5) == 0) return 0;
    if (strncmp(name, "Vcur-", 5) == 0) return 1;
    if (strncmp(name, "Qcur-", 5) == 0) return 2;
    return -1;
}

static bool on_tensor(struct ggml_tensor * t, bool ask, void * user) {
    auto * c = (capture *) user;
    const int kind = kind_of(t->name);
    if (ask) {
        return kind >= 0;
    }
    if (kind < 0) {
        return true;
    }
    if (t->type != GGML_TYPE_F32) {
        fprintf(stderr, "capture-kv: %s is %s, not f32; skipped\n", t->name, ggml_type_name(t->type));
        return true;
    }
    c->buf.resize(ggml_nbytes(t));
    ggml_backend_tensor_get(t, c->buf.data(), 0, ggml_nbytes(t));
    const int32_t head[4] = {kind, atoi(t->name + 5), c->chunk, 0};
    const int64_t ne[3] = {t->ne[0], t->ne[1], t->ne[2]};
    char name[64] = {0};
    strncpy(name, t->name, sizeof(name) - 1);
    fwrite(name, sizeof(name), 1, c->out);
    fwrite(head, sizeof(head), 1, c->out);
    fwrite(ne, sizeof(ne), 1, c->out);
    // Gather by strides: the tensor may be a view (e.g. V split from a fused QKV projection).
    std::vector<float> row(t->ne[0]);
    for (int64_t i2 = 0; i2 < t->ne[2]; i2++) {
        for (int64_t i1 = 0; i1 < t->ne[1]; i1++) {
            for (int64_t i0 = 0; i0 < t->ne[0]; i0++) {
                const size_t off = i0 * t->nb[0] + i1 * t->nb[1] + i2 * t->nb[2];
                memcpy(&row[i0], c->buf.data() + off, sizeof(float));
            }
            fwrite(row.data(), sizeof(float), row.size(), c->out);
        }
    }
    c->records++;
    return true;
}

int main(int argc, char ** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL TEXT OUT [n_tokens=512] [chunks=2]\n", argv[0]);
        return 2;
    }
    const int n_tokens = argc > 4 ? atoi(argv[4]) : 512;
    const int chunks = argc > 5 ? atoi(argv[5]) : 2;

    std::ifstream in(argv[2]);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    if (text.empty()) {
        fprintf(stderr, "capture-kv: cannot read %s\n", argv[2]);
        return 1;
    }

    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    // CAPTURE_REPACK=0: weights in a plain CPU buffer (no AMX/repacked matmul). The pinned tree's AMX
    // mul_mat segfaults on this machine's Sapphire-Rapids-class CPU (Gemma 3 270M Q4_K_M); the rows
    // differ from the repacked path only by float rounding of the projections.
    if (const char * e = getenv("CAPTURE_REPACK")) {
        mp.use_extra_bufts = atoi(e) != 0;
    }
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "capture-kv: cannot load %s\n", argv[1]);
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);

    std::vector<llama_token> toks(text.size() + 16);
    const int n = llama_tokenize(vocab, text.c_str(), (int32_t) text.size(), toks.data(), (int32_t) toks.size(), true, false);
    if (n < n_tokens * chunks) {
        fprintf(stderr, "capture-kv: %d tokens in the text, need %d\n", n, n_tokens * chunks);
        return 1;
    }

    capture c;
    c.out = fopen(argv[3], "wb");
    if (!c.out) {
        fprintf(stderr, "capture-kv: cannot write %s\n", argv[3]);
        return 1;
    }
    for (int k = 0; k < chunks; k++) {
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = n_tokens;
        cp.n_batch = n_tokens;
        cp.n_ubatch = n_tokens;
        cp.cb_eval = on_tensor;
        cp.cb_eval_user_data = &c;
        llama_context * ctx = llama_init_from_model(model, cp);
        c.chunk = k;
        llama_token * chunk = toks.data() + (size_t) k * n_tokens;
        if (llama_vocab_get_add_bos(vocab)) {
            chunk[0] = llama_vocab_bos(vocab); // as llama-perplexity does for every chunk
        }
        if (llama_decode(ctx, llama_batch_get_one(chunk, n_tokens)) != 0) {
            fprintf(stderr, "capture-kv: decode failed\n");
            return 1;
        }
        llama_free(ctx);
    }
    fclose(c.out);
    fprintf(stderr, "capture-kv: %ld tensors from %d chunks of %d tokens -> %s\n", c.records, chunks, n_tokens, argv[3]);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
