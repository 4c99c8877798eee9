// LLM decode-loop kernels, compiled at start-up with NVRTC (PTX for compute_90).
//
// Activations are f32; weights and the KV cache are bf16 (raw 16-bit words, so no CUDA header is
// needed: NVRTC compiles this file on its own). Every kernel has a CPU twin in
// `antiphon_kernels::llm_ref`, which is its reference in the equivalence tests.
//
// Row layout of one step: N token rows stacked from every sequence in the batch; `row_pos[r]` is
// the token's position in its own sequence, `row_seq[r]` its sequence, and the sequence's page
// list is `page_table[seq_pages[s] ..]` (pages of `page_size` token slots each).

typedef unsigned short bf16_t;

#define INFINITY __int_as_float(0x7f800000)

__device__ __forceinline__ float bf2f(bf16_t v) { return __uint_as_float(((unsigned)v) << 16); }

// Round to nearest even, NaN kept quiet (the same as `half::bf16::from_f32`).
__device__ __forceinline__ bf16_t f2bf(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over a block of up to 1024 threads; every thread gets the result. `scratch` holds 32 floats.
__device__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    float t = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(t);
}

// Synthetic weights for throughput runs: a cheap hash of the index, in [-scale, scale).
extern "C" __global__ void fill_bf16_hash(bf16_t* out, unsigned long long n, unsigned seed, float scale) {
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        unsigned x = (unsigned)i * 0x9E3779B1u ^ (unsigned)(i >> 32) ^ seed;
        x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
        out[i] = f2bf(((float)(x >> 8) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * scale);
    }
}

extern "C" __global__ void fill_f32(float* out, unsigned long long n, float value) {
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (; i < n; i += stride) out[i] = value;
}

// x[r, :] = table[ids[r], :]. Grid: one block per row.
extern "C" __global__ void embed_rows(const bf16_t* table, const unsigned* ids, float* x, int hidden) {
    int r = blockIdx.x;
    const bf16_t* src = table + (unsigned long long)ids[r] * hidden;
    float* dst = x + (unsigned long long)r * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = bf2f(src[i]);
}

// out[b, :] = bf16(x[row, :] / sqrt(mean(x[row]^2) + eps) * w), row = rows ? rows[b] : b.
// Grid: one block per output row.
extern "C" __global__ void rms_norm_bf16(const float* x, const float* w, const int* rows, bf16_t* out,
                                        int hidden, float eps) {
    __shared__ float scratch[32];
    int b = blockIdx.x;
    int r = rows ? rows[b] : b;
    const float* xr = x + (unsigned long long)r * hidden;
    float s = 0.0f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) s += xr[i] * xr[i];
    s = block_sum(s, scratch);
    float inv = rsqrtf(s / hidden + eps);
    bf16_t* o = out + (unsigned long long)b * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) o[i] = f2bf(xr[i] * inv * w[i]);
}

// One row of the fused [q | k | v] projection: add the bias, rotate q and k at the row's own
// position (neox: pairs (i, i + d/2); else adjacent pairs (2i, 2i + 1)), write the rotated q back
// and append k and v to the paged cache at `row_slot[r]` (a token slot index: page * page_size +
// offset). Grid: one block per row.
extern "C" __global__ void qkv_rope_append(float* qkv, const float* bias, const int* row_pos,
                                          const int* row_slot, const float* cos_t, const float* sin_t,
                                          bf16_t* k_cache, bf16_t* v_cache, int n_heads, int n_kv,
                                          int head_dim, int neox) {
    int r = blockIdx.x;
    int half = head_dim / 2;
    int qd = n_heads * head_dim, kd = n_kv * head_dim;
    int width = qd + 2 * kd;
    float* row = qkv + (unsigned long long)r * width;
    const float* c = cos_t + (unsigned long long)row_pos[r] * half;
    const float* s = sin_t + (unsigned long long)row_pos[r] * half;
    unsigned long long slot = (unsigned long long)row_slot[r] * kd;
    int pairs = (n_heads + n_kv) * half;
    for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
        int head = p / half, i = p % half;
        int base = head * head_dim;  // k heads follow q heads directly in the row
        int a = neox ? base + i : base + 2 * i;
        int b = neox ? base + i + half : base + 2 * i + 1;
        float x0 = row[a], x1 = row[b];
        if (bias) { x0 += bias[a]; x1 += bias[b]; }
        float y0 = x0 * c[i] - x1 * s[i];
        float y1 = x0 * s[i] + x1 * c[i];
        if (head < n_heads) {
            row[a] = y0;
            row[b] = y1;
        } else {
            k_cache[slot + (a - qd)] = f2bf(y0);
            k_cache[slot + (b - qd)] = f2bf(y1);
        }
    }
    for (int i = threadIdx.x; i < kd; i += blockDim.x) {
        float v = row[qd + kd + i];
        if (bias) v += bias[qd + kd + i];
        v_cache[slot + i] = f2bf(v);
    }
}

#define ATT_WARPS 4
#define ATT_MAX_GROUPS 8
#define ATT_MAX_HD 128
#define ATT_MAX_DPL 4  // head_dim / 32

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Causal attention of one token row against keys [z * split_len, min(keys, (z + 1) * split_len))
// of its sequence (keys = row_pos[r] + 1), for the `groups` query heads that share KV head `h`
// (each key and value is loaded once for all of them). Split over keys so that a single long
// decode row still spreads over many SMs; `attention_merge` combines the splits.
//
// Each warp takes tiles of 32 keys, one key per lane: the lane computes the key's scores for
// all groups from its K row (16-byte loads), the warp updates an online softmax per group once
// per tile, then accumulates P·V with lanes over the head dimension. Warps of a block are merged
// in shared memory; the block writes (max, sum, unnormalised output) per group to `partial`
// [rows, n_kv, splits, groups, head_dim + 2]. Grid: (rows, n_kv, splits); block: 32 * ATT_WARPS.
extern "C" __global__ void attention_split(const float* qkv, const bf16_t* k_cache, const bf16_t* v_cache,
                                           const int* row_pos, const int* row_seq, const int* seq_pages,
                                           const int* page_table, float* partial, int n_heads, int n_kv,
                                           int head_dim, int page_size, float scale, int split_len) {
    __shared__ __align__(16) float q_s[ATT_MAX_GROUPS][ATT_MAX_HD];
    __shared__ float sm_m[ATT_WARPS][ATT_MAX_GROUPS];
    __shared__ float sm_l[ATT_WARPS][ATT_MAX_GROUPS];
    // One buffer, two uses: each warp's tile of 32 value rows (bf16) during the key loop, then
    // the warps' partial outputs (f32) for the merge. 32 KiB.
    __shared__ __align__(16) unsigned char sm_buf[ATT_WARPS * 32 * ATT_MAX_HD * 2];
    bf16_t(*v_tile)[32][ATT_MAX_HD] = (bf16_t(*)[32][ATT_MAX_HD])sm_buf;
    float(*sm_acc)[ATT_MAX_GROUPS][ATT_MAX_HD] = (float(*)[ATT_MAX_GROUPS][ATT_MAX_HD])sm_buf;
    int r = blockIdx.x, h = blockIdx.y, z = blockIdx.z, splits = gridDim.z;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int groups = n_heads / n_kv;
    int dpl = head_dim / 32;
    int kd = n_kv * head_dim;
    int width = n_heads * head_dim + 2 * kd;
    const float* q = qkv + (unsigned long long)r * width + (unsigned long long)h * groups * head_dim;
    for (int e = threadIdx.x; e < groups * head_dim; e += blockDim.x)
        q_s[e / head_dim][e % head_dim] = q[e] * scale;
    __syncthreads();
    const int* pages = page_table + seq_pages[row_seq[r]];
    int keys = row_pos[r] + 1;
    int begin = z * split_len;
    int end = min(keys, begin + split_len);

    float acc[ATT_MAX_GROUPS][ATT_MAX_DPL];
    float m[ATT_MAX_GROUPS], l[ATT_MAX_GROUPS];
#pragma unroll
    for (int g = 0; g < ATT_MAX_GROUPS; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int t = 0; t < ATT_MAX_DPL; t++) acc[g][t] = 0.0f;
    }
    // `base` depends on the warp only, so whole warps enter and leave the loop together.
    for (int base = begin + warp * 32; base < end; base += ATT_WARPS * 32) {
        int j = base + lane;
        bool valid = j < end;
        float s[ATT_MAX_GROUPS];
#pragma unroll
        for (int g = 0; g < ATT_MAX_GROUPS; g++) s[g] = 0.0f;
        if (valid) {
            unsigned long long slot = (unsigned long long)pages[j / page_size] * page_size + j % page_size;
            unsigned long long row = slot * kd + (unsigned long long)h * head_dim;
            const uint4* kr = (const uint4*)(k_cache + row);
            const uint4* vr = (const uint4*)(v_cache + row);
            uint4* vt = (uint4*)v_tile[warp][lane];
            // Fixed trip counts so all loads of the row are issued before their first use.
#pragma unroll
            for (int c = 0; c < ATT_MAX_HD / 8; c++) {
                if (c < head_dim / 8) {
                    uint4 w = kr[c];
                    vt[c] = vr[c];  // this key's value row, for the P·V pass below
                    float kf[8] = {
                        __uint_as_float(w.x << 16), __uint_as_float(w.x & 0xffff0000u),
                        __uint_as_float(w.y << 16), __uint_as_float(w.y & 0xffff0000u),
                        __uint_as_float(w.z << 16), __uint_as_float(w.z & 0xffff0000u),
                        __uint_as_float(w.w << 16), __uint_as_float(w.w & 0xffff0000u),
                    };
#pragma unroll
                    for (int g = 0; g < ATT_MAX_GROUPS; g++) {
                        if (g < groups) {
                            float4 qa = *(const float4*)&q_s[g][c * 8];
                            float4 qb = *(const float4*)&q_s[g][c * 8 + 4];
                            s[g] += qa.x * kf[0] + qa.y * kf[1] + qa.z * kf[2] + qa.w * kf[3] +
                                    qb.x * kf[4] + qb.y * kf[5] + qb.z * kf[6] + qb.w * kf[7];
                        }
                    }
                }
            }
        }
        __syncwarp();
#pragma unroll
        for (int g = 0; g < ATT_MAX_GROUPS; g++) {
            if (g < groups) {
                float sg = valid ? s[g] : -INFINITY;
                float m_new = fmaxf(m[g], warp_max(sg));  // lane 0's key is always valid
                float corr = expf(m[g] - m_new);          // m = -inf at first: exp(-inf) = 0
                float p = valid ? expf(sg - m_new) : 0.0f;
                l[g] = l[g] * corr + warp_sum(p);
#pragma unroll
                for (int t = 0; t < ATT_MAX_DPL; t++) acc[g][t] *= corr;
                s[g] = p;
                m[g] = m_new;
            }
        }
        int count = min(32, end - base);
        for (int jj = 0; jj < count; jj++) {
            float vv[ATT_MAX_DPL];
#pragma unroll
            for (int t = 0; t < ATT_MAX_DPL; t++) vv[t] = t < dpl ? bf2f(v_tile[warp][jj][lane + 32 * t]) : 0.0f;
#pragma unroll
            for (int g = 0; g < ATT_MAX_GROUPS; g++) {
                if (g < groups) {
                    float pj = __shfl_sync(0xffffffffu, s[g], jj);
#pragma unroll
                    for (int t = 0; t < ATT_MAX_DPL; t++) acc[g][t] += pj * vv[t];
                }
            }
        }
        __syncwarp();  // the next tile overwrites this warp's value rows
    }
    __syncthreads();  // sm_buf switches from value tiles to partial outputs
    // Fixed trip counts keep m, l and acc in registers (a runtime index would spill them).
#pragma unroll
    for (int g = 0; g < ATT_MAX_GROUPS; g++) {
        if (g < groups) {
            if (lane == 0) {
                sm_m[warp][g] = m[g];
                sm_l[warp][g] = l[g];
            }
#pragma unroll
            for (int t = 0; t < ATT_MAX_DPL; t++)
                if (t < dpl) sm_acc[warp][g][lane + 32 * t] = acc[g][t];
        }
    }
    __syncthreads();
    int stride = groups * (head_dim + 2);
    float* out = partial + (((unsigned long long)r * n_kv + h) * splits + z) * stride;
    for (int e = threadIdx.x; e < groups * head_dim; e += blockDim.x) {
        int g = e / head_dim, d = e % head_dim;
        float big = -INFINITY;
        for (int w = 0; w < ATT_WARPS; w++) big = fmaxf(big, sm_m[w][g]);
        float num = 0.0f, den = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) {
            if (sm_m[w][g] == -INFINITY) continue;  // a warp that saw no key
            float f = expf(sm_m[w][g] - big);
            num += sm_acc[w][g][d] * f;
            den += sm_l[w][g] * f;
        }
        float* o = out + g * (head_dim + 2);
        if (d == 0) {
            o[0] = big;  // -inf when this split holds no key of the row
            o[1] = den;
        }
        o[2 + d] = num;
    }
}

// Combine the splits of `attention_split` into the normalised output, bf16 [rows, n_heads *
// head_dim]. Grid: (rows, n_kv).
extern "C" __global__ void attention_merge(const float* partial, bf16_t* out, int n_heads, int n_kv,
                                           int head_dim, int splits) {
    int r = blockIdx.x, h = blockIdx.y;
    int groups = n_heads / n_kv;
    int stride = groups * (head_dim + 2);
    const float* base = partial + ((unsigned long long)r * n_kv + h) * splits * stride;
    for (int e = threadIdx.x; e < groups * head_dim; e += blockDim.x) {
        int g = e / head_dim, d = e % head_dim;
        float big = -INFINITY;
        for (int z = 0; z < splits; z++) big = fmaxf(big, base[z * stride + g * (head_dim + 2)]);
        float num = 0.0f, den = 0.0f;
        for (int z = 0; z < splits; z++) {
            const float* p = base + z * stride + g * (head_dim + 2);
            if (p[0] == -INFINITY) continue;
            float f = expf(p[0] - big);
            num += p[2 + d] * f;
            den += p[1] * f;
        }
        out[(unsigned long long)r * n_heads * head_dim + (unsigned long long)(h * groups + g) * head_dim + d] =
            f2bf(num / den);
    }
}

// out[r, i] = bf16(silu(gu[r, i]) * gu[r, ffn + i]) for the fused [gate | up] projection.
extern "C" __global__ void silu_mul_bf16(const float* gu, bf16_t* out, int ffn) {
    int r = blockIdx.x;
    const float* g = gu + (unsigned long long)r * 2 * ffn;
    bf16_t* o = out + (unsigned long long)r * ffn;
    for (int i = threadIdx.x; i < ffn; i += blockDim.x) {
        float a = g[i];
        o[i] = f2bf(a / (1.0f + expf(-a)) * g[ffn + i]);
    }
}

#define SAMPLE_THREADS 1024

// Deterministic block sum: each thread's chunk in order, then thread 0 adds the 1024 partial
// sums in order (the CPU twin does exactly this, so both agree to the last bit given equal inputs).
__device__ float ordered_sum(float mine, float* partial) {
    __syncthreads();
    partial[threadIdx.x] = mine;
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (int i = 0; i < SAMPLE_THREADS; i++) t += partial[i];
        partial[SAMPLE_THREADS] = t;
    }
    __syncthreads();
    return partial[SAMPLE_THREADS];
}

// Next token of each row of `logits` ([rows, vocab], overwritten): repetition penalty over
// `recent[recent_off[b] .. recent_off[b + 1]]` (applied once per occurrence), then argmax (first
// maximum) when temperature <= 0, else temperature softmax, nucleus of mass top_p (all tokens at
// least as likely as the threshold found by bisection), and an index-order draw with `uniform`.
// Grid: one block of SAMPLE_THREADS per row.
extern "C" __global__ void sample_rows(float* logits, int vocab, const float* temperature, const float* top_p,
                                       const float* penalty, const float* uniform, const int* recent,
                                       const int* recent_off, unsigned* out) {
    __shared__ float partial[SAMPLE_THREADS + 1];
    __shared__ float best_v[SAMPLE_THREADS];
    __shared__ int best_i[SAMPLE_THREADS];
    int b = blockIdx.x, tid = threadIdx.x;
    float* row = logits + (unsigned long long)b * vocab;
    int chunk = (vocab + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
    int lo = min(tid * chunk, vocab), hi = min(lo + chunk, vocab);
    float pen = penalty[b];
    if (pen != 1.0f && tid == 0) {
        for (int i = recent_off[b]; i < recent_off[b + 1]; i++) {
            int t = recent[i];
            if (t >= 0 && t < vocab) row[t] = row[t] > 0.0f ? row[t] / pen : row[t] * pen;
        }
    }
    __syncthreads();
    // Max (first index among equals).
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = lo; i < hi; i++)
        if (row[i] > bv) { bv = row[i]; bi = i; }
    best_v[tid] = bv;
    best_i[tid] = bi;
    __syncthreads();
    for (int s = SAMPLE_THREADS / 2; s > 0; s >>= 1) {
        if (tid < s) {
            float ov = best_v[tid + s];
            int oi = best_i[tid + s];
            if (ov > best_v[tid] || (ov == best_v[tid] && oi < best_i[tid])) {
                best_v[tid] = ov;
                best_i[tid] = oi;
            }
        }
        __syncthreads();
    }
    float maxv = best_v[0];
    int argmax = best_i[0];
    float temp = temperature[b];
    if (!(temp > 0.0f)) {
        if (tid == 0) out[b] = (unsigned)(argmax == 0x7fffffff ? 0 : argmax);
        return;
    }
    float inv_t = 1.0f / temp;
    float mine = 0.0f;
    for (int i = lo; i < hi; i++) {
        float p = expf((row[i] - maxv) * inv_t);
        row[i] = p;
        mine += p;
    }
    float total = ordered_sum(mine, partial);
    float keep = fminf(fmaxf(top_p[b], 0.0f), 1.0f) * total;
    // Largest threshold whose kept mass still reaches `keep` (probabilities are in (0, 1], so
    // their bit patterns order like unsigned integers).
    unsigned lo_t = 0u, hi_t = 0x3f800000u;  // kept mass at 0.0 is `total` >= keep
    while (lo_t < hi_t) {
        unsigned mid = lo_t + (hi_t - lo_t + 1) / 2;
        float th = __uint_as_float(mid);
        float part = 0.0f;
        for (int i = lo; i < hi; i++) part += row[i] >= th ? row[i] : 0.0f;
        float mass = ordered_sum(part, partial);
        if (mass >= keep) lo_t = mid; else hi_t = mid - 1;
    }
    float th = __uint_as_float(lo_t);
    float part = 0.0f;
    for (int i = lo; i < hi; i++) part += row[i] >= th ? row[i] : 0.0f;
    __syncthreads();
    partial[tid] = part;
    __syncthreads();
    if (tid == 0) {
        float kept = 0.0f;
        for (int i = 0; i < SAMPLE_THREADS; i++) kept += partial[i];
        float target = uniform[b] * kept;
        int pick = -1, last = -1;
        for (int t = 0; t < SAMPLE_THREADS && pick < 0; t++) {
            if (partial[t] <= 0.0f) continue;
            int clo = min(t * chunk, vocab), chi = min(clo + chunk, vocab);
            if (target >= partial[t]) {
                target -= partial[t];
                for (int i = chi - 1; i >= clo; i--)
                    if (row[i] >= th) { last = i; break; }
                continue;
            }
            for (int i = clo; i < chi; i++) {
                if (row[i] < th) continue;
                last = i;
                if (target < row[i]) { pick = i; break; }
                target -= row[i];
            }
        }
        out[b] = (unsigned)(pick >= 0 ? pick : (last >= 0 ? last : argmax));
    }
}
