// Kaldi-style log-mel filterbank ("fbank") for many frames of many sessions in one launch.
// The CPU twin is `antiphon_kernels::fbank::Fbank` (same window, mel matrix and steps); the
// transform here is a direct DFT accumulated in double precision, one output bin per thread.
//
// Grid: one block per frame; `frame_start[f]` is the first sample of frame f in `samples`
// (frames of different sessions simply point into different parts of the buffer).

#define FB_MAX_FRAME 1024

extern "C" __global__ void fbank_frames(const float* samples, const long long* frame_start,
                                        const float* window, const float* mel_weights,  // [bins][half]
                                        const double* twiddle_cos, const double* twiddle_sin,  // [padded]
                                        float* out, int frame_len, int padded, int num_bins,
                                        float preemphasis, int remove_dc) {
    __shared__ float x[FB_MAX_FRAME];
    __shared__ float power[FB_MAX_FRAME / 2 + 1];
    __shared__ double red[32];
    int f = blockIdx.x, tid = threadIdx.x;
    const float* src = samples + frame_start[f];
    double s = 0.0;
    for (int i = tid; i < frame_len; i += blockDim.x) {
        x[i] = src[i];
        s += (double)src[i];
    }
    // Block sum of the samples (DC offset), in double like the CPU twin.
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((tid & 31) == 0) red[tid >> 5] = s;
    __syncthreads();
    if (tid == 0) {
        double t = 0.0;
        for (int w = 0; w < (int)((blockDim.x + 31) >> 5); w++) t += red[w];
        red[0] = t;
    }
    __syncthreads();
    float mean = remove_dc ? (float)(red[0] / frame_len) : 0.0f;
    // Pre-emphasis reads the unmodified neighbour, so compute into registers first.
    float y[FB_MAX_FRAME / 128];
    int k = 0;
    for (int i = tid; i < frame_len; i += blockDim.x, k++) {
        float cur = x[i] - mean;
        float prev = i > 0 ? x[i - 1] - mean : cur;
        y[k] = (cur - preemphasis * prev) * window[i];
    }
    __syncthreads();
    k = 0;
    for (int i = tid; i < frame_len; i += blockDim.x, k++) x[i] = y[k];
    __syncthreads();
    int half = padded / 2;
    for (int b = tid; b <= half; b += blockDim.x) {
        double re = 0.0, im = 0.0;
        int idx = 0;  // (b * n) mod padded, stepped
        for (int n = 0; n < frame_len; n++) {
            re += (double)x[n] * twiddle_cos[idx];
            im -= (double)x[n] * twiddle_sin[idx];
            idx += b;
            if (idx >= padded) idx -= padded;
        }
        power[b] = (float)(re * re + im * im);
    }
    __syncthreads();
    for (int m = tid; m < num_bins; m += blockDim.x) {
        const float* w = mel_weights + (unsigned long long)m * half;
        float e = 0.0f;
        for (int b = 0; b < half; b++) e += w[b] * power[b];
        out[(unsigned long long)f * num_bins + m] = logf(fmaxf(e, 1.1920929e-7f));
    }
}
