// vaqf kernel library: cycle counters for the C-simulation (never seen by synthesis).
//
// With VAQF_COUNT_CYCLES defined (vaqf csim and `make csim` define it; the HLS scripts never do), every
// kernel adds, after each pipelined loop it runs, the cycles that loop takes at its declared II plus its
// pipeline depth (the fill), with VAQF_LOOP(trips, ii, depth). The top marks which layer runs with
// VAQF_LAYER(i); the testbench writes the counts of the first sample. A DATAFLOW region whose processes
// overlap row by row records each process's per-row cycles with VAQF_ROW(stage, cycles) between
// VAQF_REGION_BEGIN() and VAQF_REGION_END(stages): the region's cycles are those of a row pipeline,
// finish[s][r] = max(finish[s][r-1], finish[s-1][r]) + t[s][r], as FIFOs of at least two rows allow.
// The C-simulation runs the processes one after another, so the counts are recorded, not timed.
#ifndef VAQF_CYCLES_H
#define VAQF_CYCLES_H

#ifdef VAQF_COUNT_CYCLES
#include <cstdio>
#include <vector>

namespace vaqf {
namespace cycles {

const int MAX_LAYERS = 4096;
const int MAX_STAGES = 8;

struct state {
    long long layer[MAX_LAYERS + 1];  // slot 0: the top's own loops (I/O copies); slot i + 1: layer i
    int current;
    bool region;
    std::vector<long long> rows[MAX_STAGES];
    long long region_extra;
};

inline state& get() {
    static state s = {{0}, 0, false, {}, 0};
    return s;
}

inline void add(long long n) {
    state& s = get();
    if (s.region) s.region_extra += n;
    else s.layer[s.current] += n;
}

inline void reset() {
    state& s = get();
    for (int i = 0; i <= MAX_LAYERS; i++) s.layer[i] = 0;
    s.current = 0;
}

inline void begin_layer(int index) { get().current = index + 1; }

inline void end_layer() { get().current = 0; }

// one pipelined loop: trips iterations at initiation interval ii, plus the pipeline depth once
inline void loop(long long trips, long long ii, long long depth) {
    if (trips > 0) add(trips * ii + depth);
}

inline void region_begin() {
    state& s = get();
    for (int k = 0; k < MAX_STAGES; k++) s.rows[k].clear();
    s.region_extra = 0;
    s.region = true;
}

inline void row(int stage, long long c) { get().rows[stage].push_back(c); }

inline void region_end(int stages) {
    state& s = get();
    s.region = false;
    size_t n = 0;
    for (int k = 0; k < stages; k++) n = s.rows[k].size() > n ? s.rows[k].size() : n;
    std::vector<long long> prev(n, 0), cur(n, 0);
    for (int k = 0; k < stages; k++) {
        long long done = 0;
        for (size_t r = 0; r < n; r++) {
            long long t = r < s.rows[k].size() ? s.rows[k][r] : 0;
            long long ready = prev[r] > done ? prev[r] : done;
            cur[r] = ready + t;
            done = cur[r];
        }
        prev.swap(cur);
    }
    add((n ? prev[n - 1] : 0) + s.region_extra);
}

inline bool dump(const char* path, int layers) {
    std::FILE* f = std::fopen(path, "w");
    if (!f) return false;
    const state& s = get();
    std::fprintf(f, "io %lld\n", s.layer[0]);
    for (int i = 0; i < layers && i < MAX_LAYERS; i++) std::fprintf(f, "%d %lld\n", i, s.layer[i + 1]);
    std::fclose(f);
    return true;
}

}  // namespace cycles
}  // namespace vaqf

#define VAQF_LOOP(trips, ii, depth) vaqf::cycles::loop((trips), (ii), (depth))
#define VAQF_CYCLES(n) vaqf::cycles::add(n)
#define VAQF_LAYER(i) vaqf::cycles::begin_layer(i)
#define VAQF_LAYER_END() vaqf::cycles::end_layer()
#define VAQF_REGION_BEGIN() vaqf::cycles::region_begin()
#define VAQF_ROW(stage, c) vaqf::cycles::row((stage), (c))
#define VAQF_REGION_END(stages) vaqf::cycles::region_end(stages)
#else
#define VAQF_LOOP(trips, ii, depth) ((void)0)
#define VAQF_CYCLES(n) ((void)0)
#define VAQF_LAYER(i) ((void)0)
#define VAQF_LAYER_END() ((void)0)
#define VAQF_REGION_BEGIN() ((void)0)
#define VAQF_ROW(stage, c) ((void)0)
#define VAQF_REGION_END(stages) ((void)0)
#endif

#endif
