// vaqf dataflow kernels: cycle counters for the C-simulation (never seen by synthesis).
//
// With VAQF_COUNT_CYCLES defined, every stage records, for each frame of a call, the trips its pipelined
// loop ran for that frame (VAQF_DF_FRAME: one II=1 iteration a cycle) and, once per call, its pipeline depth
// (VAQF_DF_FILL, plus the AXI read latency for the input reader). The C-simulation runs the DATAFLOW
// processes one after another, so the overlap is computed, not timed: with a FIFO of one frame on every
// edge a stage runs frame f as soon as it finished frame f-1 and its producer finished frame f,
//   finish[s][f] = max(finish[s][f-1], finish[s-1][f]) + t[s][f]   (t of frame 0 includes the fill),
// and the dump gives per stage its frame-0 trips, the steady-state interval (the last frame's finish minus
// the one before) and the first frame's latency.
#ifndef VAQF_DATAFLOW_COUNTERS_H
#define VAQF_DATAFLOW_COUNTERS_H

#ifdef VAQF_COUNT_CYCLES
#include <cstdio>
#include <vector>

namespace vaqf {
namespace df {

struct counters {
    std::vector<std::vector<long long> > trips;  // [stage][frame]
    std::vector<long long> fill;                 // [stage]
};

inline counters& get() {
    static counters c;
    return c;
}

inline void reset() {
    get().trips.clear();
    get().fill.clear();
}

inline void frame(int stage, long long trips) {
    counters& c = get();
    if ((int)c.trips.size() <= stage) c.trips.resize(stage + 1);
    c.trips[stage].push_back(trips);
}

inline void fill(int stage, long long cycles) {
    counters& c = get();
    if ((int)c.fill.size() <= stage) c.fill.resize(stage + 1, 0);
    c.fill[stage] += cycles;
}

inline bool dump(const char* path, int stages) {
    counters& c = get();
    c.trips.resize(stages);
    c.fill.resize(stages, 0);
    size_t frames = 0;
    for (int s = 0; s < stages; s++) frames = c.trips[s].size() > frames ? c.trips[s].size() : frames;
    std::vector<long long> prev(frames, 0), cur(frames, 0);
    for (int s = 0; s < stages; s++) {
        long long done = 0;
        for (size_t f = 0; f < frames; f++) {
            long long t = f < c.trips[s].size() ? c.trips[s][f] : 0;
            if (f == 0) t += c.fill[s];
            long long ready = prev[f] > done ? prev[f] : done;
            cur[f] = ready + t;
            done = cur[f];
        }
        prev.swap(cur);
    }
    std::FILE* out = std::fopen(path, "w");
    if (!out) return false;
    std::fprintf(out, "io 0\n");
    for (int s = 0; s < stages; s++)
        std::fprintf(out, "%d %lld\n", s, c.trips[s].empty() ? 0LL : c.trips[s][0]);
    for (int s = 0; s < stages; s++) std::fprintf(out, "fill_%d %lld\n", s, c.fill[s]);
    std::fprintf(out, "frames %lld\n", (long long)frames);
    long long interval = frames >= 2 ? prev[frames - 1] - prev[frames - 2] : (frames ? prev[0] : 0);
    std::fprintf(out, "interval %lld\n", interval);
    std::fprintf(out, "latency %lld\n", frames ? prev[0] : 0LL);
    std::fclose(out);
    return true;
}

}  // namespace df
}  // namespace vaqf

#define VAQF_DF_FRAME(stage, trips) vaqf::df::frame((stage), (trips))
#define VAQF_DF_FILL(stage, cycles) vaqf::df::fill((stage), (cycles))
#else
#define VAQF_DF_FRAME(stage, trips) ((void)0)
#define VAQF_DF_FILL(stage, cycles) ((void)0)
#endif

#endif
